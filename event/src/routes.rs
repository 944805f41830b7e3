//! The event service's HTTP routes (public paths; the gateway forwards them unchanged).

use crate::AppState;
use crate::claims::{ClaimInput, Claimed};
use crate::condition;
use crate::error::EventError;
use crate::progress;
use crate::store::{ClaimDoc, EventChanges, EventDoc, Grant, RewardDoc, parse_time};
use audit::Actor;
use auth_claims::{Identity, Role};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::{Extension, Router};
use http_api::events::*;
use http_api::{Page, PageQuery, text};
use mongo_kit::mongodb::bson::DateTime;
use service_kit::{FieldError, Json, OptionalJson, Query, TraceParent};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/events", post(create_event).get(list_events))
        .route("/events/{id}", get(get_event).patch(update_event))
        .route("/events/{id}/status", post(set_status))
        .route(
            "/events/{id}/rewards",
            post(create_reward).get(list_rewards),
        )
        .route("/rewards/{id}", patch(update_reward))
        .route("/events/{id}/progress/me", get(my_progress))
        .route("/progress/{user_id}", get(user_progress))
        .route("/events/{id}/rewards/{reward_id}/claims", post(claim))
        .route("/claims", get(list_claims))
        .route("/claims/me", get(list_my_claims))
        .route("/claims/{id}", get(get_claim))
        .with_state(state)
}

/// Roles that manage events (ADMIN always may).
const MANAGERS: &[Role] = &[Role::Operator];
/// Roles that read every player's claims and progress.
const STAFF_READERS: &[Role] = &[Role::Operator, Role::Auditor];

async fn create_event(
    State(state): State<AppState>,
    actor: Actor,
    Json(request): Json<CreateEventRequest>,
) -> Result<impl IntoResponse, EventError> {
    actor.identity.require(MANAGERS)?;
    let mut errors = Vec::new();
    check_name(&request.name, &mut errors);
    let name = request.name.trim().to_owned();
    check_description(&request.description, &mut errors);
    let starts = parse_time("startsAt", &request.starts_at)
        .map_err(|e| errors.push(e))
        .ok();
    let ends = parse_time("endsAt", &request.ends_at)
        .map_err(|e| errors.push(e))
        .ok();
    if let (Some(starts), Some(ends)) = (starts, ends)
        && ends <= starts
    {
        errors.push(FieldError::new("endsAt", "must be after startsAt"));
    }
    errors.extend(condition::validate(&request.condition));
    let (Some(starts_at), Some(ends_at), true) = (starts, ends, errors.is_empty()) else {
        return Err(EventError::Validation(errors));
    };
    let now = DateTime::now();
    let event = EventDoc {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        description: request.description,
        starts_at,
        ends_at,
        status: EventStatus::Draft,
        condition: request.condition,
        created_by: actor.identity.sub.clone(),
        created_at: now,
        updated_at: now,
    };
    let entry = state
        .store
        .audit()
        .entry(&actor, "event.create", ("event", &event.id));
    state.store.insert_event(&event, entry).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/events/{}", event.id))],
        Json(event.to_api(now)),
    ))
}

