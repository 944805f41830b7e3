//! The OpenAPI document. Each operation is declared on an empty function (the handlers live
//! in the services, which this crate must not depend on); bodies and responses reference the
//! types of this crate, so their schemas are generated from the code.
#![allow(dead_code)]

use crate::audit::*;
use crate::auth::*;
use crate::dlq::*;
use crate::events::*;
use crate::inventory::*;
use crate::overview::*;
use crate::{Page, PageQuery, Problem};
use serde_json::{Value, json};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The public API as the gateway serves it: the operations declared below, completed by
/// [`complete`] with what the annotations cannot say.
pub fn openapi() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    complete(&mut doc);
    doc
}

/// What every operation can answer besides its own responses, the nesting limit of
/// conditions, and the rules JSON Schema can state but the derive cannot.
fn complete(doc: &mut Value) {
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for operation in item.as_object_mut().expect("path item").values_mut() {
            add_common_responses(operation);
        }
    }
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("schemas");
    split_leaves_by_metric(schemas);
    nest_conditions(schemas);
    let rewards = &mut schemas["CreateRewardRequest"];
    rewards["discriminator"] = json!({ "propertyName": "type" });
    for variant in rewards["oneOf"].as_array_mut().expect("oneOf") {
        variant["additionalProperties"] = json!(false);
    }
    // A new password comes with the current one.
    schemas["UpdateMeRequest"]["if"] = json!({
        "properties": { "password": { "type": "string" } },
        "required": ["password"],
    });
    schemas["UpdateMeRequest"]["then"] = json!({
        "properties": { "currentPassword": { "type": "string" } },
        "required": ["currentPassword"],
    });
}

/// A `problem+json` response, described by the codes it can carry.
fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": { "$ref": "#/components/schemas/Problem" }
            }
        }
    })
}

