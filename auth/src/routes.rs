//! The auth service's HTTP routes. Paths are the public ones; the gateway forwards them
//! unchanged.

use crate::AppState;
use crate::error::AuthError;
use crate::store::{Cause, Revoke, Rotation, Staff, UserDoc};
use crate::tokens::{hash_refresh_token, new_refresh_token};
use crate::validate;
use audit::Actor;
use auth_claims::{Identity, Role};
use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use contracts::StatusChange;
use http_api::auth::*;
use http_api::{Page, PageQuery};
use mongo_kit::mongodb::bson::{DateTime, doc, to_bson};
use service_kit::{FieldError, Json, OptionalJson, Query, TraceParent};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/users/me", get(me).patch(update_me).delete(delete_me))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user).delete(delete_user))
        .route("/users/{id}/roles", put(set_roles))
        .route("/users/{id}/ban", post(ban))
        .route("/users/{id}/unban", post(unban))
        .route("/internal/users/{id}/session", get(session_state))
        .with_state(state)
}

async fn register(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    Json(request): Json<RegisterRequest>,
) -> Result<impl IntoResponse, AuthError> {
    let email = validate::email(&request.email);
    let nickname = validate::nickname(&request.nickname);
    let password = validate::password(&request.password);
    let (email, nickname) = match (email, nickname, password) {
        (Ok(email), Ok(nickname), Ok(())) => (email, nickname),
        (email, nickname, password) => {
            let errors = [email.err(), nickname.err(), password.err()];
            return Err(AuthError::Validation(
                errors.into_iter().flatten().collect(),
            ));
        }
    };
    let hash = state.passwords.hash(request.password).await?;
    let user = UserDoc::new(email, hash, nickname, vec![Role::User]);
    state.store.insert_user(&user, Some(&trace)).await?;
    metrics::counter!(crate::metrics::REGISTRATIONS).increment(1);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/users/{}", user.id))],
        Json(user.to_api()),
    ))
}

async fn login(
    State(state): State<AppState>,
    Json(request): Json<LoginRequest>,
) -> Result<Json<TokenPair>, AuthError> {
    let email = request.email.trim().to_lowercase();
    let user = state.store.user_by_email(&email).await?;
    // Always one argon2 verification, so an unknown email costs what a wrong password costs.
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let matches = state.passwords.verify(request.password, hash).await?;
    let result = match user {
        Some(user) if matches => match user.status {
            UserStatus::Active => Ok(user),
            UserStatus::Banned => Err(AuthError::Banned),
            // Deleted accounts answer like unknown ones.
            UserStatus::Deleted => Err(AuthError::InvalidCredentials),
        },
        _ => Err(AuthError::InvalidCredentials),
    };
    let outcome = match &result {
        Ok(_) => "success",
        Err(AuthError::Banned) => "banned",
        Err(_) => "invalid",
    };
    metrics::counter!(crate::metrics::LOGINS, "outcome" => outcome).increment(1);
    issue_session(&state, &result?).await.map(Json)
}

async fn refresh(
    State(state): State<AppState>,
    Json(request): Json<RefreshRequest>,
) -> Result<Json<TokenPair>, AuthError> {
    let (next, next_hash) = new_refresh_token();
    let presented = hash_refresh_token(&request.refresh_token);
    let rotation = match state
        .store
        .rotate(&presented, &next_hash, state.tokens.refresh_ttl)
        .await?
    {
        Rotation::Rotated {
            user_id,
            session_version,
        } => (user_id, session_version),
        Rotation::Reused => return Err(AuthError::RefreshTokenReused),
        Rotation::Invalid => return Err(AuthError::InvalidRefreshToken),
    };
    let (user_id, session_version) = rotation;
    let user = state.store.user(&user_id).await?;
    if user.status != UserStatus::Active || user.session_version != session_version {
        state.store.end_session(&next_hash).await?;
        return Err(AuthError::InvalidRefreshToken);
    }
    Ok(Json(token_pair(&state, &user, next)))
}

