//! Progress folded from `game.user-activity` counts each activity message id once, whichever
//! way the progress consumer remembers it: counter increments through the inbox, logins and
//! levels because folding them again changes nothing (they keep no inbox record). Staff read
//! any player's progress in every event that is not DRAFT.

use auth_claims::{IDENTITY_HEADER, Role};
use contracts::ActivityType;
use e2e_tests::saga::*;
use e2e_tests::{Api, User};
use mongo_kit::mongodb::bson::DateTime;
use reqwest::Method;
use serde_json::{Value, json};
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

/// `GET /progress/{userId}` as `staff`, the newest 100 events: each event's progress by id, in
/// the order given.
async fn progress_of(api: &Api, staff: &User, player: &str) -> Vec<(String, Value)> {
    let reply = api
        .get(&format!("/progress/{player}?size=100"), Some(&staff.access))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["eventId"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

#[tokio::test]
async fn staff_read_a_player_s_progress_in_every_event_that_is_not_a_draft_newest_first() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let player = api.new_user().await;
    let (played, _) = level_event(&api, &operator, json!({ "type": "POINT", "amount": 1 })).await;
    let later = active_event(
        &api,
        &operator,
        json!({ "metric": "LOGIN_DAYS", "op": ">=", "value": 3 }),
    )
    .await;
    let draft = api
        .post(
            "/events",
            Some(&operator.access),
            json!({
                "name": unique("draft"),
                "startsAt": "2026-12-01T00:00:00Z",
                "endsAt": "2026-12-31T00:00:00Z",
                "condition": { "metric": "LEVEL", "op": ">=", "value": 1 },
            }),
        )
        .await;
    assert_eq!(draft.status, 201, "{draft:?}");
    play_to_level(&api, &player, &played, 3).await;

    let progress = progress_of(&api, &operator, &player.id).await;
    let position = |event: &str| progress.iter().position(|(id, _)| id == event);
    let (Some(played_at), Some(later_at)) = (position(&played), position(&later)) else {
        panic!("both active events are listed: {progress:?}");
    };
    assert!(later_at < played_at, "newest first: {progress:?}");
    assert_eq!(position(draft.body["id"].as_str().unwrap()), None);
    let mine = &progress[played_at].1;
    assert_eq!(
        (&mine["userId"], &mine["met"], &mine["leaves"][0]["current"]),
        (&json!(player.id), &json!(true), &json!(3)),
        "{mine}"
    );
    let idle = &progress[later_at].1;
    assert_eq!(
        (&idle["met"], &idle["leaves"][0]["current"]),
        (&json!(false), &json!(0))
    );

    // Someone with no activity (or no account) has nothing yet, as `/progress/me` says.
    let nobody = progress_of(&api, &auditor, &unique("nobody")).await;
    let played_by_nobody = nobody.iter().find(|(id, _)| *id == played).unwrap();
    assert_eq!(played_by_nobody.1["met"], false);
    assert_eq!(played_by_nobody.1["leaves"][0]["current"], 0);

    let refused = api
        .get(&format!("/progress/{}", player.id), Some(&player.access))
        .await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"));
}

/// The event service checks the roles itself, whatever reaches it.
#[tokio::test]
async fn the_event_service_shows_a_player_s_progress_to_staff_only() {
    let direct = Direct::to_event_service();
    let read = |roles: &'static [Role]| {
        let request = direct
            .api
            .request(Method::GET, "/progress/somebody")
            .header(IDENTITY_HEADER, direct.assertion_as("staff", roles));
        direct.api.send(request)
    };
    for (roles, status) in [
        (&[Role::User][..], 403),
        (&[Role::Operator], 200),
        (&[Role::Auditor], 200),
        (&[Role::Admin], 200),
    ] {
        assert_eq!(read(roles).await.status, status, "{roles:?}");
    }
}
