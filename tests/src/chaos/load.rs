//! The mixed load of a chaos run, as real clients would make it:
//!
//! - players claiming rewards through the gateway, each claim with its own idempotency key
//!   and sent again with that key after a 5xx or a lost answer (now and then a key is
//!   reused on purpose, which must bring back the same claim);
//! - a game server producing QUEST_COMPLETED activity with known message ids, some of them
//!   sent twice on purpose, and a few poison records that can only be dead-lettered;
//! - probes: one claim a second by players of their own, followed until it succeeds, which
//!   tells when the claim path works again after a fault;
//! - bans by the administrator while all this goes on.

use super::journal::{ClaimEnd, ClaimMade, Journal};
use super::setup::{Player, Reward, Setup};
use crate::Api;
use contracts::{ActivityType, Envelope, UserActivityEvent};
use messaging::{SchemaRegistry, kafka};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const PROBLEM_JSON: &str = "application/problem+json";

/// Attempts of one claim before the client gives up on it.
const CLAIM_ATTEMPTS: u32 = 6;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("a plain HTTP client builds")
}

/// An answer as the load sees it.
struct Answer {
    status: u16,
    code: String,
    retry_after: Option<u64>,
    body: Value,
}

async fn answer_of(journal: &Journal, response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let problem = header("content-type").is_some_and(|t| t == PROBLEM_JSON);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["code"].as_str().unwrap_or_default().to_owned();
    journal.answer(status, &code, retry_after.is_some(), problem);
    Answer {
        status,
        code,
        retry_after,
        body,
    }
}

/// Claims at about `rate` per second from `workers` concurrent clients until `stop`.
pub async fn claims(
    setup: Arc<Setup>,
    journal: Arc<Journal>,
    rate: f64,
    workers: usize,
    seed: u64,
    stop: CancellationToken,
) {
    let pause = Duration::from_secs_f64(workers as f64 / rate.max(0.1));
    let tasks = (0..workers).map(|n| {
        let (setup, journal, stop) = (setup.clone(), journal.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(n as u64));
            let mut made: Vec<(usize, usize, String)> = Vec::new();
            let http = client();
            while !stop.is_cancelled() {
                claim_one(&setup, &journal, &http, &mut rng, &mut made).await;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
        })
    });
    futures::future::join_all(tasks).await;
}

async fn claim_one(
    setup: &Setup,
    journal: &Journal,
    http: &reqwest::Client,
    rng: &mut StdRng,
    made: &mut Vec<(usize, usize, String)>,
) {
    // Now and then the same claim again, with its key: the platform must answer with the
    // claim it already has.
    let (player, reward, key) = if !made.is_empty() && rng.random_bool(0.05) {
        made[rng.random_range(0..made.len())].clone()
    } else {
        let player = rng.random_range(0..setup.players.len());
        let reward = pick_reward(&setup.rewards, rng);
        let key = uuid::Uuid::new_v4().to_string();
        made.push((player, reward, key.clone()));
        (player, reward, key)
    };
    let (player, reward) = (&setup.players[player], &setup.rewards[reward]);
    if journal.is_banned(&player.id) {
        return;
    }
    let end = claim(setup, journal, http, player, reward, &key).await;
    journal.claim(ClaimMade {
        user: player.id.clone(),
        reward: reward.id.clone(),
        key,
        end,
    });
}

fn pick_reward(rewards: &[Reward], rng: &mut StdRng) -> usize {
    let total: u32 = rewards.iter().map(|r| r.weight).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (i, reward) in rewards.iter().enumerate() {
        if roll < reward.weight {
            return i;
        }
        roll -= reward.weight;
    }
    0
}

