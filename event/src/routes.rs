//! The event service's HTTP routes (public paths; the gateway forwards them unchanged).

use crate::AppState;
use crate::condition;
use crate::error::EventError;
use crate::store::{ClaimDoc, EventDoc, parse_time};
use auth_claims::{Identity, Role};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http_api::events::*;
use http_api::{Page, PageQuery};
use mongo_kit::mongodb::bson::DateTime;
use service_kit::{FieldError, Json, Query};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/events", post(create_event).get(list_events))
        .route("/events/{id}", get(get_event))
        .route("/claims", get(list_claims))
        .route("/claims/me", get(list_my_claims))
        .with_state(state)
}

/// Roles that manage events (ADMIN always may).
const MANAGERS: &[Role] = &[Role::Operator];
/// Roles that read everyone's claims.
const CLAIM_READERS: &[Role] = &[Role::Operator, Role::Auditor];

async fn create_event(
    State(state): State<AppState>,
    identity: Identity,
    Json(request): Json<CreateEventRequest>,
) -> Result<impl IntoResponse, EventError> {
    identity.require(MANAGERS)?;
    let mut errors = Vec::new();
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be 1 to 100 characters"));
    }
    if request.description.chars().count() > 2000 {
        errors.push(FieldError::new(
            "description",
            "must be at most 2000 characters",
        ));
    }
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
        created_by: identity.sub,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_event(&event).await?;
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
    Ok(Json(state.store.event(&id).await?.to_api(DateTime::now())))
}

async fn list_claims(
    State(state): State<AppState>,
    identity: Identity,
    Query(filter): Query<ClaimFilter>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Claim>>, EventError> {
    identity.require(CLAIM_READERS)?;
    let page = state.store.list_claims(&filter, page).await?;
    Ok(Json(map_page(page, ClaimDoc::to_api)))
}

async fn list_my_claims(
    State(state): State<AppState>,
    identity: Identity,
    Query(mut filter): Query<ClaimFilter>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Claim>>, EventError> {
    filter.user_id = Some(identity.sub);
    let page = state.store.list_claims(&filter, page).await?;
    Ok(Json(map_page(page, ClaimDoc::to_api)))
}

fn map_page<T, U>(page: Page<T>, f: impl Fn(&T) -> U) -> Page<U> {
    Page {
        items: page.items.iter().map(f).collect(),
        page: page.page,
        size: page.size,
        total: page.total,
    }
}
