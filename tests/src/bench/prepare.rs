//! Data for the scenarios, made through the public API: an operator (made by the instance's
//! administrator), an ACTIVE event asking only for LEVEL >= 1 with an unlimited POINT reward,
//! and players who met that condition through LEVEL_UP activity on Kafka.
//!
//! Accounts are argon2-bound to create (and to log in), so the player pool is created once
//! and cached in the instance directory (`<instance>/bench/players.json`): the cache lives
//! and dies with the instance's data (`./dev reset` wipes both), so it never names accounts
//! that do not exist. Each run signs the players in with `POST /auth/refresh` through the
//! gateway (no argon2, not rate limited) and stores the rotated refresh tokens back; a
//! player whose refresh fails (expired, revoked) logs in again.
//!
//! Register and login go to the auth service directly rather than through the gateway: the
//! gateway limits them per client (30/min on a `./dev up` instance), which is right for the
//! public but would make a pool of thousands take hours. Same API, same handlers.

use crate::saga::{Game, level_event};
use crate::{Api, User};
use contracts::ActivityType;
use futures::StreamExt;
use mongo_kit::Mongo;
use mongo_kit::mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench horse battery staple";

/// What every scenario shares for one run.
pub struct Setup {
    pub gateway: Api,
    pub auth: Api,
    pub operator: User,
    pub event: String,
    pub reward: String,
    pub event_db: mongo_kit::mongodb::Database,
    /// The instance's processes, sampled around each scenario's load (not its preparation,
    /// whose argon2 work would swamp the figures).
    pub processes: Vec<super::procs::Process>,
}

impl Setup {
    pub fn sample(&self) -> super::procs::Sampler {
        super::procs::Sampler::start(self.processes.clone())
    }

    pub async fn new(processes: Vec<super::procs::Process>) -> anyhow::Result<Self> {
        let gateway = Api::gateway();
        let auth = Api::new(test_support::service_url("auth"));
        let operator = operator(&gateway, &auth).await?;
        let (event, reward) =
            level_event(&gateway, &operator, json!({ "type": "POINT", "amount": 1 })).await;
        let config = service_config::MongoConfig::new(
            &test_support::required(test_support::MONGO_URI),
            "event_db",
        );
        let mongo = Mongo::connect(&config, "bench").await?;
        Ok(Self {
            event_db: mongo.client().database("event_db"),
            gateway,
            auth,
            operator,
            event,
            reward,
            processes,
        })
    }

