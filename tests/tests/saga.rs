//! The product end to end on the real servers: activity produced to Kafka becomes progress, a
//! claim through the gateway reserves stock and commands the grant, reward-fulfillment grants
//! it into its ledger, and the result settles the claim, or compensates it.
//!
//! The races (one player hammering a reward, 200 players for 50 units) call the event
//! service directly with identity assertions signed by the instance's secret, as the gateway
//! would: registering hundreds of accounts would measure argon2, not the saga.

use contracts::ActivityType;
use e2e_tests::saga::*;
use e2e_tests::{Api, Reply};
use mongo_kit::mongodb::bson::DateTime;
use reqwest::Method;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use test_support::{poll_until, unique};

#[tokio::test]
async fn a_player_meets_the_condition_through_activity_claims_and_the_reward_reaches_the_inventory()
{
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let player = api.new_user().await;
    let event = active_event(
        &api,
        &operator,
        json!({ "all": [
            { "metric": "QUEST_COMPLETED", "op": ">=", "value": 2, "filter": { "questId": "dragon" } },
            { "metric": "LOGIN_DAYS", "op": ">=", "value": 2 },
        ]}),
    )
    .await;
    let reward = reward(
        &api,
        &operator,
        &event,
        json!({ "type": "POINT", "amount": 250, "totalStock": 10 }),
    )
    .await;

    // Before playing: refused with the progress so far.
    let early = claim_once(&api, &player.access, &event, &reward).await;
    assert_eq!(
        (early.status, early.code()),
        (409, "condition_not_met"),
        "{early:?}"
    );
    assert_eq!(early.body["progress"]["leaves"][0]["current"], 0);
    assert_eq!(early.body["progress"]["met"], false);

    let game = Game::connect();
    let now = DateTime::now().timestamp_millis();
    game.send(&player.id, ActivityType::Login, now - DAY_MS, |_| {})
        .await;
    game.send(&player.id, ActivityType::Login, now, |_| {})
        .await;
    for quest in ["dragon", "dragon", "goblin"] {
        game.send(&player.id, ActivityType::QuestCompleted, now, |e| {
            e.quest_id = Some(quest.into())
        })
        .await;
    }
    let progress = poll_until(
        Duration::from_secs(30),
        "progress to meet the condition",
        || async {
            let reply = api
                .get(
                    &format!("/events/{event}/progress/me"),
                    Some(&player.access),
                )
                .await;
            (reply.body["met"] == true).then_some(reply.body)
        },
    )
    .await;
    assert_eq!(
        progress["leaves"][0]["current"], 2,
        "only the dragon quests: {progress}"
    );
    assert_eq!(
        progress["leaves"][1]["current"], 2,
        "two login days: {progress}"
    );

    let key = unique("key");
    let accepted = claim(&api, &player.access, &event, &reward, &key, json!({})).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    assert_eq!(accepted.body["status"], "PENDING");
    let id = accepted.body["id"].as_str().unwrap().to_owned();

    let done = settled(&api, &player.access, &id).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(
        steps(&done),
        [
            "REQUESTED",
            "STOCK_RESERVED",
            "COMMAND_PUBLISHED",
            "RESULT_RECEIVED",
            "COMPLETED"
        ],
        "{done}"
    );
    let inventory = api.get("/inventory/me", Some(&player.access)).await;
    assert_eq!(inventory.status, 200, "{inventory:?}");
    assert_eq!(inventory.body["points"], 250);
    let state = reward_state(&api, &player.access, &event, &reward).await;
    assert_eq!(
        (state["reserved"].as_i64(), state["remaining"].as_i64()),
        (Some(1), Some(9))
    );
    let mine = api
        .get(&format!("/claims/me?eventId={event}"), Some(&player.access))
        .await;
    assert_eq!(mine.body["total"], 1);
    assert_eq!(mine.body["items"][0]["status"], "SUCCEEDED");
    // Someone else's claim is not there for another player to read.
    let other = api.new_user().await;
    let peek = api.get(&format!("/claims/{id}"), Some(&other.access)).await;
    assert_eq!((peek.status, peek.code()), (404, "claim_not_found"));
}