async fn list_events(
    State(state): State<AppState>,
    _identity: Identity,
    Query(filter): Query<EventFilter>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Event>>, EventError> {
    let now = DateTime::now();
    let page = state.store.list_events(&filter, page, now).await?;
    Ok(Json(map_page(page, |e| e.to_api(now))))
}

async fn get_event(
    State(state): State<AppState>,
    _identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<Event>, EventError> {
    // From the copy the claim path uses: an event page is what every client polls, and a
    // copy at most `saga.catalog_ttl_ms` old (changes made through this instance show at
    // once) spares MongoDB a read per poll.
    Ok(Json(
        state.store.cached_event(&id).await?.to_api(DateTime::now()),
    ))
}

async fn list_claims(
    State(state): State<AppState>,
    identity: Identity,
    Query(filter): Query<ClaimFilter>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Claim>>, EventError> {
    identity.require(STAFF_READERS)?;
    let page = state.store.list_claims(&filter, page).await?;
    Ok(Json(map_page(page, ClaimDoc::to_api)))
}

async fn list_my_claims(
    State(state): State<AppState>,
    identity: Identity,
    Query(filter): Query<MyClaimFilter>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Claim>>, EventError> {
    let filter = filter.of(identity.sub);
    let page = state.store.list_claims(&filter, page).await?;
    Ok(Json(map_page(page, ClaimDoc::to_api)))
}

fn check_name(name: &str, errors: &mut Vec<FieldError>) {
    if !text::is_visible_text(name, 100) {
        errors.push(FieldError::new(
            "name",
            "must be 1 to 100 characters, not all blank, without control characters",
        ));
    }
}

fn check_description(description: &str, errors: &mut Vec<FieldError>) {
    if description.chars().count() > 2000 {
        errors.push(FieldError::new(
            "description",
            "must be at most 2000 characters",
        ));
    }
}

async fn update_event(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Json(request): Json<UpdateEventRequest>,
) -> Result<Json<Event>, EventError> {
    actor.identity.require(MANAGERS)?;
    let mut errors = Vec::new();
    if let Some(name) = &request.name {
        check_name(name, &mut errors);
    }
    let name = request.name.map(|n| n.trim().to_owned());
    if let Some(description) = &request.description {
        check_description(description, &mut errors);
    }
    let mut time = |field: &str, value: Option<String>| {
        value.and_then(|v| parse_time(field, &v).map_err(|e| errors.push(e)).ok())
    };
    let starts_at = time("startsAt", request.starts_at);
    let ends_at = time("endsAt", request.ends_at);
    if let Some(condition) = &request.condition {
        errors.extend(condition::validate(condition));
    }
    if !errors.is_empty() {
        return Err(EventError::Validation(errors));
    }
    let changes = EventChanges {
        name,
        description: request.description,
        starts_at,
        ends_at,
        condition: request.condition,
    };
    let entry = state
        .store
        .audit()
        .entry(&actor, "event.update", ("event", &id));
    let event = state.store.update_event(&id, changes, entry).await?;
    Ok(Json(event.to_api(DateTime::now())))
}

async fn set_status(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Json(request): Json<SetStatusRequest>,
) -> Result<Json<Event>, EventError> {
    actor.identity.require(MANAGERS)?;
    let entry = state
        .store
        .audit()
        .entry(&actor, "event.set_status", ("event", &id));
    let event = state.store.set_status(&id, request.status, entry).await?;
    Ok(Json(event.to_api(DateTime::now())))
}

const MAX_AMOUNT: i64 = 1_000_000;
const MAX_QUANTITY: i32 = 10_000;
const MAX_PER_USER: i32 = 1_000;
const MAX_STOCK: i64 = 1_000_000_000;

fn check_code(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if !text::is_visible_text(value, condition::MAX_CODE) {
        errors.push(FieldError::new(
            field,
            "must be 1 to 64 characters, not all blank, without control characters",
        ));
    }
}

fn check_stock(total: Option<i64>, errors: &mut Vec<FieldError>) {
    if total.is_some_and(|t| !(0..=MAX_STOCK).contains(&t)) {
        errors.push(FieldError::new(
            "totalStock",
            format!("must be 0 to {MAX_STOCK} (or null for unlimited)"),
        ));
    }
}

fn check_limit(limit: Option<i32>, errors: &mut Vec<FieldError>) {
    if limit.is_some_and(|l| !(1..=MAX_PER_USER).contains(&l)) {
        errors.push(FieldError::new(
            "perUserLimit",
            format!("must be 1 to {MAX_PER_USER}"),
        ));
    }
}

/// What a reward grants; each type's fields are checked against their bounds (which fields a
/// type has is the request's shape, checked when it is read).
fn grant_of(request: &CreateRewardRequest, errors: &mut Vec<FieldError>) -> Grant {
    let mut grant = Grant {
        kind: RewardType::Point,
        amount: None,
        item_code: None,
        quantity: None,
        coupon_template: None,
    };
    match request {
        CreateRewardRequest::Point { amount, .. } => {
            if !(1..=MAX_AMOUNT).contains(amount) {
                errors.push(FieldError::new(
                    "amount",
                    format!("must be 1 to {MAX_AMOUNT}"),
                ));
            }
            grant.amount = Some(*amount);
        }
        CreateRewardRequest::Item {
            item_code,
            quantity,
            ..
        } => {
            check_code("itemCode", item_code, errors);
            if !(1..=MAX_QUANTITY).contains(quantity) {
                errors.push(FieldError::new(
                    "quantity",
                    format!("must be 1 to {MAX_QUANTITY}"),
                ));
            }
            grant.kind = RewardType::Item;
            grant.item_code = Some(item_code.trim().to_owned());
            grant.quantity = Some(*quantity);
        }
        CreateRewardRequest::Coupon {
            coupon_template, ..
        } => {
            check_code("couponTemplate", coupon_template, errors);
            grant.kind = RewardType::Coupon;
            grant.coupon_template = Some(coupon_template.trim().to_owned());
        }
    }
    grant
}

async fn create_reward(
    State(state): State<AppState>,
    actor: Actor,
    Path(event_id): Path<String>,
    Json(request): Json<CreateRewardRequest>,
) -> Result<impl IntoResponse, EventError> {
    actor.identity.require(MANAGERS)?;
    let mut errors = Vec::new();
    let grant = grant_of(&request, &mut errors);
    check_stock(request.total_stock(), &mut errors);
    check_limit(request.per_user_limit(), &mut errors);
    if !errors.is_empty() {
        return Err(EventError::Validation(errors));
    }
    let event = state.store.event(&event_id).await?;
    let now = DateTime::now();
    if event.effective_status(now) == EventStatus::Ended {
        return Err(EventError::EventEnded);
    }
    let reward = RewardDoc {
        id: uuid::Uuid::now_v7().to_string(),
        event_id,
        grant,
        total_stock: request.total_stock(),
        reserved: 0,
        per_user_limit: request.per_user_limit().unwrap_or(1),
        created_at: now,
        updated_at: now,
    };
    let entry = state
        .store
        .audit()
        .entry(&actor, "reward.create", ("reward", &reward.id));
    state.store.insert_reward(&reward, entry).await?;
    Ok((StatusCode::CREATED, Json(reward.to_api())))
}

async fn list_rewards(
    State(state): State<AppState>,
    _identity: Identity,
    Path(event_id): Path<String>,
) -> Result<Json<Vec<Reward>>, EventError> {
    state.store.event(&event_id).await?;
    let rewards = state.store.rewards_of(&event_id).await?;
    Ok(Json(rewards.iter().map(RewardDoc::to_api).collect()))
}

async fn update_reward(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Json(request): Json<UpdateRewardRequest>,
) -> Result<Json<Reward>, EventError> {
    actor.identity.require(MANAGERS)?;
    let mut errors = Vec::new();
    check_stock(request.total_stock.flatten(), &mut errors);
    check_limit(request.per_user_limit, &mut errors);
    if !errors.is_empty() {
        return Err(EventError::Validation(errors));
    }
    let reward = state
        .store
        .update_reward(
            &id,
            request.total_stock,
            request.per_user_limit,
            state
                .store
                .audit()
                .entry(&actor, "reward.update", ("reward", &id)),
        )
        .await?;
    Ok(Json(reward.to_api()))
}

async fn my_progress(
    State(state): State<AppState>,
    identity: Identity,
    Path(event_id): Path<String>,
) -> Result<Json<Progress>, EventError> {
    let event = state.store.event(&event_id).await?;
    let progress = state.progress.get(&event_id, &identity.sub).await?;
    Ok(Json(progress::evaluate(
        &event,
        &identity.sub,
        progress.as_ref(),
    )))
}

/// A player's progress in each opened event, newest event first; a user with no activity
/// (or no account) has every leaf at 0, as `my_progress` answers them.
async fn user_progress(
    State(state): State<AppState>,
    identity: Identity,
    Path(user_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Progress>>, EventError> {
    identity.require(STAFF_READERS)?;
    let events = state.store.opened_events(page).await?;
    let ids: Vec<&str> = events.items.iter().map(|e| e.id.as_str()).collect();
    let progress = state.progress.of_user(&user_id, &ids).await?;
    Ok(Json(map_page(events, |event| {
        progress::evaluate(event, &user_id, progress.get(&event.id))
    })))
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

async fn claim(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    identity: Identity,
    Path((event_id, reward_id)): Path<(String, String)>,
    headers: HeaderMap,
    OptionalJson(request): OptionalJson<ClaimRequest>,
) -> Result<impl IntoResponse, EventError> {
    identity.require(&[Role::User])?;
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(EventError::IdempotencyKeyMissing)?;
    let request = request.unwrap_or_default();
    if request
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > 200)
    {
        return Err(EventError::Validation(vec![FieldError::new(
            "note",
            "must be at most 200 characters",
        )]));
    }
    let input = ClaimInput {
        user_id: identity.sub,
        event_id,
        reward_id,
        idempotency_key: key.to_owned(),
        request,
        trace,
    };
    Ok(match state.saga.claim(input).await? {
        Claimed::New(claim) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/claims/{}", claim.id))],
            Json(claim.to_api()),
        ),
        Claimed::Again(claim) => (
            StatusCode::OK,
            [(header::LOCATION, format!("/claims/{}", claim.id))],
            Json(claim.to_api()),
        ),
    })
}

async fn get_claim(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<Claim>, EventError> {
    let claim = state.store.claim(&id).await?;
    // Someone else's claim reads as missing, not forbidden: ids are not to be probed.
    if claim.user_id != identity.sub && !identity.may(STAFF_READERS) {
        return Err(EventError::ClaimNotFound);
    }
    let published = state.saga.published(&claim).await?;
    Ok(Json(claim.to_api_with_timeline(&published)))
}

fn map_page<T, U>(page: Page<T>, f: impl Fn(&T) -> U) -> Page<U> {
    Page {
        items: page.items.iter().map(f).collect(),
        page: page.page,
        size: page.size,
        total: page.total,
    }
}
