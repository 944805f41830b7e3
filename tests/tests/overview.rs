//! `GET /overview` through the gateway: staff see every instance's readiness, claim figures
//! that follow the claims made, a chart that fills between looks, the consumer groups' lag
//! and the dead letters waiting; players are refused.

use e2e_tests::saga::{claim_once, level_event, play_to_level, settled};
use e2e_tests::{Api, User};
use serde_json::{Value, json};
use std::time::Duration;
use test_support::{poll_until, unique};

async fn overview(api: &Api, staff: &User) -> Value {
    let reply = api.get("/overview", Some(&staff.access)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

fn count_of(list: &Value, service: &str) -> u64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == service)
        .map_or(0, |c| c["count"].as_u64().unwrap())
}

#[tokio::test]
async fn staff_see_readiness_claims_lag_and_dead_letters_and_players_do_not() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let admin = api.admin().await;
    let player = api.new_user().await;
    let refused = api.get("/overview", Some(&player.access)).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.code(), "forbidden");

    let before = overview(&api, &auditor).await;
    let services: Vec<&str> = before["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["ready"], true, "{i}");
            i["service"].as_str().unwrap()
        })
        .collect();
    assert_eq!(services, ["auth", "event", "reward-fulfillment"]);

    let (event, reward) =
        level_event(&api, &operator, json!({ "type": "POINT", "amount": 1 })).await;
    play_to_level(&api, &player, &event, 1).await;
    let claimed = claim_once(&api, &player.access, &event, &reward).await;
    let claim = claimed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        settled(&api, &player.access, &claim).await["status"],
        "SUCCEEDED"
    );
    let succeeded_before = before["claims"]["succeeded"].as_u64().unwrap();
    // Looks are shared for a second, so the next one may not have the claim yet.
    let after = poll_until(Duration::from_secs(10), "the claim counted", || async {
        let now = overview(&api, &operator).await;
        let counted = now["claims"]["succeeded"].as_u64()? > succeeded_before;
        let charted = !now["claimsPerMinute"].as_array()?.is_empty();
        (counted && charted).then_some(now)
    })
    .await;

    // The activity's group reports its lag; the poison waits as a dead letter.
    let letters_before = count_of(&after["deadLettersPending"], "event");
    e2e_tests::dead_lettered(&api, &admin, &unique("overview-poison")).await;
    poll_until(
        Duration::from_secs(30),
        "the lag and the dead letter",
        || async {
            let now = overview(&api, &admin).await;
            let groups: Vec<&str> = now["consumerLag"]
                .as_array()?
                .iter()
                .filter_map(|g| g["group"].as_str())
                .collect();
            let waiting = count_of(&now["deadLettersPending"], "event");
            (groups.contains(&"event.progress") && waiting > letters_before).then_some(())
        },
    )
    .await;
}
