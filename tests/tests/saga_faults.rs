//! The saga when processes die or stall, on the real servers.
//!
//! - Extra event and reward-fulfillment processes join the instance's own (same databases,
//!   same consumer groups) and are killed with SIGKILL mid-run, then started again: the
//!   survivors take over their partitions and the outbox lease, and every claim still ends
//!   in exactly one grant.
//! - The instance's fulfillment (every instance of it, in a cluster) is frozen with SIGSTOP
//!   (and thawed with SIGCONT, also if a test fails), which holds claims PENDING for as
//!   long as a test needs: long enough for re-commands and the give-up compensation, or for
//!   a ban to arrive mid-claim.
//!
//! The tests in this file share those processes, so they run one at a time.

use e2e_tests::saga::*;
use e2e_tests::{Api, ServiceProcess};
use serde_json::{Value, json};
use std::time::Duration;
use supervise::manifest::{Kind, Manifest};
use supervise::process::{self, Sig};
use test_support::{poll_until, unique};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The pids of every instance of `service` the dev tool started (two in a cluster).
fn instance_pids(service: &str) -> Vec<u32> {
    let config = std::path::PathBuf::from(test_support::required(test_support::CONFIG_DIR));
    let manifest = Manifest::load(config.parent().unwrap()).unwrap();
    let pids: Vec<u32> = manifest
        .of_kind(&Kind::Service(service.to_owned()))
        .map(|m| {
            m.pid()
                .unwrap_or_else(|| panic!("{} is not running", m.name))
        })
        .collect();
    assert!(!pids.is_empty(), "no {service} in the manifest");
    pids
}

/// Every instance of a service of the instance, stopped (SIGSTOP), and continued when this
/// is dropped.
struct Frozen(Vec<u32>);

impl Frozen {
    fn service(name: &str) -> Self {
        let pids = instance_pids(name);
        for &pid in &pids {
            process::signal(pid, Sig::SIGSTOP).unwrap();
        }
        Self(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = process::signal(pid, Sig::SIGCONT);
        }
    }
}

/// Stops a test's own service so it leaves its consumer groups at once (a SIGKILLed member
/// holds its partitions until the group's session timeout).
fn stop_cleanly(process: ServiceProcess) {
    process.signal("TERM");
    let (status, _) = process.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "clean exit");
}

async fn claim_status(direct: &Direct, user: &str, claim: &str) -> Value {
    direct.get(user, &format!("/claims/{claim}")).await.body
}

#[tokio::test]
async fn claims_survive_event_and_fulfillment_processes_killed_mid_run() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let (event, reward) = level_event(
        &api,
        &operator,
        json!({ "type": "POINT", "amount": 2, "totalStock": 1000 }),
    )
    .await;
    let players: Vec<String> = (0..120).map(|_| unique("survivor")).collect();
    levelled_up(&players).await;
    let stable = Direct::to_event_service();
    stable.wait_met(&players, &event).await;

    let mut extra_fulfillment = Some(
        ServiceProcess::start("reward-fulfillment", &[])
            .ready()
            .await,
    );
    let mut extra_event = Some(ServiceProcess::start("event", &[]).ready().await);
    let mut claims: Vec<(String, String)> = Vec::new();
    for (n, player) in players.iter().enumerate() {
        match n {
            30 => extra_fulfillment.take().unwrap().signal("KILL"),
            50 => extra_event.take().unwrap().signal("KILL"),
            80 => {
                extra_fulfillment = Some(
                    ServiceProcess::start("reward-fulfillment", &[])
                        .ready()
                        .await,
                );
                extra_event = Some(ServiceProcess::start("event", &[]).ready().await);
            }
            _ => {}
        }
        // Every other claim goes to the extra event service while it lives. A claim whose
        // answer was lost with a killed process is sent again with the same key.
        let key = unique("key");
        let first = match (&extra_event, n % 2) {
            (Some(extra), 0) => {
                Direct::at(extra.url(""))
                    .try_claim(player, &event, &reward, &key)
                    .await
            }
            _ => None,
        };
        let reply = match first {
            Some(reply) => reply,
            None => stable.claim(player, &event, &reward, &key).await,
        };
        assert!(matches!(reply.status, 200 | 202), "{reply:?}");
        claims.push((
            player.clone(),
            reply.body["id"].as_str().unwrap().to_owned(),
        ));
    }

    for (player, claim) in &claims {
        let settled = poll_until(Duration::from_secs(90), "every claim to settle", || async {
            let body = claim_status(&stable, player, claim).await;
            (body["status"] != "PENDING").then_some(body)
        })
        .await;
        assert_eq!(settled["status"], "SUCCEEDED", "{settled}");
        assert_eq!(
            granted(&api, &auditor, player).await,
            (Some(1), Some(2)),
            "granted exactly once"
        );
    }
    let state = reward_state(&api, &operator.access, &event, &reward).await;
    assert_eq!(
        state["reserved"].as_i64(),
        Some(players.len() as i64),
        "no stock lost or oversold"
    );
    stop_cleanly(extra_event.take().unwrap());
    stop_cleanly(extra_fulfillment.take().unwrap());
}