#[tokio::test]
async fn a_failed_grant_fails_the_claim_and_puts_the_stock_back() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let player = api.new_user().await;
    let event = active_event(
        &api,
        &operator,
        json!({ "metric": "LEVEL", "op": ">=", "value": 3 }),
    )
    .await;
    // Fulfillment is configured to fail every grant of this item.
    let reward = reward(
        &api,
        &operator,
        &event,
        json!({ "type": "ITEM", "itemCode": "cursed-sword", "quantity": 1, "totalStock": 3 }),
    )
    .await;
    play_to_level(&api, &player, &event, 3).await;

    let first = claim_once(&api, &player.access, &event, &reward).await;
    assert_eq!(first.status, 202, "{first:?}");
    let failed = settled(&api, &player.access, first.body["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(
        failed["failureReason"]
            .as_str()
            .unwrap()
            .contains("cursed-sword"),
        "{failed}"
    );
    assert_eq!(steps(&failed).last().unwrap(), "COMPENSATED");
    let state = reward_state(&api, &player.access, &event, &reward).await;
    assert_eq!(
        (state["reserved"].as_i64(), state["remaining"].as_i64()),
        (Some(0), Some(3))
    );
    let inventory = api.get("/inventory/me", Some(&player.access)).await;
    assert_eq!(inventory.body["items"], json!([]), "{inventory:?}");
    // A failed claim does not count against the per-user limit of 1.
    let again = claim_once(&api, &player.access, &event, &reward).await;
    assert_eq!(again.status, 202, "{again:?}");
}

#[tokio::test]
async fn idempotency_keys_and_refusals_each_answer_with_their_own_code() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let player = api.new_user().await;
    let (event, points) =
        level_event(&api, &operator, json!({ "type": "POINT", "amount": 5 })).await;
    let none_left = reward(
        &api,
        &operator,
        &event,
        json!({ "type": "COUPON", "couponTemplate": "WINTER", "totalStock": 0 }),
    )
    .await;
    play_to_level(&api, &player, &event, 1).await;

    let missing = api
        .send(
            api.request(
                Method::POST,
                &format!("/events/{event}/rewards/{points}/claims"),
            )
            .bearer_auth(&player.access),
        )
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (400, "idempotency_key_missing")
    );
    assert_eq!(missing.content_type(), "application/problem+json");

    let key = unique("key");
    let body = json!({ "note": "first" });
    let first = claim(&api, &player.access, &event, &points, &key, body.clone()).await;
    assert_eq!(first.status, 202, "{first:?}");
    let repeat = claim(&api, &player.access, &event, &points, &key, body).await;
    assert_eq!(repeat.status, 200, "{repeat:?}");
    assert_eq!(repeat.body["id"], first.body["id"]);
    let changed = claim(
        &api,
        &player.access,
        &event,
        &points,
        &key,
        json!({ "note": "other" }),
    )
    .await;
    assert_eq!(
        (changed.status, changed.code()),
        (409, "idempotency_key_reused")
    );
    let second = claim_once(&api, &player.access, &event, &points).await;
    assert_eq!((second.status, second.code()), (409, "claim_limit_reached"));
    let empty = claim_once(&api, &player.access, &event, &none_left).await;
    assert_eq!((empty.status, empty.code()), (409, "out_of_stock"));

    let paused = set_status(&api, &operator, &event, "INACTIVE").await;
    assert_eq!(paused.status, 200);
    let inactive = claim_once(&api, &player.access, &event, &none_left).await;
    assert_eq!(
        (inactive.status, inactive.code()),
        (409, "event_not_active")
    );
    // The condition of an inactive event may change; an ended event is final.
    let ended = set_status(&api, &operator, &event, "ENDED").await;
    assert_eq!(ended.status, 200);
    let revived = set_status(&api, &operator, &event, "ACTIVE").await;
    assert_eq!(
        (revived.status, revived.code()),
        (409, "invalid_transition")
    );
    // Players do not manage events.
    let denied = api
        .post(
            &format!("/events/{event}/rewards"),
            Some(&player.access),
            json!({ "type": "POINT", "amount": 1 }),
        )
        .await;
    assert_eq!(denied.status, 403);
}