/// Adds the answers that do not depend on the operation's purpose: those of the gateway
/// (authentication, body limits, upstream failures) and of the shared request handling
/// (malformed bodies and query strings). An operation's own description of a status wins.
fn add_common_responses(operation: &mut Value) {
    let parameters = operation["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |place: &str| parameters.iter().any(|p| p["in"] == place);
    let secured = operation.get("security").is_some();
    let body = operation.get("requestBody").is_some();
    let mut common: Vec<(&str, &str)> = Vec::new();
    match (body, has("query")) {
        (true, true) => common.push((
            "400",
            "`malformed_json`, `body_unreadable`, `invalid_query`",
        )),
        (true, false) => common.push(("400", "`malformed_json`, `body_unreadable`")),
        (false, true) => common.push(("400", "`invalid_query`")),
        (false, false) => {}
    }
    if secured {
        common.push((
            "401",
            "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`",
        ));
        common.push(("403", "`forbidden`: the caller's roles do not allow this"));
    }
    if has("path") {
        common.push(("404", "The resource does not exist"));
    }
    if body {
        common.push(("408", "`body_timeout`: the body did not arrive in time"));
        common.push(("413", "`payload_too_large`"));
        common.push((
            "415",
            "`unsupported_media_type`: send `Content-Type: application/json`",
        ));
        common.push(("422", "`validation_failed`, with `errors[].field`"));
    }
    common.push((
        "502",
        "`upstream_unavailable`: the service behind the route is down",
    ));
    common.push((
        "503",
        "`database_unavailable`, `broker_unavailable`, `auth_unavailable`, `busy`, \
         `starting`: try again after `Retry-After`",
    ));
    common.push(("504", "`upstream_timeout`"));
    let responses = operation["responses"].as_object_mut().expect("responses");
    for (status, description) in common {
        responses
            .entry(status)
            .or_insert_with(|| problem(description));
    }
}

/// A leaf's `filter` may name only what its metric counts: a quest for QUEST_COMPLETED, an
/// item for ITEM_ACQUIRED and ITEM_USED, nothing for the others (each key may still be
/// present as `null`). One branch per family of metrics says so.
fn split_leaves_by_metric(schemas: &mut serde_json::Map<String, Value>) {
    let derived = schemas["Leaf"].clone();
    let code = |key: &str| schemas["LeafFilter"]["properties"][key].clone();
    let families: [(&[&str], Option<&str>); 3] = [
        (&["LOGIN_DAYS", "LOGIN_STREAK", "LEVEL"], None),
        (&["QUEST_COMPLETED"], Some("questId")),
        (&["ITEM_ACQUIRED", "ITEM_USED"], Some("itemCode")),
    ];
    let branches: Vec<Value> = families
        .iter()
        .map(|(metrics, named)| {
            let mut properties =
                json!({ "questId": { "type": "null" }, "itemCode": { "type": "null" } });
            if let Some(key) = named {
                properties[*key] = code(key);
            }
            let mut branch = derived.clone();
            branch
                .as_object_mut()
                .expect("object")
                .remove("description");
            branch["properties"]["metric"] = json!({ "type": "string", "enum": metrics });
            branch["properties"]["filter"] = json!({
                "type": ["object", "null"],
                "properties": properties,
                "additionalProperties": false,
            });
            branch
        })
        .collect();
    schemas.insert(
        "Leaf".to_owned(),
        json!({ "description": derived["description"], "oneOf": branches }),
    );
}

/// Conditions nest at most [`MAX_CONDITION_DEPTH`] levels: `Condition` is the first level,
/// `Condition2` the second, and so on; the last level holds leaves only. Each level has
/// the shape the derive gives `Condition` (`all`, `any` or a leaf).
fn nest_conditions(schemas: &mut serde_json::Map<String, Value>) {
    let derived = schemas["Condition"].clone();
    let level = |depth: usize| match depth {
        1 => "Condition".to_owned(),
        n => format!("Condition{n}"),
    };
    for depth in 1..MAX_CONDITION_DEPTH {
        let mut schema = derived.clone();
        let child = format!("#/components/schemas/{}", level(depth + 1));
        for branch in schema["oneOf"].as_array_mut().expect("oneOf") {
            let Some(properties) = branch.get_mut("properties") else {
                continue;
            };
            for key in ["all", "any"] {
                if let Some(items) = properties.get_mut(key) {
                    items["items"] = json!({ "$ref": child });
                }
            }
            branch["additionalProperties"] = json!(false);
        }
        schemas.insert(level(depth), schema);
    }
    let mut deepest = derived;
    deepest["description"] = json!("The last level of a condition: a leaf.");
    deepest["oneOf"] = json!([{ "$ref": "#/components/schemas/Leaf" }]);
    schemas.insert(level(MAX_CONDITION_DEPTH), deepest);
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Reward platform",
        description = "Players claim rewards for in-game events. Every route is served by the \
                       gateway; errors are application/problem+json with a stable `code`."
    ),
    paths(
        register, login, refresh, logout, jwks,
        get_me, update_me, delete_me,
        list_users, get_user, set_roles, ban, unban, delete_user,
        create_event, list_events, get_event, update_event, set_event_status,
        create_reward, list_rewards, update_reward, my_progress, user_progress,
        create_claim, list_claims, list_my_claims, get_claim,
        my_inventory, user_inventory,
        list_dead_letters, get_dead_letter, replay_dead_letter, replay_dead_letters, discard_dead_letter,
        fulfillment_dead_letters, fulfillment_dead_letter, fulfillment_replay_dead_letter,
        fulfillment_replay_dead_letters, fulfillment_discard_dead_letter,
        list_audit, overview,
    ),
    components(schemas(Problem, Page<User>, Page<Event>, Page<Claim>, Page<Reward>, Page<Progress>)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "users", description = "User administration"),
        (name = "events", description = "Events and their conditions"),
        (name = "rewards", description = "Rewards of events, their stock and limits"),
        (name = "claims", description = "Reward claims and their history"),
        (name = "inventory", description = "What players have been granted"),
        (name = "dead-letters", description = "Messages a consumer gave up on: inspect, replay, discard"),
        (name = "audit", description = "Every staff action, across services"),
        (name = "overview", description = "The platform at a glance, for staff"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[utoipa::path(post, path = "/auth/register", tag = "auth",
    description = "Creates an account with role USER. Public; rate limited per client.",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = User),
        (status = 409, description = "`email_taken`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`, naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`, with Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
fn register() {}

#[utoipa::path(post, path = "/auth/login", tag = "auth",
    description = "Public; rate limited per client. Unknown email and wrong password answer alike.",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "`invalid_credentials`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`account_banned`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
    ))]
fn login() {}

#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    description = "Public. Rotates the refresh token; presenting a spent one revokes its whole session.",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "`invalid_refresh_token`", body = Problem, content_type = "application/problem+json"),
    ))]
