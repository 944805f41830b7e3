//! `auth_db`: the `users` and `refresh_tokens` collections and every query the service makes.

use crate::error::AuthError;
use audit::{Actor, Audit};
use auth_claims::Role;
use contracts::StatusChange;
use http_api::auth::{SessionState, User, UserFilter, UserStatus};
use http_api::{Page, PageQuery};
use messaging::outbox::Outbox;
use mongo_kit::mongodb::bson::{DateTime, Document, doc, to_bson};
use mongo_kit::mongodb::options::{FindOneAndUpdateOptions, IndexOptions, ReturnDocument};
use mongo_kit::mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use service_kit::TraceParent;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    /// Lower-cased; unique.
    pub email: String,
    pub password_hash: String,
    pub nickname: String,
    pub roles: Vec<Role>,
    pub status: UserStatus,
    /// Raised by every change that must end outstanding access tokens.
    pub token_version: i64,
    /// Raised by every change that must end sessions (refresh tokens): password change, ban,
    /// deletion.
    #[serde(default)]
    pub session_version: i64,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub deleted_at: Option<DateTime>,
}

impl UserDoc {
    pub fn new(email: String, password_hash: String, nickname: String, roles: Vec<Role>) -> Self {
        let now = DateTime::now();
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            email,
            password_hash,
            nickname,
            roles,
            status: UserStatus::Active,
            token_version: 0,
            session_version: 0,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    pub fn to_api(&self) -> User {
        User {
            id: self.id.clone(),
            email: self.email.clone(),
            nickname: self.nickname.clone(),
            roles: self.roles.clone(),
            status: self.status,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
            deleted_at: self.deleted_at.map(rfc3339),
        }
    }
}

pub fn rfc3339(time: DateTime) -> String {
    time.try_to_rfc3339_string().unwrap_or_default()
}

/// A refresh token, by hash. Tokens of one login form a family: rotation adds to it, reuse
/// of a spent token revokes all of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshDoc {
    #[serde(rename = "_id")]
    hash: String,
    family_id: String,
    user_id: String,
    /// The user's session version when the family began; sessions of an older version are
    /// revoked even if a racing rotation left one of their tokens unrevoked.
    #[serde(default)]
    session_version: i64,
    created_at: DateTime,
    /// TTL index: MongoDB removes the document once this passes.
    expires_at: DateTime,
    used_at: Option<DateTime>,
    revoked: bool,
}

/// What a change to a user ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    Nothing,
    /// Access tokens (roles changed): refresh tokens mint new ones with the new roles.
    AccessTokens,
    /// Access tokens and sessions (password changed, banned, deleted, unbanned).
    Sessions,
}

/// What presenting a refresh token found.
pub enum Rotation {
    /// Valid and now spent; the successor was stored. The caller must still check
    /// `session_version` against the user's: a revocation racing this rotation shows there.
    Rotated {
        user_id: String,
        session_version: i64,
    },
    /// Already spent or revoked: the family is now revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    users: Collection<UserDoc>,
    refresh: Collection<RefreshDoc>,
    outbox: Outbox,
    audit: Audit,
}

/// Why a user changes: what to announce on `auth.user-events`, in which trace, and the staff
/// action to record in the audit trail.
pub struct Cause<'a> {
    pub announce: Option<StatusChange>,
    pub trace: &'a TraceParent,
    pub staff: Option<Staff<'a>>,
}

/// A staff member's action on a user: who, the action's name, and the reason they gave.
pub struct Staff<'a> {
    pub actor: &'a Actor,
    pub action: &'static str,
    pub reason: Option<&'a str>,
}

impl Store {
    pub fn new(client: Client, db: &Database, outbox: Outbox, audit: Audit) -> Self {
        Self {
            client,
            audit,
            users: db.collection("users"),
            refresh: db.collection("refresh_tokens"),
            outbox,
        }
    }

