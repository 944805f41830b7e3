//! Progress folded from `game.user-activity` counts each activity message id once, whichever
//! way the progress consumer remembers it: counter increments through the inbox, logins and
//! levels because folding them again changes nothing (they keep no inbox record).

use contracts::ActivityType;
use e2e_tests::saga::*;
use mongo_kit::mongodb::bson::DateTime;
use serde_json::json;
use std::time::Duration;
use test_support::{poll_until, unique};

#[tokio::test]
async fn a_game_server_re_sending_the_same_message_ids_counts_each_once() {
    let api = e2e_tests::Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let event = active_event(
        &api,
        &operator,
        json!({ "all": [
            { "metric": "QUEST_COMPLETED", "op": ">=", "value": 5, "filter": { "questId": "dragon" } },
            { "metric": "ITEM_ACQUIRED", "op": ">=", "value": 50 },
            { "metric": "LOGIN_DAYS", "op": ">=", "value": 5 },
            { "metric": "LEVEL", "op": ">=", "value": 100 },
        ]}),
    )
    .await;
    let player = unique("player");
    let game = Game::connect();
    let now = DateTime::now().timestamp_millis();
    let quest = uuid::Uuid::now_v7();
    let item = uuid::Uuid::now_v7();
    let login = uuid::Uuid::now_v7();
    let direct = Direct::to_event_service();
    let leaves = |body: &serde_json::Value| -> Vec<i64> {
        body["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["current"].as_i64().unwrap())
            .collect()
    };
    // Each message goes out twice with the same id, as a game server retrying after a
    // timeout does. The second round waits until the first is folded, so the copies are in
    // a later consumer batch than their originals (within one batch the runner drops them
    // before the handler sees them, which would prove nothing here).
    for round in 0..2 {
        if round == 1 {
            poll_until(
                Duration::from_secs(30),
                "the first round to be folded",
                || async {
                    let reply = direct
                        .get(&player, &format!("/events/{event}/progress/me"))
                        .await;
                    (leaves(&reply.body)[..3] == [1, 3, 1]).then_some(())
                },
            )
            .await;
        }
        game.send(&player, ActivityType::QuestCompleted, now, |e| {
            e.envelope.message_id = quest;
            e.quest_id = Some("dragon".into());
        })
        .await;
        game.send(&player, ActivityType::ItemAcquired, now, |e| {
            e.envelope.message_id = item;
            e.item_code = Some("gem".into());
            e.item_count = Some(3);
        })
        .await;
        game.send(&player, ActivityType::Login, now - DAY_MS, |e| {
            e.envelope.message_id = login;
        })
        .await;
        // A quest nothing counts: its fold changes nothing, so it is not remembered; its
        // re-send must change nothing either.
        game.send(&player, ActivityType::QuestCompleted, now, |e| {
            e.quest_id = Some("goblin".into());
        })
        .await;
    }
    // A fresh fact after the re-sends, on the same partition (same key): once it shows, every
    // message before it was folded.
    game.send(&player, ActivityType::LevelUp, now, |e| {
        e.new_level = Some(7)
    })
    .await;
    let progress = poll_until(
        Duration::from_secs(30),
        "the level-up after the re-sends to be folded",
        || async {
            let reply = direct
                .get(&player, &format!("/events/{event}/progress/me"))
                .await;
            (reply.body["leaves"][3]["current"] == 7).then_some(reply.body)
        },
    )
    .await;
    assert_eq!(
        leaves(&progress),
        [1, 3, 1, 7],
        "one dragon quest, 3 gems, one login day, level 7: {progress}"
    );
}