fn refresh() {}

#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    description = "Public. Revokes the session the refresh token belongs to.",
    request_body = RefreshRequest,
    responses((status = 204)))]
fn logout() {}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    description = "Public keys that verify access tokens (EdDSA).",
    responses((status = 200, description = "A JWK set")))]
fn jwks() {}

#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])),
    description = "Any signed-in user.",
    responses((status = 200, body = User), (status = 401, body = Problem, content_type = "application/problem+json")))]
fn get_me() {}

#[utoipa::path(patch, path = "/users/me", tag = "users", security(("bearer" = [])),
    description = "Any signed-in user. A new password needs `currentPassword` and ends every session.",
    request_body = UpdateMeRequest,
    responses(
        (status = 200, body = User),
        (status = 403, description = "`wrong_password`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
    ))]
fn update_me() {}

#[utoipa::path(delete, path = "/users/me", tag = "users", security(("bearer" = [])),
    description = "Any signed-in user: soft-deletes the account (status DELETED).",
    responses((status = 204)))]
fn delete_me() {}

#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])),
    description = "AUDITOR, ADMIN.",
    params(UserFilter, PageQuery),
    responses((status = 200, body = Page<User>), (status = 403, body = Problem, content_type = "application/problem+json")))]
fn list_users() {}

#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    description = "AUDITOR, ADMIN.",
    params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 404, description = "`user_not_found`", body = Problem, content_type = "application/problem+json")))]
fn get_user() {}

#[utoipa::path(put, path = "/users/{id}/roles", tag = "users", security(("bearer" = [])),
    description = "ADMIN. Ends the user's outstanding access tokens. A `reason`, if given, is kept \
                   in the change's audit record.",
    params(("id" = String, Path)),
    request_body = SetRolesRequest,
    responses(
        (status = 200, body = User),
        (status = 409, description = "`account_deleted`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `roles`, `reason`", body = Problem, content_type = "application/problem+json"),
    ))]
fn set_roles() {}

#[utoipa::path(post, path = "/users/{id}/ban", tag = "users", security(("bearer" = [])),
    description = "ADMIN. The user can no longer sign in; outstanding tokens stop working. A \
                   `reason`, if given, is kept in the ban's audit record.",
    params(("id" = String, Path)),
    request_body(content = Option<ReasonRequest>, description = "Optional."),
    responses(
        (status = 200, body = User),
        (status = 409, description = "`account_deleted`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `reason`", body = Problem, content_type = "application/problem+json"),
    ))]
fn ban() {}

#[utoipa::path(post, path = "/users/{id}/unban", tag = "users", security(("bearer" = [])),
    description = "ADMIN. A `reason`, if given, is kept in the unban's audit record.",
    params(("id" = String, Path)),
    request_body(content = Option<ReasonRequest>, description = "Optional."),
    responses(
        (status = 200, body = User),
        (status = 409, description = "`account_deleted`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `reason`", body = Problem, content_type = "application/problem+json"),
    ))]
fn unban() {}

#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    description = "ADMIN. Soft delete: status DELETED and deletedAt; the record stays. A `reason`, \
                   if given, is kept in the deletion's audit record. Deleting a deleted account \
                   answers 204 again and records nothing.",
    params(("id" = String, Path), ReasonQuery),
    responses(
        (status = 204),
        (status = 422, description = "`validation_failed`: `reason`", body = Problem, content_type = "application/problem+json"),
    ))]
fn delete_user() {}

#[utoipa::path(post, path = "/events", tag = "events", security(("bearer" = [])),
    description = "OPERATOR. Creates an event in status DRAFT.",
    request_body = CreateEventRequest,
    responses(
        (status = 201, body = Event),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: window, condition (depth, size, filters)", body = Problem, content_type = "application/problem+json"),
    ))]
fn create_event() {}

#[utoipa::path(get, path = "/events", tag = "events", security(("bearer" = [])),
    description = "Any signed-in user.",
    params(EventFilter, PageQuery),
    responses((status = 200, body = Page<Event>)))]
fn list_events() {}

#[utoipa::path(get, path = "/events/{id}", tag = "events", security(("bearer" = [])),
    description = "Any signed-in user.",
    params(("id" = String, Path)),
    responses((status = 200, body = Event), (status = 404, description = "`event_not_found`", body = Problem, content_type = "application/problem+json")))]