    pub async fn ensure_indexes(&self) -> Result<(), AuthError> {
        let unique = IndexOptions::builder().unique(true).build();
        self.users
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(unique)
                    .build(),
            )
            .await?;
        self.users
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "status": 1, "roles": 1 })
                    .build(),
            )
            .await?;
        let ttl = IndexOptions::builder().expire_after(Duration::ZERO).build();
        self.refresh
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "expiresAt": 1 })
                    .options(ttl)
                    .build(),
            )
            .await?;
        self.refresh
            .create_index(IndexModel::builder().keys(doc! { "familyId": 1 }).build())
            .await?;
        self.refresh
            .create_index(IndexModel::builder().keys(doc! { "userId": 1 }).build())
            .await?;
        Ok(())
    }

    /// Creates the user and records UserRegistered (in `trace`), in one transaction.
    pub async fn insert_user(
        &self,
        user: &UserDoc,
        trace: Option<&TraceParent>,
    ) -> Result<(), AuthError> {
        let message = self
            .outbox
            .message(&events::registered(user), trace)
            .await
            .map_err(internal)?;
        let (users, outbox, user) = (self.users.clone(), self.outbox.clone(), user.clone());
        let mut session = self.client.start_session().await?;
        let inserted = session
            .start_transaction()
            .and_run2(async move |s| {
                users.insert_one(&user).session(&mut *s).await?;
                outbox.write(s, std::slice::from_ref(&message)).await
            })
            .await;
        match inserted {
            Ok(()) => Ok(()),
            Err(e) if mongo_kit::is_duplicate_key(&e) => Err(AuthError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserDoc>, AuthError> {
        Ok(self.users.find_one(doc! { "email": email }).await?)
    }

    pub async fn user(&self, id: &str) -> Result<UserDoc, AuthError> {
        self.users
            .find_one(doc! { "_id": id })
            .await?
            .ok_or(AuthError::UserNotFound)
    }

    pub async fn session_state(&self, id: &str) -> Result<SessionState, AuthError> {
        let user = self.user(id).await?;
        Ok(SessionState {
            status: user.status,
            token_version: user.token_version,
        })
    }

    pub async fn list_users(
        &self,
        filter: &UserFilter,
        page: PageQuery,
    ) -> Result<Page<User>, AuthError> {
        let mut query = Document::new();
        if let Some(email) = &filter.email {
            query.insert("email", email.trim().to_lowercase());
        }
        if let Some(role) = filter.role {
            query.insert("roles", Role::from(role).as_str());
        }
        if let Some(status) = filter.status {
            query.insert("status", to_bson(&status).map_err(internal)?);
        }
        let (items, total) = mongo_kit::find_page(
            &self.users,
            query,
            doc! { "_id": 1 },
            page.skip(),
            page.size,
        )
        .await?;
        Ok(Page {
            items: items.iter().map(UserDoc::to_api).collect(),
            page: page.page,
            size: page.size,
            total,
        })
    }

    /// Applies `set` (plus `updatedAt` and what `revoke` asks) to a user that is not deleted,
    /// and records what `cause` asks for (UserStatusChanged, the audit record), in one
    /// transaction; returns the user as it is afterwards.
    pub async fn update_user(
        &self,
        id: &str,
        mut set: Document,
        revoke: Revoke,
        cause: Cause<'_>,
    ) -> Result<UserDoc, AuthError> {
        set.insert("updatedAt", DateTime::now());
        let mut update = doc! { "$set": set };
        match revoke {
            Revoke::Nothing => {}
            Revoke::AccessTokens => {
                update.insert("$inc", doc! { "tokenVersion": 1 });
            }
            Revoke::Sessions => {
                update.insert("$inc", doc! { "tokenVersion": 1, "sessionVersion": 1 });
            }
        }
        let options = FindOneAndUpdateOptions::builder()
            .return_document(ReturnDocument::After)
            .build();
        let (users, outbox, audit) = (self.users.clone(), self.outbox.clone(), self.audit.clone());
        let (change, trace) = (cause.announce, cause.trace.clone());
        let staff = cause.staff.map(|staff| {
            self.audit
                .entry(staff.actor, staff.action, ("user", id))
                .reason(staff.reason)
        });
        let filter = doc! { "_id": id, "status": { "$ne": "DELETED" } };
        let mut session = self.client.start_session().await?;
        let updated = session
            .start_transaction()
            .and_run2(async move |s| {
                // What the audit record compares with: read in the transaction, so nothing
                // can change the user between this and the update.
                let before = match &staff {
                    Some(_) => users.find_one(filter.clone()).session(&mut *s).await?,
                    None => None,
                };
                let user = users
                    .find_one_and_update(filter.clone(), update.clone())
                    .with_options(options.clone())
                    .session(&mut *s)
                    .await?;
                let entry = match (&before, &user, &staff) {
                    (Some(before), Some(after), Some(entry)) => Some(
                        entry
                            .clone()
                            .changed(Some(&before.to_api()), &after.to_api()),
                    ),
                    _ => None,
                };
                if let Some(entry) = entry {
                    audit.write(s, &entry).await?;
                }
                if let (Some(user), Some(change)) = (&user, change) {
                    // Encoding asks the registry once per process, then uses its cache.
                    let message = outbox
                        .message(&events::status_changed(user, change), Some(&trace))
                        .await
                        .map_err(mongo_kit::mongodb::error::Error::custom)?;
                    outbox.write(s, &[message]).await?;
                }
                Ok(user)
            })
            .await?;
        let Some(user) = updated else {
            // Missing, or deleted: a deleted account stays as it was.
            self.user(id).await?;
            return Err(AuthError::AccountDeleted);
        };
        if revoke == Revoke::Sessions {
            self.revoke_user_sessions(id).await?;
        }
        Ok(user)
    }

    /// Starts a new session (refresh-token family) for the user.
    pub async fn start_session(
        &self,
        user: &UserDoc,
        hash: String,
        ttl: Duration,
    ) -> Result<(), AuthError> {
        let family_id = uuid::Uuid::now_v7().to_string();
        self.refresh
            .insert_one(refresh_doc(
                hash,
                family_id,
                user.id.clone(),
                user.session_version,
                ttl,
            ))
            .await?;
        Ok(())
    }

    /// Spends the token `hash` and stores `next_hash` in its family, in one transaction; or
    /// detects reuse and revokes the family.
    pub async fn rotate(
        &self,
        hash: &str,
        next_hash: &str,
        ttl: Duration,
    ) -> Result<Rotation, AuthError> {
        // Owned captures: the driver's async-closure API trips a compiler limitation
        // (rust-lang/rust#96865) when the closure borrows.
        let refresh = self.refresh.clone();
        let (hash_owned, next_hash) = (hash.to_owned(), next_hash.to_owned());
        let mut session = self.client.start_session().await?;
        let rotated = session
            .start_transaction()
            .and_run2(async move |s| {
                let now = DateTime::now();
                let spent = refresh
                    .find_one_and_update(
                        doc! {
                            "_id": hash_owned.as_str(),
                            "usedAt": null,
                            "revoked": false,
                            "expiresAt": { "$gt": now },
                        },
                        doc! { "$set": { "usedAt": now } },
                    )
                    .session(&mut *s)
                    .await?;
                let Some(spent) = spent else {
                    return Ok(None);
                };
                let next = refresh_doc(
                    next_hash.clone(),
                    spent.family_id.clone(),
                    spent.user_id.clone(),
                    spent.session_version,
                    ttl,
                );
                refresh.insert_one(next).session(&mut *s).await?;
                Ok(Some((spent.user_id, spent.session_version)))
            })
            .await?;
        if let Some((user_id, session_version)) = rotated {
            return Ok(Rotation::Rotated {
                user_id,
                session_version,
            });
        }
        // Not spendable: unknown, expired, or spent/revoked before. Only the last is reuse.
        match self.refresh.find_one(doc! { "_id": hash }).await? {
            Some(old) if old.used_at.is_some() || old.revoked => {
                self.revoke_family(&old.family_id).await?;
                tracing::warn!(family = %old.family_id, user = %old.user_id, "refresh token reused; session revoked");
                Ok(Rotation::Reused)
            }
            _ => Ok(Rotation::Invalid),
        }
    }

    /// Revokes the session the token belongs to, if any.
    pub async fn end_session(&self, hash: &str) -> Result<(), AuthError> {
        if let Some(token) = self.refresh.find_one(doc! { "_id": hash }).await? {
            self.revoke_family(&token.family_id).await?;
        }
        Ok(())
    }

    async fn revoke_family(&self, family_id: &str) -> Result<(), AuthError> {
        self.refresh
            .update_many(
                doc! { "familyId": family_id },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    async fn revoke_user_sessions(&self, user_id: &str) -> Result<(), AuthError> {
        self.refresh
            .update_many(
                doc! { "userId": user_id },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }
}

fn refresh_doc(
    hash: String,
    family_id: String,
    user_id: String,
    session_version: i64,
    ttl: Duration,
) -> RefreshDoc {
    let now = DateTime::now();
    RefreshDoc {
        hash,
        family_id,
        user_id,
        session_version,
        created_at: now,
        expires_at: DateTime::from_millis(now.timestamp_millis() + ttl.as_millis() as i64),
        used_at: None,
        revoked: false,
    }
}

/// The messages auth publishes about users.
pub mod events {
    use super::UserDoc;
    use contracts::{Envelope, StatusChange, UserRegistered, UserStatusChanged};
    use http_api::auth::UserStatus;

    const PRODUCER: &str = "auth";

    fn roles(user: &UserDoc) -> Vec<contracts::Role> {
        user.roles
            .iter()
            .filter_map(|r| match r {
                auth_claims::Role::User => Some(contracts::Role::User),
                auth_claims::Role::Operator => Some(contracts::Role::Operator),
                auth_claims::Role::Auditor => Some(contracts::Role::Auditor),
                auth_claims::Role::Admin => Some(contracts::Role::Admin),
                auth_claims::Role::System => None,
            })
            .collect()
    }

    pub fn registered(user: &UserDoc) -> UserRegistered {
        UserRegistered {
            envelope: Envelope::new(PRODUCER),
            user_id: user.id.clone(),
            email: user.email.clone(),
            nickname: user.nickname.clone(),
            roles: roles(user),
        }
    }

    pub fn status_changed(user: &UserDoc, change: StatusChange) -> UserStatusChanged {
        UserStatusChanged {
            envelope: Envelope::new(PRODUCER),
            user_id: user.id.clone(),
            change,
            status: match user.status {
                UserStatus::Active => contracts::UserStatus::Active,
                UserStatus::Banned => contracts::UserStatus::Banned,
                UserStatus::Deleted => contracts::UserStatus::Deleted,
            },
            roles: roles(user),
            token_version: user.token_version,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(e.to_string())
}