#[tokio::test]
async fn an_unanswered_claim_is_resent_then_compensated_and_its_expired_commands_grant_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let (event, reward) = level_event(
        &api,
        &operator,
        json!({ "type": "POINT", "amount": 9, "totalStock": 5 }),
    )
    .await;
    let player = unique("patient");
    levelled_up(std::slice::from_ref(&player)).await;
    let stable = Direct::to_event_service();
    stable.wait_met(std::slice::from_ref(&player), &event).await;
    // An event service that waits only a second for each result, three times.
    let impatient = ServiceProcess::start(
        "event",
        &[
            ("REWARDS_SAGA__RESULT_TIMEOUT_MS", "1000".into()),
            ("REWARDS_SAGA__MAX_ATTEMPTS", "3".into()),
            ("REWARDS_SAGA__CHECK_INTERVAL_MS", "100".into()),
        ],
    )
    .ready()
    .await;

    let frozen = Frozen::service("reward-fulfillment");
    let accepted = Direct::at(impatient.url(""))
        .claim(&player, &event, &reward, &unique("key"))
        .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let id = accepted.body["id"].as_str().unwrap().to_owned();
    let failed = poll_until(
        Duration::from_secs(30),
        "the claim to be given up on",
        || async {
            let body = claim_status(&stable, &player, &id).await;
            (body["status"] == "FAILED").then_some(body)
        },
    )
    .await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(failed["failureReason"], "no grant result after 3 attempts");
    let taken = steps(&failed);
    assert_eq!(
        taken.iter().filter(|s| *s == "COMMAND_RESENT").count(),
        2,
        "{failed}"
    );
    assert_eq!(taken.last().unwrap(), "COMPENSATED");
    let state = reward_state(&api, &operator.access, &event, &reward).await;
    assert_eq!(state["reserved"].as_i64(), Some(0), "stock released");

    // Fulfillment comes back to three copies of a command whose claim was given up on: the
    // command has expired, so each is answered FAILED and nothing is granted.
    drop(frozen);
    let results = poll_until(Duration::from_secs(60), "fulfillment's answers", || async {
        let answers = results_for(&id).await;
        (answers.len() == 3).then_some(answers)
    })
    .await;
    for answer in &results {
        assert_eq!(answer["outcome"], "FAILED", "{answer}");
        assert!(
            answer["reason"].as_str().unwrap().contains("expired"),
            "{answer}"
        );
    }
    assert_eq!(granted(&api, &auditor, &player).await, (Some(0), Some(0)));
    assert_eq!(
        claim_status(&stable, &player, &id).await["status"],
        "FAILED"
    );
    let state = reward_state(&api, &operator.access, &event, &reward).await;
    assert_eq!(
        state["reserved"].as_i64(),
        Some(0),
        "the stock stays released"
    );
    stop_cleanly(impatient);
}

/// Every GrantResultEvent for `claim` on reward.grant-results, decoded.
async fn results_for(claim: &str) -> Vec<Value> {
    let registry = messaging::SchemaRegistry::new(&test_support::registry()).unwrap();
    let mut found = Vec::new();
    messaging::inspect::inspect(
        &test_support::kafka(),
        &registry,
        contracts::topics::GRANT_RESULTS,
        &messaging::inspect::InspectOptions::default(),
        |message| {
            if message["value"]["claimId"] == claim {
                found.push(message["value"].clone());
            }
        },
    )
    .await
    .unwrap();
    found
}

#[tokio::test]
async fn a_ban_while_a_claim_is_pending_stops_new_claims_and_the_pending_one_settles() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let admin = api.admin().await;
    let player = api.new_user().await;
    let (event, reward) = level_event(
        &api,
        &operator,
        json!({ "type": "POINT", "amount": 4, "perUserLimit": 5 }),
    )
    .await;
    play_to_level(&api, &player, &event, 1).await;
    let direct = Direct::to_event_service();

    let frozen = Frozen::service("reward-fulfillment");
    let pending = claim_once(&api, &player.access, &event, &reward).await;
    assert_eq!(pending.status, 202, "{pending:?}");
    let id = pending.body["id"].as_str().unwrap().to_owned();
    let banned = api
        .post(
            &format!("/users/{}/ban", player.id),
            Some(&admin.access),
            json!({}),
        )
        .await;
    assert_eq!(banned.status, 200, "{banned:?}");
    poll_until(
        Duration::from_secs(10),
        "the gateway to refuse the banned player",
        || async {
            let reply = claim_once(&api, &player.access, &event, &reward).await;
            matches!(reply.status, 401 | 403).then_some(())
        },
    )
    .await;
    poll_until(
        Duration::from_secs(30),
        "the event service to learn of the ban",
        || async {
            let reply = direct
                .claim(&player.id, &event, &reward, &unique("key"))
                .await;
            (reply.status == 403 && reply.code() == "user_not_allowed").then_some(())
        },
    )
    .await;
    let still = claim_status(&direct, &player.id, &id).await;
    assert_eq!(still["status"], "PENDING", "fulfillment is frozen: {still}");

    drop(frozen);
    let settled = poll_until(
        Duration::from_secs(60),
        "the pending claim to settle",
        || async {
            let body = claim_status(&direct, &player.id, &id).await;
            (body["status"] != "PENDING").then_some(body)
        },
    )
    .await;
    assert_eq!(settled["status"], "SUCCEEDED", "{settled}");
}
