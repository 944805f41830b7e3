//! What the event service knows of users: their status, kept from auth's UserRegistered and
//! UserStatusChanged. A banned or deleted user can no longer claim.
//!
//! Every change raises the user's token version, so the projection applies a change only if
//! it is newer than what it holds: re-deliveries and out-of-order replays cannot undo a ban.

use contracts::{UserEvent, UserStatus};
use messaging::consumer::{Delivery, Handler, HandlerError, Outcome};
use mongo_kit::mongodb::bson::{DateTime, doc, to_bson};
use mongo_kit::mongodb::options::UpdateOptions;
use mongo_kit::mongodb::{ClientSession, Collection, Database};
use serde::{Deserialize, Serialize};

pub const CONSUMER_GROUP: &str = "event.user-states";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserState {
    #[serde(rename = "_id")]
    pub user_id: String,
    pub status: UserStatus,
    pub token_version: i64,
    pub updated_at: DateTime,
}

#[derive(Clone)]
pub struct UserStates {
    states: Collection<UserState>,
}

impl UserStates {
    pub fn new(db: &Database) -> Self {
        Self {
            states: db.collection("user_states"),
        }
    }

    async fn apply(
        &self,
        session: &mut ClientSession,
        user_id: &str,
        status: UserStatus,
        version: i64,
    ) -> Result<(), HandlerError> {
        let status = to_bson(&status).map_err(|e| HandlerError::Retryable(e.to_string()))?;
        // Newer versions win; an equal or older one changes nothing.
        let current = self
            .states
            .find_one(doc! { "_id": user_id })
            .session(&mut *session)
            .await?;
        if current.is_some_and(|c| c.token_version >= version) {
            return Ok(());
        }
        self.states
            .update_one(
                doc! { "_id": user_id },
                doc! { "$set": { "status": status, "tokenVersion": version, "updatedAt": DateTime::now() } },
            )
            .with_options(UpdateOptions::builder().upsert(true).build())
            .session(&mut *session)
            .await?;
        Ok(())
    }
}

impl Handler for UserStates {
    type Message = UserEvent;

    async fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<UserEvent>],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in batch {
            let outcome = match &delivery.message {
                UserEvent::Registered(e) if e.user_id.trim().is_empty() => {
                    Outcome::Invalid("UserRegistered without a userId".into())
                }
                UserEvent::Registered(e) => {
                    self.apply(session, &e.user_id, UserStatus::Active, 0)
                        .await?;
                    Outcome::Done
                }
                UserEvent::StatusChanged(e) if e.user_id.trim().is_empty() => {
                    Outcome::Invalid("UserStatusChanged without a userId".into())
                }
                UserEvent::StatusChanged(e) if e.status == UserStatus::Unknown => {
                    Outcome::Invalid(format!(
                        "user {} changed to a status this build does not know",
                        e.user_id
                    ))
                }
                UserEvent::StatusChanged(e) => {
                    self.apply(session, &e.user_id, e.status, e.token_version)
                        .await?;
                    Outcome::Done
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}
