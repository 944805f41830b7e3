//! The audit trail through the gateway: every staff action on events, rewards and accounts
//! is recorded with its actor, target and changed fields, and account actions with the reason
//! the administrator gave; only AUDITOR and ADMIN read it; nothing can change it; and a
//! refused action leaves no record. Auditors read accounts too, and change none. (Dead-letter
//! replays and discards are checked in `messaging.rs`, beside the dead letters themselves.)

use auth_claims::{IDENTITY_HEADER, Role};
use e2e_tests::saga::{Direct, active_event, reward};
use e2e_tests::{Api, Reply, User};
use reqwest::Method;
use serde_json::{Value, json};

/// The records `query` selects, read by `reader`.
async fn records(api: &Api, reader: &User, query: &str) -> Vec<Value> {
    let page = api
        .get(&format!("/audit?{query}"), Some(&reader.access))
        .await;
    assert_eq!(page.status, 200, "{page:?}");
    page.body["items"].as_array().unwrap().clone()
}

fn actions(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect()
}

/// The change of `field` in `record`: (before, after).
fn change<'a>(record: &'a Value, field: &str) -> (&'a Value, &'a Value) {
    let change = record["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == field)
        .unwrap_or_else(|| panic!("no change of {field} in {record}"));
    (&change["before"], &change["after"])
}

#[tokio::test]
async fn operators_changes_to_events_and_rewards_are_recorded_with_their_fields() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let event = active_event(
        &api,
        &operator,
        json!({ "metric": "LEVEL", "op": ">=", "value": 1 }),
    )
    .await;
    let renamed = api
        .call(
            Method::PATCH,
            &format!("/events/{event}"),
            Some(&operator.access),
            Some(json!({ "name": "Renamed" })),
        )
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    let reward = reward(
        &api,
        &operator,
        &event,
        json!({ "type": "POINT", "amount": 5, "totalStock": 10 }),
    )
    .await;
    let restocked = api
        .call(
            Method::PATCH,
            &format!("/rewards/{reward}"),
            Some(&operator.access),
            Some(json!({ "totalStock": 20 })),
        )
        .await;
    assert_eq!(restocked.status, 200, "{restocked:?}");

    let mine = records(&api, &auditor, &format!("actor={}", operator.id)).await;
    assert_eq!(
        actions(&mine),
        [
            "reward.update",
            "reward.create",
            "event.update",
            "event.set_status",
            "event.create"
        ]
    );
    assert!(
        mine.iter()
            .all(|r| r["actor"] == operator.id.as_str() && r["service"] == "event")
    );
    assert!(mine.iter().all(|r| r["requestId"].is_string()));
    assert_eq!(change(&mine[0], "totalStock"), (&json!(10), &json!(20)));
    assert_eq!(mine[1]["targetId"], reward.as_str());
    assert_eq!(change(&mine[2], "name").1, &json!("Renamed"));
    assert_eq!(
        change(&mine[3], "status"),
        (&json!("DRAFT"), &json!("ACTIVE"))
    );
    let (before, after) = change(&mine[4], "condition");
    assert!(before.is_null() && after["metric"] == "LEVEL", "{after}");

    // Pages follow the cursor, newest first, with no record twice.
    let first = api
        .get(
            &format!("/audit?actor={}&size=2", operator.id),
            Some(&auditor.access),
        )
        .await;
    let next = first.body["next"].as_str().unwrap();
    let second = records(
        &api,
        &auditor,
        &format!("actor={}&size=2&before={next}", operator.id),
    )
    .await;
    assert_eq!(actions(&second), ["event.update", "event.set_status"]);

    // A refused change leaves no record.
    let refused = api
        .post(
            &format!("/events/{event}/status"),
            Some(&operator.access),
            json!({ "status": "DRAFT" }),
        )
        .await;
    assert_eq!(refused.status, 409, "{refused:?}");
    let after = records(&api, &auditor, &format!("target={event}")).await;
    assert_eq!(
        actions(&after),
        ["event.update", "event.set_status", "event.create"]
    );
}