fn get_event() {}

#[utoipa::path(patch, path = "/events/{id}", tag = "events", security(("bearer" = [])),
    description = "OPERATOR. Absent fields stay; the condition of an ACTIVE event cannot change.",
    params(("id" = String, Path)),
    request_body = UpdateEventRequest,
    responses(
        (status = 200, body = Event),
        (status = 404, description = "`event_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`event_active` (condition change), `event_ended`, `concurrent_change`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
    ))]
fn update_event() {}

#[utoipa::path(post, path = "/events/{id}/status", tag = "events", security(("bearer" = [])),
    description = "OPERATOR. DRAFT -> ACTIVE | ENDED; ACTIVE <-> INACTIVE; ACTIVE | INACTIVE -> ENDED. ENDED is final.",
    params(("id" = String, Path)),
    request_body = SetStatusRequest,
    responses(
        (status = 200, body = Event),
        (status = 409, description = "`invalid_transition`, `concurrent_change`", body = Problem, content_type = "application/problem+json"),
    ))]
fn set_event_status() {}

#[utoipa::path(post, path = "/events/{id}/rewards", tag = "rewards", security(("bearer" = [])),
    description = "OPERATOR. POINT needs `amount`; ITEM `itemCode` and `quantity`; COUPON `couponTemplate`.",
    params(("id" = String, Path)),
    request_body = CreateRewardRequest,
    responses(
        (status = 201, body = Reward),
        (status = 404, description = "`event_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`event_ended`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
    ))]
fn create_reward() {}

#[utoipa::path(get, path = "/events/{id}/rewards", tag = "rewards", security(("bearer" = [])),
    description = "Any signed-in user.",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<Reward>), (status = 404, description = "`event_not_found`", body = Problem, content_type = "application/problem+json")))]
fn list_rewards() {}

#[utoipa::path(patch, path = "/rewards/{id}", tag = "rewards", security(("bearer" = [])),
    description = "OPERATOR. Stock may grow, or shrink down to what is already reserved.",
    params(("id" = String, Path)),
    request_body = UpdateRewardRequest,
    responses(
        (status = 200, body = Reward),
        (status = 404, description = "`reward_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`stock_below_reserved`, `concurrent_change`", body = Problem, content_type = "application/problem+json"),
    ))]
fn update_reward() {}

#[utoipa::path(get, path = "/events/{id}/progress/me", tag = "events", security(("bearer" = [])),
    description = "Any signed-in user: each leaf of the event's condition with their current value.",
    params(("id" = String, Path)),
    responses((status = 200, body = Progress), (status = 404, description = "`event_not_found`", body = Problem, content_type = "application/problem+json")))]
fn my_progress() {}

#[utoipa::path(get, path = "/progress/{userId}", tag = "events", security(("bearer" = [])),
    description = "OPERATOR, AUDITOR, ADMIN: a player's progress in each event that is not DRAFT, \
                   newest event first, as `GET /events/{id}/progress/me` gives it to the player. \
                   A user with no activity in an event, or with no account, has every leaf at 0.",
    params(("userId" = String, Path), PageQuery),
    responses((status = 200, body = Page<Progress>), (status = 403, body = Problem, content_type = "application/problem+json")))]
fn user_progress() {}

#[utoipa::path(post, path = "/events/{id}/rewards/{rewardId}/claims", tag = "claims", security(("bearer" = [])),
    description = "USER. Requires an `Idempotency-Key` header: the same key and body answer 200 with the \
                   original claim. Reserves one unit of stock and commands the grant; the claim is \
                   PENDING until fulfillment answers.",
    params(("id" = String, Path), ("rewardId" = String, Path),
           ("Idempotency-Key" = String, Header, pattern = r"^[\x21-\x7e]{1,128}$",
            description = "1 to 128 visible ASCII characters, unique per intended claim")),
    request_body(content = Option<ClaimRequest>, description = "Optional"),
    responses(
        (status = 202, description = "Accepted: PENDING", body = Claim),
        (status = 200, description = "The same key and body again: the original claim", body = Claim),
        (status = 400, description = "`idempotency_key_missing`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_not_allowed` (banned or deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`event_not_found`, `reward_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`condition_not_met` (with `progress`), `idempotency_key_reused`, `out_of_stock`, `claim_limit_reached`, `event_not_active`", body = Problem, content_type = "application/problem+json"),
    ))]