async fn logout(
    State(state): State<AppState>,
    Json(request): Json<RefreshRequest>,
) -> Result<StatusCode, AuthError> {
    state
        .store
        .end_session(&hash_refresh_token(&request.refresh_token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.tokens.jwks().clone()),
    )
}

async fn me(State(state): State<AppState>, identity: Identity) -> Result<Json<User>, AuthError> {
    let user = state.store.user(user_id_of(&identity)?).await?;
    Ok(Json(user.to_api()))
}

async fn update_me(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    identity: Identity,
    Json(request): Json<UpdateMeRequest>,
) -> Result<Json<User>, AuthError> {
    let id = user_id_of(&identity)?;
    let mut set = doc! {};
    let mut errors = Vec::new();
    if let Some(nickname) = &request.nickname {
        match validate::nickname(nickname) {
            Ok(nickname) => {
                set.insert("nickname", nickname);
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(password) = &request.password {
        if let Err(e) = validate::password(password) {
            errors.push(e);
        }
        if request.current_password.is_none() {
            errors.push(FieldError::new(
                "currentPassword",
                "required to change the password",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AuthError::Validation(errors));
    }
    let password_changed = match (request.password, request.current_password) {
        (Some(password), Some(current)) => {
            let user = state.store.user(id).await?;
            if !state
                .passwords
                .verify(current, Some(user.password_hash))
                .await?
            {
                return Err(AuthError::WrongPassword);
            }
            set.insert("passwordHash", state.passwords.hash(password).await?);
            true
        }
        _ => false,
    };
    // A new password ends every session: whoever knew the old one is signed out.
    let revoke = if password_changed {
        Revoke::Sessions
    } else {
        Revoke::Nothing
    };
    let user = state
        .store
        .update_user(
            id,
            set,
            revoke,
            Cause {
                announce: None,
                trace: &trace,
                staff: None,
            },
        )
        .await?;
    Ok(Json(user.to_api()))
}

async fn delete_me(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    identity: Identity,
) -> Result<StatusCode, AuthError> {
    soft_delete(&state, user_id_of(&identity)?, &trace, None).await
}

/// Roles that read accounts without changing them (ADMIN always may).
const ACCOUNT_READERS: &[Role] = &[Role::Auditor];

async fn list_users(
    State(state): State<AppState>,
    identity: Identity,
    Query(filter): Query<UserFilter>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<User>>, AuthError> {
    identity.require(ACCOUNT_READERS)?;
    Ok(Json(state.store.list_users(&filter, page).await?))
}

async fn get_user(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<User>, AuthError> {
    identity.require(ACCOUNT_READERS)?;
    Ok(Json(state.store.user(&id).await?.to_api()))
}

async fn set_roles(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    actor: Actor,
    Path(id): Path<String>,
    Json(request): Json<SetRolesRequest>,
) -> Result<Json<User>, AuthError> {
    actor.identity.require(&[Role::Admin])?;
    let roles = request.roles.into_iter().map(Role::from).collect();
    let reason = request.reason.as_deref().map(audit::reason).transpose();
    let (roles, reason) = match (validate::roles(roles), reason) {
        (Ok(roles), Ok(reason)) => (roles, reason),
        (roles, reason) => {
            let errors = [roles.err(), reason.err()];
            return Err(AuthError::Validation(
                errors.into_iter().flatten().collect(),
            ));
        }
    };
    let roles = to_bson(&roles).map_err(|e| AuthError::Internal(e.to_string()))?;
    let user = state
        .store
        .update_user(
            &id,
            doc! { "roles": roles },
            Revoke::AccessTokens,
            Cause {
                announce: Some(StatusChange::RolesChanged),
                trace: &trace,
                staff: Some(Staff {
                    actor: &actor,
                    action: "user.set_roles",
                    reason,
                }),
            },
        )
        .await?;
    Ok(Json(user.to_api()))
}

async fn ban(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    actor: Actor,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<ReasonRequest>,
) -> Result<Json<User>, AuthError> {
    actor.identity.require(&[Role::Admin])?;
    let reason = request.and_then(|r| r.reason);
    let reason = reason_of(reason.as_deref())?;
    let user = state
        .store
        .update_user(
            &id,
            doc! { "status": "BANNED" },
            Revoke::Sessions,
            Cause {
                announce: Some(StatusChange::Banned),
                trace: &trace,
                staff: Some(Staff {
                    actor: &actor,
                    action: "user.ban",
                    reason,
                }),
            },
        )
        .await?;
    Ok(Json(user.to_api()))
}

async fn unban(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    actor: Actor,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<ReasonRequest>,
) -> Result<Json<User>, AuthError> {
    actor.identity.require(&[Role::Admin])?;
    let reason = request.and_then(|r| r.reason);
    let reason = reason_of(reason.as_deref())?;
    // A new token version: tokens issued from now on are newer than anything the gateway
    // has cached for this user, so they work at once.
    let user = state
        .store
        .update_user(
            &id,
            doc! { "status": "ACTIVE" },
            Revoke::Sessions,
            Cause {
                announce: Some(StatusChange::Unbanned),
                trace: &trace,
                staff: Some(Staff {
                    actor: &actor,
                    action: "user.unban",
                    reason,
                }),
            },
        )
        .await?;
    Ok(Json(user.to_api()))
}

async fn delete_user(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceParent>,
    actor: Actor,
    Path(id): Path<String>,
    Query(query): Query<ReasonQuery>,
) -> Result<StatusCode, AuthError> {
    actor.identity.require(&[Role::Admin])?;
    let reason = reason_of(query.reason.as_deref())?;
    let staff = Staff {
        actor: &actor,
        action: "user.delete",
        reason,
    };
    soft_delete(&state, &id, &trace, Some(staff)).await
}

/// For the gateway: the user's status and token version (which its cache holds briefly).
async fn session_state(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<axum::Json<SessionState>, AuthError> {
    if !identity.has_any(&[Role::System]) {
        return Err(auth_claims::forbidden().into());
    }
    Ok(axum::Json(state.store.session_state(&id).await?))
}

async fn soft_delete(
    state: &AppState,
    id: &str,
    trace: &TraceParent,
    staff: Option<Staff<'_>>,
) -> Result<StatusCode, AuthError> {
    let deleted = state
        .store
        .update_user(
            id,
            doc! { "status": "DELETED", "deletedAt": DateTime::now() },
            Revoke::Sessions,
            Cause {
                announce: Some(StatusChange::Deleted),
                trace,
                staff,
            },
        )
        .await;
    match deleted {
        // Deleting twice is still deleted.
        Ok(_) | Err(AuthError::AccountDeleted) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e),
    }
}

/// The reason a staff member gave, trimmed; one that cannot be a reason is refused.
fn reason_of(reason: Option<&str>) -> Result<Option<&str>, AuthError> {
    reason
        .map(audit::reason)
        .transpose()
        .map_err(|e| AuthError::Validation(vec![e]))
}

/// The caller's own user id; SYSTEM callers have no account.
fn user_id_of(identity: &Identity) -> Result<&str, AuthError> {
    if identity.roles.iter().any(|r| Role::ASSIGNABLE.contains(r)) {
        Ok(&identity.sub)
    } else {
        Err(auth_claims::forbidden().into())
    }
}

/// A new session: an access token and the first refresh token of a new family.
async fn issue_session(state: &AppState, user: &UserDoc) -> Result<TokenPair, AuthError> {
    let (refresh, hash) = new_refresh_token();
    state
        .store
        .start_session(user, hash, state.tokens.refresh_ttl)
        .await?;
    Ok(token_pair(state, user, refresh))
}

fn token_pair(state: &AppState, user: &UserDoc, refresh_token: String) -> TokenPair {
    TokenPair {
        access_token: state
            .tokens
            .access_token(&user.id, &user.roles, user.token_version),
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: state.tokens.access_ttl.as_secs(),
    }
}
