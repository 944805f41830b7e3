//! A test handler whose every application leaves a trace: one `effects` document per message
//! applied. Counting them per message id tells whether something happened exactly once.
//!
//! UserActivityEvents with `itemCount < 0` are invalid content. Those naming the quest
//! `needs-fix` are rejected until a `{_id: "fixed"}` document exists in `flags`: a cause that
//! can be fixed, for replay tests.

use contracts::UserActivityEvent;
use messaging::consumer::{Delivery, Handler, HandlerError, Outcome};
use mongo_kit::mongodb::bson::{Document, doc};
use mongo_kit::mongodb::{ClientSession, Collection, Database};

pub struct Effects {
    effects: Collection<Document>,
    flags: Collection<Document>,
}

impl Effects {
    pub fn new(db: &Database) -> Self {
        Self {
            effects: db.collection("effects"),
            flags: db.collection("flags"),
        }
    }
}

impl Handler for Effects {
    type Message = UserActivityEvent;

    async fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<UserActivityEvent>],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let fixed = self
            .flags
            .find_one(doc! { "_id": "fixed" })
            .session(&mut *session)
            .await?
            .is_some();
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in batch {
            let event = &delivery.message;
            if event.item_count.is_some_and(|n| n < 0) {
                outcomes.push(Outcome::Invalid("itemCount must not be negative".into()));
                continue;
            }
            if event.quest_id.as_deref() == Some("needs-fix") && !fixed {
                outcomes.push(Outcome::Invalid(
                    "quest needs-fix is not supported yet".into(),
                ));
                continue;
            }
            self.effects
                .insert_one(doc! { "messageId": &delivery.message_id, "userId": &event.user_id })
                .session(&mut *session)
                .await?;
            outcomes.push(Outcome::Done);
        }
        Ok(outcomes)
    }
}