#[tokio::test]
async fn an_administrator_s_account_actions_are_recorded_against_the_account() {
    let api = Api::gateway();
    let admin = api.admin().await;
    let player = api.new_user().await;
    let user = |suffix: &str| format!("/users/{}{suffix}", player.id);
    let roles = api
        .call(
            Method::PUT,
            &user("/roles"),
            Some(&admin.access),
            Some(json!({ "roles": ["USER", "AUDITOR"] })),
        )
        .await;
    assert_eq!(roles.status, 200, "{roles:?}");
    for action in ["/ban", "/unban"] {
        let reply = api
            .call(Method::POST, &user(action), Some(&admin.access), None)
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let deleted = api
        .call(Method::DELETE, &user(""), Some(&admin.access), None)
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");

    let trail = records(&api, &admin, &format!("target={}", player.id)).await;
    assert_eq!(
        actions(&trail),
        ["user.delete", "user.unban", "user.ban", "user.set_roles"]
    );
    assert!(
        trail
            .iter()
            .all(|r| r["actor"] == admin.id.as_str() && r["service"] == "auth")
    );
    assert_eq!(
        change(&trail[0], "status"),
        (&json!("ACTIVE"), &json!("DELETED"))
    );
    assert_eq!(
        change(&trail[2], "status"),
        (&json!("ACTIVE"), &json!("BANNED"))
    );
    assert_eq!(
        change(&trail[3], "roles"),
        (&json!(["USER"]), &json!(["USER", "AUDITOR"]))
    );
    // No reason given, none recorded.
    assert!(trail.iter().all(|r| r.get("reason").is_none()), "{trail:?}");
}

/// `DELETE /users/{id}` with `reason` in its query, as the administrator.
async fn delete_with_reason(api: &Api, admin: &User, user: &str, reason: &str) -> Reply {
    let encoded = reqwest::Url::parse_with_params("http://query/", [("reason", reason)]).unwrap();
    let path = format!("/users/{user}?{}", encoded.query().unwrap());
    api.call(Method::DELETE, &path, Some(&admin.access), None)
        .await
}

fn refused_for_its_reason(reply: &Reply) -> bool {
    (reply.status, reply.code()) == (422, "validation_failed")
        && reply.body["errors"][0]["field"] == "reason"
}

#[tokio::test]
async fn the_reason_an_administrator_gives_is_kept_in_the_account_action_s_record() {
    let api = Api::gateway();
    let admin = api.admin().await;
    let player = api.new_user().await;
    let user = |suffix: &str| format!("/users/{}{suffix}", player.id);
    let roles = json!({ "roles": ["USER", "OPERATOR"], "reason": "runs the winter event" });
    let reply = api
        .call(
            Method::PUT,
            &user("/roles"),
            Some(&admin.access),
            Some(roles),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    for (action, reason) in [
        ("/ban", "  cheating in ranked  "),
        ("/unban", "appeal upheld"),
    ] {
        let body = json!({ "reason": reason });
        let reply = api
            .call(Method::POST, &user(action), Some(&admin.access), Some(body))
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let deleted = delete_with_reason(&api, &admin, &player.id, "asked to leave").await;
    assert_eq!(deleted.status, 204, "{deleted:?}");

    let trail = records(&api, &admin, &format!("target={}", player.id)).await;
    let reasons: Vec<(&str, &Value)> = trail
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), &r["reason"]))
        .collect();
    assert_eq!(
        reasons,
        [
            ("user.delete", &json!("asked to leave")),
            ("user.unban", &json!("appeal upheld")),
            ("user.ban", &json!("cheating in ranked")),
            ("user.set_roles", &json!("runs the winter event")),
        ]
    );
}