fn create_claim() {}

#[utoipa::path(get, path = "/claims/{id}", tag = "claims", security(("bearer" = [])),
    description = "The claim's owner, OPERATOR or AUDITOR: the claim with its saga timeline.",
    params(("id" = String, Path)),
    responses((status = 200, body = Claim), (status = 404, description = "`claim_not_found` (also for other users' claims)", body = Problem, content_type = "application/problem+json")))]
fn get_claim() {}

#[utoipa::path(get, path = "/inventory/me", tag = "inventory", security(("bearer" = [])),
    description = "Any signed-in user: points, items and coupons granted to them.",
    responses((status = 200, body = Inventory)))]
fn my_inventory() {}

#[utoipa::path(get, path = "/inventory/{userId}", tag = "inventory", security(("bearer" = [])),
    description = "OPERATOR, AUDITOR: any player's inventory (empty for players never granted anything).",
    params(("userId" = String, Path)),
    responses((status = 200, body = Inventory), (status = 403, body = Problem, content_type = "application/problem+json")))]
fn user_inventory() {}

#[utoipa::path(get, path = "/claims", tag = "claims", security(("bearer" = [])),
    description = "OPERATOR, AUDITOR: every claim.",
    params(ClaimFilter, PageQuery),
    responses((status = 200, body = Page<Claim>), (status = 403, body = Problem, content_type = "application/problem+json")))]
fn list_claims() {}

#[utoipa::path(get, path = "/claims/me", tag = "claims", security(("bearer" = [])),
    description = "Any signed-in user: their own claims.",
    params(MyClaimFilter, PageQuery),
    responses((status = 200, body = Page<Claim>)))]
fn list_my_claims() {}

#[utoipa::path(get, path = "/dead-letters/event", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Messages the event service's consumers dead-lettered, newest first, decoded where possible.",
    params(DeadLetterFilter, PageQuery),
    responses((status = 200, body = Page<DeadLetterView>)))]
fn list_dead_letters() {}

#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])),
    description = "AUDITOR, ADMIN. Staff actions of every service, newest first: event and reward \
                   changes, role changes, bans, unbans, deletions, dead-letter replays and \
                   discards. Records are written with the change they describe and cannot be \
                   changed. Page by passing the answer's `next` as `before`.",
    params(AuditQuery),
    responses((status = 200, body = AuditPage)))]
fn list_audit() {}

#[utoipa::path(get, path = "/overview", tag = "overview", security(("bearer" = [])),
    description = "OPERATOR, AUDITOR, ADMIN. Claim figures, consumer lag, outbox and dead-letter \
                   backlogs, and every instance's readiness, gathered by the gateway from the \
                   services' metrics and readiness checks. Looks are shared: callers within a \
                   second get the same one.",
    responses((status = 200, body = Overview)))]
fn overview() {}

#[utoipa::path(get, path = "/dead-letters/event/{id}", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN.",
    params(("id" = String, Path, description = "`<topic>:<partition>:<offset>`")),
    responses((status = 200, body = DeadLetterView), (status = 404, description = "`dead_letter_not_found`", body = Problem, content_type = "application/problem+json")))]
fn get_dead_letter() {}

#[utoipa::path(post, path = "/dead-letters/event/{id}/replay", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Sends the record back to its topic (same key, headers and message id, so it is processed at most once).",
    params(("id" = String, Path)),
    responses((status = 200, body = DeadLetterView), (status = 409, description = "`dead_letter_discarded`", body = Problem, content_type = "application/problem+json")))]
fn replay_dead_letter() {}

#[utoipa::path(post, path = "/dead-letters/event/replay", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Replays every NEW dead letter (of one topic, if given).",
    request_body(content = Option<ReplayAllRequest>, description = "Optional."),
    responses((status = 200, body = ReplayAllResponse)))]
fn replay_dead_letters() {}

#[utoipa::path(post, path = "/dead-letters/event/{id}/discard", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Gives up on the message, with a reason; recorded in its history.",
    params(("id" = String, Path)),
    request_body = DiscardRequest,
    responses((status = 200, body = DeadLetterView)))]
fn discard_dead_letter() {}

#[utoipa::path(get, path = "/dead-letters/reward-fulfillment", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Messages reward-fulfillment's consumers dead-lettered, newest first.",
    params(DeadLetterFilter, PageQuery),
    responses((status = 200, body = Page<DeadLetterView>)))]