    /// Sends LEVEL_UP to 1 for each player and waits until the event service folded every
    /// one into progress for this run's event (counted in `event_db.progress`).
    pub async fn level_up(&self, players: &[String], deadline: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let game = Game::connect();
        let now = DateTime::now().timestamp_millis();
        futures::stream::iter(players)
            .for_each_concurrent(512, |p| {
                game.send(p, ActivityType::LevelUp, now, |e| e.new_level = Some(1))
            })
            .await;
        let progress = self.event_db.collection::<Document>("progress");
        let ids: Vec<&String> = players.iter().collect();
        loop {
            let met = progress
                .count_documents(doc! { "eventId": &self.event, "userId": { "$in": &ids } })
                .await?;
            if met as usize >= players.len() {
                eprintln!(
                    "[prepare] {} players met the condition through Kafka in {:.1?}",
                    players.len(),
                    started.elapsed()
                );
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < deadline,
                "only {met} of {} players reached the condition within {deadline:?}",
                players.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A fresh OPERATOR for this run, made by the administrator.
async fn operator(gateway: &Api, auth: &Api) -> anyhow::Result<User> {
    let admin_email = test_support::required(test_support::ADMIN_EMAIL);
    let admin_password = test_support::required(test_support::ADMIN_PASSWORD);
    let admin = auth.login(&admin_email, &admin_password).await;
    anyhow::ensure!(admin.status == 200, "admin login: {admin:?}");
    let email = format!("{}@example.com", test_support::unique("bench-operator"));
    let registered = auth.register(&email, PASSWORD).await;
    anyhow::ensure!(
        registered.status == 201,
        "operator registration: {registered:?}"
    );
    let id = text(&registered.body["id"]);
    let set = gateway
        .call(
            reqwest::Method::PUT,
            &format!("/users/{id}/roles"),
            Some(&text(&admin.body["accessToken"])),
            Some(json!({ "roles": ["OPERATOR"] })),
        )
        .await;
    anyhow::ensure!(set.status == 200, "granting OPERATOR: {set:?}");
    // Signed in after the grant, so the token carries the role.
    let tokens = auth.login(&email, PASSWORD).await;
    anyhow::ensure!(tokens.status == 200, "operator login: {tokens:?}");
    Ok(User {
        id,
        email,
        password: PASSWORD.to_owned(),
        access: text(&tokens.body["accessToken"]),
        refresh: text(&tokens.body["refreshToken"]),
    })
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn cache_file() -> PathBuf {
    let config = PathBuf::from(test_support::required(test_support::CONFIG_DIR));
    config
        .parent()
        .unwrap_or(&config)
        .join("bench")
        .join("players.json")
}

fn load_cache() -> Vec<User> {
    let Ok(bytes) = std::fs::read(cache_file()) else {
        return Vec::new();
    };
    let players: Vec<Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    players
        .iter()
        .map(|p| User {
            id: text(&p["id"]),
            email: text(&p["email"]),
            password: text(&p["password"]),
            access: String::new(),
            refresh: text(&p["refresh"]),
        })
        .filter(|u| !u.id.is_empty())
        .collect()
}

fn save_cache(players: &[User]) -> anyhow::Result<()> {
    let file = cache_file();
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let rows: Vec<Value> = players
        .iter()
        .map(|u| json!({ "id": u.id, "email": u.email, "password": u.password, "refresh": u.refresh }))
        .collect();
    // Written whole then renamed: an interrupted run never leaves half a cache.
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&rows)?)?;
    std::fs::rename(tmp, file)?;
    Ok(())
}

/// `count` signed-in players: the cached pool, grown by registration when too small.
pub async fn players(setup: &Setup, count: usize) -> anyhow::Result<Vec<User>> {
    let mut pool = load_cache();
    if pool.len() < count {
        let missing = count - pool.len();
        let started = Instant::now();
        eprintln!("[prepare] registering {missing} players (cached for later runs)");
        let made: Vec<anyhow::Result<User>> = futures::stream::iter(0..missing)
            .map(|_| register(&setup.auth))
            .buffer_unordered(16)
            .collect()
            .await;
        for user in made {
            pool.push(user?);
        }
        eprintln!(
            "[prepare] registered {missing} in {:.1?}",
            started.elapsed()
        );
        save_cache(&pool)?;
    }
    let started = Instant::now();
    let mut signed: Vec<User> = futures::stream::iter(pool.drain(..count))
        .map(|user| sign_in(setup, user))
        .buffer_unordered(16)
        .collect::<Vec<anyhow::Result<User>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    // The rotated refresh tokens replace the spent ones, or the next run would be refused.
    let rest = std::mem::take(&mut pool);
    let mut all = signed.clone();
    all.extend(rest);
    save_cache(&all)?;
    eprintln!(
        "[prepare] {count} players signed in in {:.1?}",
        started.elapsed()
    );
    signed.truncate(count);
    Ok(signed)
}

async fn register(auth: &Api) -> anyhow::Result<User> {
    let email = format!("{}@example.com", test_support::unique("bench-player"));
    let registered = auth.register(&email, PASSWORD).await;
    anyhow::ensure!(registered.status == 201, "registration: {registered:?}");
    Ok(User {
        id: text(&registered.body["id"]),
        email,
        password: PASSWORD.to_owned(),
        access: String::new(),
        refresh: String::new(),
    })
}

/// Refresh when a token is cached (cheap), else log in (argon2).
async fn sign_in(setup: &Setup, user: User) -> anyhow::Result<User> {
    if !user.refresh.is_empty() {
        let reply = setup
            .gateway
            .post(
                "/auth/refresh",
                None,
                json!({ "refreshToken": user.refresh }),
            )
            .await;
        if reply.status == 200 {
            return Ok(User {
                access: text(&reply.body["accessToken"]),
                refresh: text(&reply.body["refreshToken"]),
                ..user
            });
        }
    }
    let reply = setup.auth.login(&user.email, &user.password).await;
    anyhow::ensure!(
        reply.status == 200,
        "login of cached player {}: {reply:?} (remove {} if the instance was reset)",
        user.email,
        cache_file().display()
    );
    Ok(User {
        access: text(&reply.body["accessToken"]),
        refresh: text(&reply.body["refreshToken"]),
        ..user
    })
}