#[tokio::test]
async fn a_reason_that_is_blank_too_long_or_has_control_characters_is_refused_and_nothing_changes()
{
    let api = Api::gateway();
    let admin = api.admin().await;
    let player = api.new_user().await;
    let user = |suffix: &str| format!("/users/{}{suffix}", player.id);
    let too_long = "x".repeat(501);
    for reason in ["   ", too_long.as_str(), "line\nbreak"] {
        let ban = api
            .call(
                Method::POST,
                &user("/ban"),
                Some(&admin.access),
                Some(json!({ "reason": reason })),
            )
            .await;
        assert!(refused_for_its_reason(&ban), "{ban:?}");
        let roles = json!({ "roles": ["AUDITOR"], "reason": reason });
        let roles = api
            .call(
                Method::PUT,
                &user("/roles"),
                Some(&admin.access),
                Some(roles),
            )
            .await;
        assert!(refused_for_its_reason(&roles), "{roles:?}");
        let deleted = delete_with_reason(&api, &admin, &player.id, reason).await;
        assert!(refused_for_its_reason(&deleted), "{deleted:?}");
    }
    let empty = delete_with_reason(&api, &admin, &player.id, "").await;
    assert!(refused_for_its_reason(&empty), "{empty:?}");

    let account = api.get(&user(""), Some(&admin.access)).await;
    assert_eq!(
        (&account.body["status"], &account.body["roles"]),
        (&json!("ACTIVE"), &json!(["USER"]))
    );
    assert!(
        records(&api, &admin, &format!("target={}", player.id))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn auditors_find_and_read_accounts_but_change_none_and_operators_read_none() {
    let api = Api::gateway();
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let player = api.new_user().await;
    let found = api
        .get(
            &format!("/users?email={}", player.email),
            Some(&auditor.access),
        )
        .await;
    assert_eq!(found.status, 200, "{found:?}");
    assert_eq!(found.body["items"][0]["id"], player.id.as_str());
    let account = api
        .get(&format!("/users/{}", player.id), Some(&auditor.access))
        .await;
    assert_eq!(account.body["email"], player.email.as_str(), "{account:?}");

    let user = |suffix: &str| format!("/users/{}{suffix}", player.id);
    let changes = [
        (Method::POST, user("/ban"), None),
        (Method::POST, user("/unban"), None),
        (
            Method::PUT,
            user("/roles"),
            Some(json!({ "roles": ["ADMIN"] })),
        ),
        (Method::DELETE, user(""), None),
    ];
    for (method, path, body) in changes {
        let reply = api
            .call(method.clone(), &path, Some(&auditor.access), body)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    for path in ["/users?size=1".to_owned(), user("")] {
        let reply = api.get(&path, Some(&operator.access)).await;
        assert_eq!((reply.status, reply.code()), (403, "forbidden"), "{path}");
    }
}

/// The auth service checks the roles itself, whatever reaches it.
#[tokio::test]
async fn the_auth_service_lets_auditors_read_accounts_and_refuses_operators() {
    let direct = Direct::at(test_support::service_url("auth"));
    let player = Api::gateway().new_user().await;
    let read = |roles: &'static [Role]| {
        let request = direct
            .api
            .request(Method::GET, &format!("/users/{}", player.id))
            .header(IDENTITY_HEADER, direct.assertion_as("staff", roles));
        direct.api.send(request)
    };
    assert_eq!(read(&[Role::Auditor]).await.status, 200);
    assert_eq!(read(&[Role::Operator]).await.status, 403);
    let ban = direct
        .api
        .request(Method::POST, &format!("/users/{}/ban", player.id))
        .header(
            IDENTITY_HEADER,
            direct.assertion_as("staff", &[Role::Auditor]),
        );
    assert_eq!(direct.api.send(ban).await.status, 403);
}

#[tokio::test]
async fn only_auditors_and_administrators_read_the_trail_and_nobody_changes_it() {
    let api = Api::gateway();
    let answers = [
        (None, 401),
        (Some(api.new_user().await), 403),
        (Some(api.user_with_roles(&["OPERATOR"]).await), 403),
        (Some(api.user_with_roles(&["AUDITOR"]).await), 200),
        (Some(api.admin().await), 200),
    ];
    for (user, status) in &answers {
        let token = user.as_ref().map(|u| u.access.as_str());
        assert_eq!(api.get("/audit", token).await.status, *status);
    }
    let admin = answers[4].0.as_ref().unwrap();
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let reply = api
            .call(
                method.clone(),
                "/audit",
                Some(&admin.access),
                Some(json!({})),
            )
            .await;
        assert_eq!(reply.status, 405, "{method} /audit");
    }
    let bad = api.get("/audit?size=0", Some(&admin.access)).await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_query"));
}