/// One claim as a careful client makes it: the same key again after a 5xx, a 429 or no
/// answer (waiting what Retry-After says, or backing off), a fresh sign-in after
/// `token_expired`.
pub async fn claim(
    setup: &Setup,
    journal: &Journal,
    http: &reqwest::Client,
    player: &Player,
    reward: &Reward,
    key: &str,
) -> ClaimEnd {
    let url = format!(
        "{}/events/{}/rewards/{}/claims",
        test_support::service_url("gateway"),
        setup.event,
        reward.id
    );
    let mut last = String::from("no answer");
    for attempt in 0..CLAIM_ATTEMPTS {
        let sent = http
            .post(&url)
            .bearer_auth(player.token())
            .header("idempotency-key", key)
            .json(&json!({}))
            .send()
            .await;
        let backoff = Duration::from_millis(500 << attempt.min(3));
        let answer = match sent {
            Ok(response) => answer_of(journal, response).await,
            Err(_) => {
                journal.no_answer();
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        match answer.status {
            200 | 202 => {
                let claim_id = answer.body["id"].as_str().unwrap_or_default().to_owned();
                return ClaimEnd::Accepted { claim_id };
            }
            401 if answer.code == "token_expired" => player.sign_in_again(&setup.api).await,
            429 | 500..=599 => {
                last = format!("{} {}", answer.status, answer.code);
                let wait = answer
                    .retry_after
                    .map_or(backoff, |s| Duration::from_secs(s.min(5)));
                tokio::time::sleep(wait).await;
            }
            _ => return ClaimEnd::Refused { code: answer.code },
        }
    }
    ClaimEnd::Failed { code: last }
}

/// One probe a second until `stop`, each followed until it succeeds (or for a minute).
pub async fn probes(setup: Arc<Setup>, journal: Arc<Journal>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut turn = 0usize;
    let mut running = Vec::new();
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (setup, journal) = (setup.clone(), journal.clone());
        turn += 1;
        running.push(tokio::spawn(async move {
            probe(&setup, &journal, turn % setup.probers.len()).await
        }));
    }
    futures::future::join_all(running).await;
}

async fn probe(setup: &Setup, journal: &Journal, prober: usize) {
    let http = client();
    let player = &setup.probers[prober];
    let index = journal.probe_sent();
    let key = uuid::Uuid::new_v4().to_string();
    let end = claim(setup, journal, &http, player, &setup.probe_reward, &key).await;
    journal.claim(ClaimMade {
        user: player.id.clone(),
        reward: setup.probe_reward.id.clone(),
        key,
        end: end.clone(),
    });
    let ClaimEnd::Accepted { claim_id } = end else {
        return;
    };
    let url = format!("{}/claims/{claim_id}", test_support::service_url("gateway"));
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < give_up {
        if let Ok(response) = http.get(&url).bearer_auth(player.token()).send().await
            && let Ok(body) = response.json::<Value>().await
        {
            match body["status"].as_str() {
                Some("SUCCEEDED") => return journal.probe_succeeded(index),
                Some("FAILED") => return,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Activity as a game server sends it: Avro through the registry, keyed by player, each
/// record with its envelope's message id in a header.
pub struct Game {
    registry: SchemaRegistry,
    producer: FutureProducer,
    /// Sends in flight (each retries until a broker takes it).
    in_flight: Arc<Semaphore>,
}

/// A record the broker acknowledged, kept to be sent again as a deliberate duplicate.
#[derive(Clone)]
struct Sent {
    user: String,
    message_id: String,
    payload: Arc<Vec<u8>>,
}

impl Game {
    pub fn connect() -> anyhow::Result<Self> {
        let mut config = test_support::kafka();
        config.client_id = "chaos-game".into();
        Ok(Self {
            registry: SchemaRegistry::new(&test_support::registry())?,
            producer: kafka::producer(&config)?,
            in_flight: Arc::new(Semaphore::new(4_000)),
        })
    }

    /// A QUEST_COMPLETED of `user`, encoded (the registry is asked until it answers).
    async fn quest(&self, user: &str, stop: &CancellationToken) -> Option<Sent> {
        let event = UserActivityEvent {
            envelope: Envelope::new("chaos-game"),
            user_id: user.to_owned(),
            activity_type: ActivityType::QuestCompleted,
            quest_id: Some("chaos-quest".into()),
            item_code: None,
            item_count: None,
            new_level: None,
        };
        loop {
            match self
                .registry
                .encode(contracts::topics::USER_ACTIVITY, &event)
                .await
            {
                Ok(payload) => {
                    return Some(Sent {
                        user: user.to_owned(),
                        message_id: event.envelope.message_id.to_string(),
                        payload: Arc::new(payload),
                    });
                }
                Err(_) if !stop.is_cancelled() => tokio::time::sleep(Duration::from_secs(1)).await,
                Err(_) => return None,
            }
        }
    }

    /// Sends until a broker acknowledges it (the producer's own retries first, then ours).
    async fn deliver(&self, sent: &Sent) {
        let headers = OwnedHeaders::new().insert(Header {
            key: messaging::outbox::MESSAGE_ID_HEADER,
            value: Some(sent.message_id.as_str()),
        });
        loop {
            let record = FutureRecord::to(contracts::topics::USER_ACTIVITY)
                .key(&sent.user)
                .payload(sent.payload.as_slice())
                .headers(headers.clone());
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// One quest for each of `users`, delivered, so that each meets the event's condition.
    pub async fn prime(&self, journal: &Journal, users: &[String]) {
        let never = CancellationToken::new();
        let sends = users.iter().map(|user| async {
            if let Some(sent) = self.quest(user, &never).await {
                self.deliver(&sent).await;
                journal.delivered(&sent.user, &sent.message_id);
            }
        });
        futures::future::join_all(sends).await;
    }

    /// Records that can never be decoded: each must end up as one dead letter.
    pub async fn poison(&self, journal: &Journal, count: usize) {
        for _ in 0..count {
            let key = format!("chaos-poison-{}", uuid::Uuid::new_v4().simple());
            let sent = Sent {
                user: key.clone(),
                message_id: uuid::Uuid::now_v7().to_string(),
                payload: Arc::new(b"chaos poison: these bytes are not Avro".to_vec()),
            };
            self.deliver(&sent).await;
            journal.poison(key);
        }
    }

    /// About `rate` quests a second for random players until `stop`; 5% of the sends repeat
    /// an earlier record byte for byte.
    pub async fn run(
        self: Arc<Self>,
        users: Arc<Vec<String>>,
        journal: Arc<Journal>,
        rate: f64,
        seed: u64,
        stop: CancellationToken,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut recent: Vec<Sent> = Vec::new();
        let per_tick = (rate / 100.0).max(0.01);
        let mut owed = 0.0;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut tasks = tokio::task::JoinSet::new();
        while !stop.is_cancelled() {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            owed += per_tick;
            while owed >= 1.0 {
                owed -= 1.0;
                let duplicate = !recent.is_empty() && rng.random_bool(0.05);
                let sent = if duplicate {
                    recent[rng.random_range(0..recent.len())].clone()
                } else {
                    let user = &users[rng.random_range(0..users.len())];
                    let Some(sent) = self.quest(user, &stop).await else {
                        break;
                    };
                    if recent.len() < 1_000 {
                        recent.push(sent.clone());
                    } else {
                        let slot = rng.random_range(0..recent.len());
                        recent[slot] = sent.clone();
                    }
                    sent
                };
                let permit = self.in_flight.clone().acquire_owned().await;
                let (game, journal) = (self.clone(), journal.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    game.deliver(&sent).await;
                    if duplicate {
                        journal.duplicate_sent();
                    } else {
                        journal.delivered(&sent.user, &sent.message_id);
                    }
                });
            }
        }
        // Every record begun is delivered before the run counts what arrived.
        while tasks.join_next().await.is_some() {}
    }
}

/// At each of `at` (seconds into the load), bans `per_round` players who are not banned yet.
pub async fn bans(
    setup: Arc<Setup>,
    journal: Arc<Journal>,
    at: Vec<f64>,
    per_round: usize,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xba5e);
    let api = Api::gateway();
    let started = tokio::time::Instant::now();
    for when in at {
        let due = started + Duration::from_secs_f64(when);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        for _ in 0..per_round {
            let player = &setup.players[rng.random_range(0..setup.players.len())];
            if journal.is_banned(&player.id) {
                continue;
            }
            // Marked first: no new claim of theirs is started once the ban is on its way.
            journal.ban(&player.id);
            ban(&api, &setup.admin_token, &player.id).await;
        }
    }
}

/// The administrator's ban, sent again until it is answered.
async fn ban(api: &Api, admin_token: &str, user: &str) {
    let request = || {
        api.request(reqwest::Method::POST, &format!("/users/{user}/ban"))
            .bearer_auth(admin_token)
            .timeout(Duration::from_secs(15))
    };
    for _ in 0..20 {
        match request().send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) if response.status().is_client_error() => {
                eprintln!("[chaos] ban of {user} refused: {}", response.status());
                return;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    eprintln!("[chaos] ban of {user} never went through");
}