fn fulfillment_dead_letters() {}

#[utoipa::path(get, path = "/dead-letters/reward-fulfillment/{id}", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN.",
    params(("id" = String, Path)),
    responses((status = 200, body = DeadLetterView)))]
fn fulfillment_dead_letter() {}

#[utoipa::path(post, path = "/dead-letters/reward-fulfillment/{id}/replay", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Back to its original topic with its key and message id.",
    params(("id" = String, Path)),
    responses((status = 200, body = DeadLetterView)))]
fn fulfillment_replay_dead_letter() {}

#[utoipa::path(post, path = "/dead-letters/reward-fulfillment/replay", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Every pending dead letter (optionally of one topic).",
    request_body(content = Option<ReplayAllRequest>, description = "Optional."),
    responses((status = 200, body = ReplayAllResponse)))]
fn fulfillment_replay_dead_letters() {}

#[utoipa::path(post, path = "/dead-letters/reward-fulfillment/{id}/discard", tag = "dead-letters", security(("bearer" = [])),
    description = "ADMIN. Marks it discarded, with a reason.",
    params(("id" = String, Path)),
    request_body = DiscardRequest,
    responses((status = 200, body = DeadLetterView)))]
fn fulfillment_discard_dead_letter() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Value) -> Vec<(String, &Value)> {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .iter()
                    .map(move |(method, op)| (format!("{method} {path}"), op))
            })
            .collect()
    }

    /// Path parameters are exactly the `{names}` of the path; everything else is a query
    /// parameter or a header, and optional unless the operation cannot do without it.
    #[test]
    fn parameters_are_where_the_path_says() {
        let doc = openapi();
        for (name, op) in operations(&doc) {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let in_path = name.contains(&format!("{{{}}}", param["name"].as_str().unwrap()));
                assert_eq!(param["in"] == "path", in_path, "{name}: {param}");
                if param["in"] == "query" {
                    assert_eq!(param["required"], false, "{name}: {param}");
                }
            }
        }
    }

    #[test]
    fn every_operation_declares_the_answers_it_can_give() {
        let doc = openapi();
        for (name, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            let declares = |status: &str| responses.contains_key(status);
            for status in ["502", "503", "504"] {
                assert!(declares(status), "{name} lacks {status}");
            }
            if op.get("security").is_some() {
                assert!(declares("401") && declares("403"), "{name}");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "408", "413", "415", "422"] {
                    assert!(declares(status), "{name} lacks {status}");
                }
            }
            for (status, response) in responses {
                if status.starts_with(['4', '5']) {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{name} {status} is not problem+json"
                    );
                }
            }
        }
    }

    /// Every reason a staff action takes is described by the rule the services apply.
    #[test]
    fn reasons_are_documented_as_the_services_check_them() {
        let doc = openapi();
        let schemas = &doc["components"]["schemas"];
        let deletion = doc["paths"]["/users/{id}"]["delete"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "reason")
            .unwrap();
        let reasons = [
            &schemas["DiscardRequest"]["properties"]["reason"],
            &schemas["ReasonRequest"]["properties"]["reason"],
            &schemas["SetRolesRequest"]["properties"]["reason"],
            &deletion["schema"],
        ];
        for reason in reasons {
            assert_eq!(reason["maxLength"], crate::audit::MAX_REASON, "{reason}");
            assert_eq!(reason["minLength"], 1, "{reason}");
            assert_eq!(reason["pattern"], crate::text::VISIBLE_TEXT, "{reason}");
        }
    }

    #[test]
    fn conditions_nest_four_levels_and_the_last_is_leaves_only() {
        let doc = openapi();
        let schemas = &doc["components"]["schemas"];
        let child_of =
            |level: &str| schemas[level]["oneOf"][0]["properties"]["all"]["items"]["$ref"].clone();
        assert_eq!(child_of("Condition"), "#/components/schemas/Condition2");
        assert_eq!(child_of("Condition3"), "#/components/schemas/Condition4");
        assert_eq!(
            schemas["Condition4"]["oneOf"],
            json!([{ "$ref": "#/components/schemas/Leaf" }])
        );
        let leaf_families = schemas["Leaf"]["oneOf"].as_array().unwrap().len();
        assert_eq!(leaf_families, 3);
    }
}