#[tokio::test]
async fn a_hundred_concurrent_claims_by_one_player_grant_once() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let (event, reward) = level_event(
        &api,
        &operator,
        json!({ "type": "POINT", "amount": 7, "totalStock": 100 }),
    )
    .await;
    let direct = Direct::to_event_service();
    let player = unique("player");
    levelled_up(std::slice::from_ref(&player)).await;
    direct.wait_met(std::slice::from_ref(&player), &event).await;

    // Half share one key, half bring their own.
    let shared = unique("key");
    let keys: Vec<String> = (0..100)
        .map(|n| {
            if n % 2 == 0 {
                shared.clone()
            } else {
                unique("key")
            }
        })
        .collect();
    let replies = futures::future::join_all(
        keys.iter()
            .map(|k| direct.claim(&player, &event, &reward, k)),
    )
    .await;
    let accepted: Vec<&Reply> = replies.iter().filter(|r| r.status == 202).collect();
    assert_eq!(
        accepted.len(),
        1,
        "exactly one claim accepted: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let id = accepted[0].body["id"].clone();
    for reply in &replies {
        match reply.status {
            202 => {}
            200 => assert_eq!(
                reply.body["id"], id,
                "a repeated key answers with the original claim"
            ),
            409 => assert_eq!(reply.code(), "claim_limit_reached", "{reply:?}"),
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    let claim = poll_until(Duration::from_secs(30), "the claim to settle", || async {
        let reply = direct
            .get(&player, &format!("/claims/{}", id.as_str().unwrap()))
            .await;
        (reply.body["status"] != "PENDING").then_some(reply.body)
    })
    .await;
    assert_eq!(claim["status"], "SUCCEEDED");
    assert_eq!(granted(&api, &auditor, &player).await, (Some(1), Some(7)));
}

#[tokio::test]
async fn two_hundred_players_racing_for_fifty_units_get_exactly_fifty() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let (event, reward) = level_event(
        &api,
        &operator,
        json!({ "type": "COUPON", "couponTemplate": "RACE", "totalStock": 50 }),
    )
    .await;
    let direct = Direct::to_event_service();
    let players: Vec<String> = (0..200).map(|_| unique("racer")).collect();
    levelled_up(&players).await;
    direct.wait_met(&players, &event).await;

    let replies = futures::future::join_all(
        players
            .iter()
            .map(|p| direct.claim(p, &event, &reward, "race")),
    )
    .await;
    let statuses: Vec<(u16, String)> = replies
        .iter()
        .map(|r| (r.status, r.code().to_owned()))
        .collect();
    let winners: Vec<(&String, String)> = players
        .iter()
        .zip(&replies)
        .filter(|(_, r)| r.status == 202)
        .map(|(p, r)| (p, r.body["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(winners.len(), 50, "{statuses:?}");
    assert!(
        replies
            .iter()
            .all(|r| r.status == 202 || (r.status == 409 && r.code() == "out_of_stock")),
        "{statuses:?}"
    );
    let state = reward_state(&api, &operator.access, &event, &reward).await;
    assert_eq!(
        (state["reserved"].as_i64(), state["remaining"].as_i64()),
        (Some(50), Some(0))
    );

    let mut codes = HashSet::new();
    for (player, claim) in &winners {
        let settled = poll_until(
            Duration::from_secs(60),
            "every winning claim to settle",
            || async {
                let reply = direct.get(player, &format!("/claims/{claim}")).await;
                (reply.body["status"] != "PENDING").then_some(reply.body)
            },
        )
        .await;
        assert_eq!(settled["status"], "SUCCEEDED", "{settled}");
        let inventory = api
            .get(&format!("/inventory/{player}"), Some(&auditor.access))
            .await;
        let coupons = inventory.body["coupons"].as_array().unwrap();
        assert_eq!(coupons.len(), 1, "{inventory:?}");
        assert_eq!(coupons[0]["code"], settled["couponCode"]);
        codes.insert(coupons[0]["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes.len(), 50, "every coupon code unique");
    let state = reward_state(&api, &operator.access, &event, &reward).await;
    assert_eq!(
        state["reserved"].as_i64(),
        Some(50),
        "stock never goes below zero nor back up"
    );
}

#[tokio::test]
async fn operators_edit_events_and_stock_within_the_rules_and_staff_read_every_claim() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let event = active_event(
        &api,
        &operator,
        json!({ "metric": "LEVEL", "op": ">=", "value": 1 }),
    )
    .await;
    let patch = |path: String, body: serde_json::Value| {
        let (api, token) = (api.clone(), operator.access.clone());
        async move {
            api.call(Method::PATCH, &path, Some(&token), Some(body))
                .await
        }
    };

    let renamed = patch(format!("/events/{event}"), json!({ "name": "Renamed" })).await;
    assert_eq!(
        (renamed.status, renamed.body["name"].as_str()),
        (200, Some("Renamed")),
        "{renamed:?}"
    );
    let new_condition = json!({ "condition": { "metric": "LEVEL", "op": ">=", "value": 2 } });
    let refused = patch(format!("/events/{event}"), new_condition.clone()).await;
    assert_eq!((refused.status, refused.code()), (409, "event_active"));
    let paused = set_status(&api, &operator, &event, "INACTIVE").await;
    assert_eq!(paused.status, 200);
    let changed = patch(format!("/events/{event}"), new_condition).await;
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(changed.body["condition"]["value"], 2);
    let backwards = patch(
        format!("/events/{event}"),
        json!({ "endsAt": "2000-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(
        (backwards.status, backwards.code()),
        (422, "validation_failed")
    );
    api.post(
        &format!("/events/{event}/status"),
        Some(&operator.access),
        json!({ "status": "ACTIVE" }),
    )
    .await;

    // Stock: three units held by claims; it may shrink to three, not below.
    let reward = reward(
        &api,
        &operator,
        &event,
        json!({ "type": "POINT", "amount": 1, "totalStock": 10 }),
    )
    .await;
    let direct = Direct::to_event_service();
    let players: Vec<String> = (0..3).map(|_| unique("holder")).collect();
    let game = Game::connect();
    let now = DateTime::now().timestamp_millis();
    for player in &players {
        game.send(player, ActivityType::LevelUp, now, |e| {
            e.new_level = Some(2)
        })
        .await;
    }
    direct.wait_met(&players, &event).await;
    for player in &players {
        let accepted = direct.claim(player, &event, &reward, "k").await;
        assert_eq!(accepted.status, 202, "{accepted:?}");
    }
    let below = patch(format!("/rewards/{reward}"), json!({ "totalStock": 2 })).await;
    assert_eq!(
        (below.status, below.code()),
        (409, "stock_below_reserved"),
        "{below:?}"
    );
    assert_eq!(below.body["reserved"], 3);
    let exact = patch(format!("/rewards/{reward}"), json!({ "totalStock": 3 })).await;
    assert_eq!(
        (exact.status, exact.body["remaining"].as_i64()),
        (200, Some(0)),
        "{exact:?}"
    );
    let unlimited = patch(
        format!("/rewards/{reward}"),
        json!({ "totalStock": null, "perUserLimit": 2 }),
    )
    .await;
    assert_eq!(unlimited.status, 200, "{unlimited:?}");
    assert_eq!(
        (
            unlimited.body["totalStock"].clone(),
            unlimited.body["perUserLimit"].as_i64()
        ),
        (json!(null), Some(2))
    );
    let negative = patch(format!("/rewards/{reward}"), json!({ "totalStock": -1 })).await;
    assert_eq!(
        (negative.status, negative.code()),
        (422, "validation_failed")
    );

    // Staff see every player's claims, filtered.
    let listed = api
        .get(
            &format!("/claims?eventId={event}&size=100"),
            Some(&auditor.access),
        )
        .await;
    assert_eq!(
        (listed.status, listed.body["total"].as_i64()),
        (200, Some(3)),
        "{listed:?}"
    );
    let one = api
        .get(
            &format!("/claims?eventId={event}&userId={}", players[0]),
            Some(&auditor.access),
        )
        .await;
    assert_eq!(one.body["total"], 1);
    assert_eq!(one.body["items"][0]["userId"], players[0].as_str());
    let player_view = api
        .get(
            &format!("/claims?eventId={event}"),
            Some(&api.new_user().await.access),
        )
        .await;
    assert_eq!(player_view.status, 403);
}
