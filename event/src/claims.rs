//! The claim saga: reserve stock and command the grant in one transaction, then finish the
//! claim or compensate it when fulfillment answers, or when it does not answer in time.
//!
//! ```text
//! POST claim ──txn──▶ claim PENDING, per-user count +1, GrantRewardCommand in the outbox,
//!                     stock reserved +1 (conditional: never above totalStock)
//! GrantResultEvent SUCCEEDED ──txn──▶ claim SUCCEEDED
//! GrantResultEvent FAILED    ──txn──▶ claim FAILED, stock -1, per-user count -1
//! no result by nextCheckAt   ──txn──▶ the same command again (same commandId, attempt + 1),
//!                                     and after `max_attempts` FAILED and compensated
//! ```
//!
//! The stock update is the last write before the commit: it is the one document every
//! claim of a reward writes, so holding it for the shortest time keeps concurrent claims
//! from queueing behind each other's transactions.

use crate::batch::{Batcher, Placed, limit_id};
use crate::error::EventError;
use crate::metrics as names;
use crate::store::{ClaimDoc, RewardDoc, Step, Store};
use contracts::{Envelope, GrantOutcome, GrantResultEvent, GrantRewardCommand};
use http_api::events::{ClaimRequest, ClaimStatus, ClaimStep, RewardType};
use messaging::consumer::{Delivery, Handler, HandlerError, Outcome};
use messaging::outbox::{Outbox, OutboxEntry};
use mongo_kit::mongodb::bson::{Bson, DateTime, Document, doc, to_bson};
use mongo_kit::mongodb::options::{Hint, IndexOptions};
use mongo_kit::mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use service_kit::TraceParent;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The index of PENDING claims, by when they are next checked.
const PENDING_INDEX: &str = "pending_by_next_check";
pub const RESULTS_GROUP: &str = "event.grant-results";
const PRODUCER: &str = "event";

/// Timing of the saga's retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SagaConfig {
    /// How long a claim waits for its grant result before the command is sent again.
    pub result_timeout_ms: u64,
    /// Commands sent in all before a claim without a result is failed and compensated.
    pub max_attempts: i32,
    /// How often overdue claims are looked for.
    pub check_interval_ms: u64,
    /// How old the copies of events and rewards a claim is first checked against may be
    /// (the batch's transaction reads them again); 0 reads them for every claim.
    pub catalog_ttl_ms: u64,
    /// How long a claim request waits for its batch's decision. Past that (MongoDB without
    /// a primary: the batch's transaction keeps retrying) the client gets a 503 with
    /// Retry-After, well before the gateway's timeout, and sends the claim again with its
    /// key; the batch goes on, so the claim may be decided (and found by that key) later.
    pub decide_within_ms: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            result_timeout_ms: 30_000,
            max_attempts: 3,
            check_interval_ms: 1_000,
            catalog_ttl_ms: 1_000,
            decide_within_ms: 5_000,
        }
    }
}

/// A claim as the route received it.
pub struct ClaimInput {
    pub user_id: String,
    pub event_id: String,
    pub reward_id: String,
    pub idempotency_key: String,
    pub request: ClaimRequest,
    pub trace: TraceParent,
}

impl ClaimInput {
    /// What the idempotency key stands for: the same key must come with the same request.
    fn fingerprint(&self) -> String {
        let body = serde_json::to_string(&self.request).unwrap_or_default();
        let digest = Sha256::new()
            .chain_update(self.event_id.as_bytes())
            .chain_update([0])
            .chain_update(self.reward_id.as_bytes())
            .chain_update([0])
            .chain_update(body.as_bytes())
            .finalize();
        hex::encode(digest)
    }
}

pub enum Claimed {
    /// Accepted now: PENDING.
    New(ClaimDoc),
    /// The same key and request came before: the original claim.
    Again(ClaimDoc),
}

#[derive(Clone)]
pub struct Saga {
    client: Client,
    db: Database,
    store: Store,
    rewards: Collection<RewardDoc>,
    claims: Collection<ClaimDoc>,
    /// `{_id: "<user>:<reward>", count}`: the user's claims of that reward that did not fail.
    limits: Collection<Document>,
    outbox: Outbox,
    batcher: Batcher,
    /// Ends the claim batches' tasks (see [`Self::run_timeouts`]).
    stop_batches: CancellationToken,
    config: SagaConfig,
}

impl Saga {
    pub fn new(
        client: Client,
        db: &Database,
        store: Store,
        outbox: Outbox,
        config: SagaConfig,
    ) -> Self {
        let stop_batches = CancellationToken::new();
        Self {
            batcher: Batcher::new(client.clone(), db, outbox.clone(), stop_batches.clone()),
            stop_batches,
            client,
            db: db.clone(),
            store,
            rewards: db.collection("rewards"),
            claims: db.collection("claims"),
            limits: db.collection("claim_limits"),
            outbox,
            config,
        }
    }

    pub async fn ensure_indexes(&self) -> Result<(), EventError> {
        let unique = IndexOptions::builder().unique(true).build();
        self.claims
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "idempotencyKey": 1 })
                    .options(unique)
                    .build(),
            )
            .await?;
        let overdue = IndexOptions::builder()
            .partial_filter_expression(doc! { "status": status(ClaimStatus::Pending) })
            .name(PENDING_INDEX.to_owned())
            .build();
        self.claims
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "nextCheckAt": 1 })
                    .options(overdue)
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Finds the reward, then leaves the checks to the reward's next batch, which reserves
    /// and commands in one transaction (see [`crate::batch`]): a claim costs no MongoDB
    /// round trip of its own.
    pub async fn claim(&self, input: ClaimInput) -> Result<Claimed, EventError> {
        let fingerprint = input.fingerprint();
        let found = tokio::try_join!(
            self.store.cached_event(&input.event_id),
            self.store.cached_reward(&input.reward_id),
        );
        let reward = match found {
            Ok((event, reward)) if reward.event_id == event.id => reward,
            Ok(_) => {
                return self
                    .refused(&input, &fingerprint, EventError::RewardNotFound)
                    .await;
            }
            Err(e @ (EventError::EventNotFound | EventError::RewardNotFound)) => {
                return self.refused(&input, &fingerprint, e).await;
            }
            Err(e) => return Err(e),
        };
        let claim = self.new_claim(&input, &reward, fingerprint, DateTime::now());
        let command = self.outbox_entry(&claim, 1).await?;
        let mut claim = claim;
        claim.command_message_ids.push(command.id.clone());
        let within = Duration::from_millis(self.config.decide_within_ms);
        let placed = tokio::time::timeout(within, self.batcher.place(claim.clone(), command))
            .await
            .unwrap_or(Err(EventError::Undecided(within)));
        let label = match &placed {
            Ok(Placed::New) => "accepted",
            Ok(Placed::Earlier(_)) => "repeated",
            Err(EventError::ClaimLimitReached) => "limit_reached",
            Err(EventError::OutOfStock) => "out_of_stock",
            Err(EventError::EventNotActive) => "event_not_active",
            Err(EventError::ConditionNotMet(_)) => "condition_not_met",
            Err(EventError::UserNotAllowed) => "user_not_allowed",
            Err(EventError::Undecided(_)) => "undecided",
            Err(_) => "error",
        };
        metrics::counter!(names::CLAIMS, "result" => label).increment(1);
        match placed? {
            Placed::New => Ok(Claimed::New(claim)),
            // A concurrent request with the same key got there first.
            Placed::Earlier(earlier) => same_request(*earlier, &claim.fingerprint),
        }
    }

    /// `error`, unless the key was used before: a repeated request gets its claim back
    /// whatever has changed since (and a different one under the same key is refused).
    async fn refused(
        &self,
        input: &ClaimInput,
        fingerprint: &str,
        error: EventError,
    ) -> Result<Claimed, EventError> {
        let earlier = self
            .claims
            .find_one(doc! { "userId": &input.user_id, "idempotencyKey": &input.idempotency_key })
            .await?;
        match earlier {
            Some(earlier) => same_request(earlier, fingerprint),
            None => Err(error),
        }
    }

    fn new_claim(
        &self,
        input: &ClaimInput,
        reward: &RewardDoc,
        fingerprint: String,
        now: DateTime,
    ) -> ClaimDoc {
        let timeout = self.config.result_timeout_ms as i64;
        ClaimDoc {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: input.user_id.clone(),
            event_id: input.event_id.clone(),
            reward_id: reward.id.clone(),
            status: ClaimStatus::Pending,
            failure_reason: None,
            coupon_code: None,
            idempotency_key: input.idempotency_key.clone(),
            fingerprint,
            note: input.request.note.clone(),
            grant: reward.grant.clone(),
            command_id: uuid::Uuid::now_v7().to_string(),
            command_message_ids: Vec::new(),
            attempts: 1,
            result_timeout_ms: timeout,
            max_attempts: self.config.max_attempts,
            next_check_at: Some(DateTime::from_millis(now.timestamp_millis() + timeout)),
            timeline: vec![
                Step {
                    step: ClaimStep::Requested,
                    at: now,
                    detail: None,
                },
                Step {
                    step: ClaimStep::StockReserved,
                    at: now,
                    detail: None,
                },
            ],
            created_at: now,
            updated_at: now,
            traceparent: Some(input.trace.to_string()),
        }
    }

    /// The grant command of `claim`'s `attempt`, encoded for the outbox.
    async fn outbox_entry(
        &self,
        claim: &ClaimDoc,
        attempt: i32,
    ) -> Result<OutboxEntry, EventError> {
        let command = GrantRewardCommand {
            envelope: Envelope::new(PRODUCER).correlated(&claim.id),
            command_id: claim
                .command_id
                .parse()
                .map_err(|e| EventError::Internal(format!("command id: {e}")))?,
            claim_id: claim.id.clone(),
            user_id: claim.user_id.clone(),
            event_id: claim.event_id.clone(),
            reward_id: claim.reward_id.clone(),
            reward_type: match claim.grant.kind {
                RewardType::Point => contracts::RewardType::Point,
                RewardType::Item => contracts::RewardType::Item,
                RewardType::Coupon => contracts::RewardType::Coupon,
            },
            points: claim.grant.amount,
            item_code: claim.grant.item_code.clone(),
            quantity: claim.grant.quantity,
            coupon_template: claim.grant.coupon_template.clone(),
            attempt,
            // The last check of the claim comes no earlier than this, so a claim that is given
            // up on cannot be granted afterwards by a command still on its way.
            expires_at: Some(
                claim.created_at.timestamp_millis()
                    + claim.result_timeout_ms * i64::from(claim.max_attempts),
            ),
        };
        let trace = claim.traceparent.as_deref().and_then(TraceParent::parse);
        self.outbox
            .message(&command, trace.as_ref())
            .await
            .map_err(|e| EventError::Internal(format!("encoding the grant command: {e}")))
    }

    /// Fails a PENDING claim and gives back what it held. Returns whether it was PENDING.
    async fn compensate(
        &self,
        session: &mut ClientSession,
        claim: &ClaimDoc,
        reason: &str,
        steps: Vec<Step>,
    ) -> Result<bool, mongo_kit::mongodb::error::Error> {
        let set = doc! { "failureReason": reason };
        self.apply(session, claim, Transition::COMPENSATE, set, steps)
            .await
    }

    /// Succeeds a compensated (FAILED) claim whose grant succeeded after all, and takes back
    /// what compensation gave back, even past the per-user limit (the grant is a fact).
    /// Returns whether it was FAILED.
    async fn reinstate(
        &self,
        session: &mut ClientSession,
        claim: &ClaimDoc,
        coupon_code: Option<String>,
        steps: Vec<Step>,
    ) -> Result<bool, mongo_kit::mongodb::error::Error> {
        let set = doc! { "couponCode": coupon_code };
        self.apply(session, claim, Transition::REINSTATE, set, steps)
            .await
    }

    /// Moves `claim` by `transition` if it is still in the transition's `from` status, and
    /// moves the reward's stock and the player's count with it. Returns whether it moved.
    async fn apply(
        &self,
        session: &mut ClientSession,
        claim: &ClaimDoc,
        transition: Transition,
        set: Document,
        steps: Vec<Step>,
    ) -> Result<bool, mongo_kit::mongodb::error::Error> {
        let steps = to_bson(&steps).map_err(mongo_kit::mongodb::error::Error::custom)?;
        let (filter, update) = transition.claim_update(&claim.id, set, steps);
        let moved = self
            .claims
            .update_one(filter, update)
            .session(&mut *session)
            .await?;
        if moved.modified_count == 0 {
            return Ok(false);
        }
        self.rewards
            .update_one(
                doc! { "_id": &claim.reward_id },
                doc! { "$inc": { "reserved": transition.held } },
            )
            .session(&mut *session)
            .await?;
        self.limits
            .update_one(
                doc! { "_id": limit_id(&claim.user_id, &claim.reward_id) },
                doc! { "$inc": { "count": transition.held } },
            )
            .session(&mut *session)
            .await?;
        Ok(true)
    }

    /// Re-sends the commands of claims whose result is overdue, or gives up on them, every
    /// `check_interval_ms` until `stop`. Then it stops the claim batches' tasks too: each
    /// ends once its queue is empty.
    pub async fn run_timeouts(self, stop: CancellationToken) {
        let _stop_batches = self.stop_batches.clone().drop_guard();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.check_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending_gauge = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.handle_overdue().await {
                        tracing::warn!(error = %e, "checking overdue claims failed; next round retries");
                    }
                }
                _ = pending_gauge.tick() => self.count_pending().await,
            }
        }
    }

    /// Sets the `claims_pending` gauge; every instance samples the same count, from the
    /// index that holds PENDING claims only.
    async fn count_pending(&self) {
        match self
            .claims
            .count_documents(doc! { "status": status(ClaimStatus::Pending) })
            .hint(Hint::Name(PENDING_INDEX.to_owned()))
            .await
        {
            Ok(pending) => metrics::gauge!(names::CLAIMS_PENDING).set(pending as f64),
            Err(e) => tracing::warn!(error = %e, "counting pending claims failed"),
        }
    }

    async fn handle_overdue(&self) -> Result<(), EventError> {
        use futures::TryStreamExt;
        let overdue: Vec<ClaimDoc> = self
            .claims
            .find(doc! { "status": status(ClaimStatus::Pending), "nextCheckAt": { "$lte": DateTime::now() } })
            .sort(doc! { "nextCheckAt": 1 })
            .limit(200)
            .await?
            .try_collect()
            .await?;
        for claim in overdue {
            // One claim that cannot be handled now must not hold up the others.
            if let Err(e) = self.retry_or_give_up(claim).await {
                tracing::warn!(error = %e, "an overdue claim could not be handled; next round retries");
            }
        }
        Ok(())
    }

    async fn retry_or_give_up(&self, claim: ClaimDoc) -> Result<(), EventError> {
        if claim.attempts < claim.max_attempts {
            return self.resend_command(&claim).await;
        }
        let reason = format!("no grant result after {} attempts", claim.attempts);
        let mut session = self.client.start_session().await?;
        let saga = self.clone();
        let failed = session
            .start_transaction()
            .and_run2(async move |s| {
                let step = Step::now(ClaimStep::Compensated, Some(reason.clone()));
                saga.compensate(s, &claim, &reason, vec![step]).await
            })
            .await?;
        // Counted once committed: the closure runs again when the transaction is retried.
        if failed {
            failed_claim();
        }
        Ok(())
    }

    /// The same command again (same commandId: fulfillment grants at most once).
    async fn resend_command(&self, claim: &ClaimDoc) -> Result<(), EventError> {
        let attempt = claim.attempts + 1;
        let command = self.outbox_entry(claim, attempt).await?;
        let next =
            DateTime::from_millis(DateTime::now().timestamp_millis() + claim.result_timeout_ms);
        let step = to_bson(&Step::now(
            ClaimStep::CommandResent,
            Some(format!("attempt {attempt}")),
        ))
        .map_err(|e| EventError::Internal(e.to_string()))?;
        let (claims, outbox, claim) = (self.claims.clone(), self.outbox.clone(), claim.clone());
        let mut session = self.client.start_session().await?;
        session
            .start_transaction()
            .and_run2(async move |s| {
                // Only if no other instance re-sent it meanwhile.
                let moved = claims
                    .update_one(
                        doc! { "_id": &claim.id, "status": status(ClaimStatus::Pending), "attempts": claim.attempts },
                        doc! {
                            "$set": { "attempts": attempt, "nextCheckAt": next, "updatedAt": DateTime::now() },
                            "$push": { "timeline": step.clone(), "commandMessageIds": &command.id },
                        },
                    )
                    .session(&mut *s)
                    .await?;
                if moved.modified_count == 1 {
                    outbox.write(s, std::slice::from_ref(&command)).await?;
                }
                Ok(())
            })
            .await?;
        metrics::counter!(names::CLAIMS_COMMAND_RESENT).increment(1);
        Ok(())
    }

    /// When each of the claim's commands reached Kafka.
    pub async fn published(&self, claim: &ClaimDoc) -> Result<Vec<(String, DateTime)>, EventError> {
        Ok(self.outbox.published_at(&claim.command_message_ids).await?)
    }
}

fn failed_claim() {
    metrics::counter!(names::CLAIMS_SETTLED, "status" => "FAILED").increment(1);
}

/// A claim's status as stored.
fn status(status: ClaimStatus) -> Bson {
    to_bson(&status).expect("a unit variant always serialises")
}

/// A move of a claim from one status to another, with what it holds: the reward's stock and
/// the player's count of the reward change by `held`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transition {
    from: ClaimStatus,
    to: ClaimStatus,
    held: i64,
}

impl Transition {
    /// The grant succeeded: the claim keeps what it holds.
    const COMPLETE: Self = Self {
        from: ClaimStatus::Pending,
        to: ClaimStatus::Succeeded,
        held: 0,
    };
    /// The grant failed or never answered: the claim gives back what it held.
    const COMPENSATE: Self = Self {
        from: ClaimStatus::Pending,
        to: ClaimStatus::Failed,
        held: -1,
    };
    /// The grant succeeded after all: the compensated claim takes back what it gave back.
    const REINSTATE: Self = Self {
        from: ClaimStatus::Failed,
        to: ClaimStatus::Succeeded,
        held: 1,
    };

    /// The filter and update that move claim `claim_id` if it is still `from`: its status
    /// becomes `to`, with `set`, and `steps` join its timeline. A claim that leaves PENDING
    /// has no next check; one that leaves FAILED has no failure reason.
    fn claim_update(self, claim_id: &str, mut set: Document, steps: Bson) -> (Document, Document) {
        set.insert("status", status(self.to));
        set.insert("updatedAt", DateTime::now());
        let unset = match self.from {
            ClaimStatus::Pending => "nextCheckAt",
            ClaimStatus::Failed | ClaimStatus::Succeeded => "failureReason",
        };
        let filter = doc! { "_id": claim_id, "status": status(self.from) };
        let update = doc! {
            "$set": set,
            "$unset": { unset: "" },
            "$push": { "timeline": { "$each": steps } },
        };
        (filter, update)
    }
}

fn same_request(earlier: ClaimDoc, fingerprint: &str) -> Result<Claimed, EventError> {
    if earlier.fingerprint == fingerprint {
        Ok(Claimed::Again(earlier))
    } else {
        Err(EventError::IdempotencyKeyReused)
    }
}

/// Settles claims from fulfillment's GrantResultEvents.
///
/// A batch of results costs one read of its claims and one update command for all the
/// successes (the common case); failures and late successes, which move stock and limits
/// back, are written claim by claim. Results are taken in order against the claims as this
/// batch leaves them, so a repeated result in the same batch finds its claim settled.
/// Every write is conditional on the claim's status, so a result applied again changes
/// nothing: results need no inbox record ([`Outcome::Repeatable`]).
#[derive(Clone)]
pub struct GrantResults {
    saga: Saga,
}

impl GrantResults {
    pub fn new(saga: Saga) -> Self {
        Self { saga }
    }

    /// What `result` does to `claim`, whose status is updated in place; successes of PENDING
    /// claims are left in `succeeded` for one update at the end.
    async fn settle(
        &self,
        session: &mut ClientSession,
        claim: &mut ClaimDoc,
        result: &GrantResultEvent,
        succeeded: &mut Vec<Document>,
    ) -> Result<Outcome, HandlerError> {
        if claim.command_id != result.command_id.to_string() {
            return Ok(Outcome::Invalid(format!(
                "result of command {} but claim {} commanded {}",
                result.command_id, claim.id, claim.command_id
            )));
        }
        let received = Step::now(
            ClaimStep::ResultReceived,
            Some(format!("{:?}", result.outcome)),
        );
        match (claim.status, result.outcome) {
            (_, GrantOutcome::Unknown) => Ok(Outcome::Invalid(
                "a grant outcome this build does not know".into(),
            )),
            (ClaimStatus::Pending, GrantOutcome::Succeeded) => {
                let steps = vec![received, Step::now(ClaimStep::Completed, None)];
                let steps = to_bson(&steps).map_err(|e| HandlerError::Retryable(e.to_string()))?;
                let set = doc! { "couponCode": result.coupon_code.clone() };
                let (filter, update) = Transition::COMPLETE.claim_update(&claim.id, set, steps);
                succeeded.push(mongo_kit::update_statement(filter, update, false));
                claim.status = ClaimStatus::Succeeded;
                messaging::consumer::on_commit(|| {
                    metrics::counter!(names::CLAIMS_SETTLED, "status" => "SUCCEEDED").increment(1);
                });
                Ok(Outcome::Repeatable)
            }
            (ClaimStatus::Pending, GrantOutcome::Failed) => {
                let reason = result
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the grant failed".into());
                let steps = vec![
                    received,
                    Step::now(ClaimStep::Compensated, Some(reason.clone())),
                ];
                if self.saga.compensate(session, claim, &reason, steps).await? {
                    messaging::consumer::on_commit(failed_claim);
                }
                claim.status = ClaimStatus::Failed;
                Ok(Outcome::Repeatable)
            }
            (ClaimStatus::Failed, GrantOutcome::Succeeded) => {
                // Granted after the claim was given up on: the player has the reward, so the
                // claim says so and takes its stock back, even past the limit (the grant is
                // a fact). Loud, because timeouts are meant to be far longer than this.
                tracing::error!(claim = %claim.id, "grant succeeded after the claim was compensated");
                messaging::consumer::on_commit(|| {
                    metrics::counter!(names::CLAIMS_LATE_SUCCESS).increment(1);
                });
                let steps = vec![
                    received,
                    Step::now(ClaimStep::Completed, Some("late result".into())),
                ];
                let coupon_code = result.coupon_code.clone();
                self.saga
                    .reinstate(session, claim, coupon_code, steps)
                    .await?;
                claim.status = ClaimStatus::Succeeded;
                Ok(Outcome::Repeatable)
            }
            // Already settled: a repeated result.
            _ => Ok(Outcome::Repeatable),
        }
    }
}

impl Handler for GrantResults {
    type Message = GrantResultEvent;

    async fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<GrantResultEvent>],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let ids: Vec<&str> = batch.iter().map(|d| d.message.claim_id.as_str()).collect();
        let mut claims: HashMap<String, ClaimDoc> =
            mongo_kit::find_all(&self.saga.claims, doc! { "_id": { "$in": ids } }, session)
                .await?
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect();
        let mut succeeded = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in batch {
            let result = &delivery.message;
            let outcome = match claims.get_mut(&result.claim_id) {
                Some(claim) => {
                    self.settle(session, claim, result, &mut succeeded)
                        .instrument(delivery.span())
                        .await?
                }
                None => Outcome::Invalid(format!("result for unknown claim {:?}", result.claim_id)),
            };
            outcomes.push(outcome);
        }
        let count = succeeded.len() as i64;
        let updated = mongo_kit::update_each(&self.saga.db, "claims", succeeded, session).await?;
        if updated.modified != count {
            // Read PENDING in this transaction's snapshot, so only a bug gets here.
            return Err(HandlerError::Retryable(format!(
                "{count} claims to settle, {} updated",
                updated.modified
            )));
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(note: Option<&str>) -> ClaimInput {
        ClaimInput {
            user_id: "u".into(),
            event_id: "e".into(),
            reward_id: "r".into(),
            idempotency_key: "k".into(),
            request: ClaimRequest {
                note: note.map(str::to_owned),
            },
            trace: TraceParent::root(),
        }
    }

    #[test]
    fn compensate_and_reinstate_move_a_claim_and_its_holdings_in_opposite_directions() {
        let (compensate, reinstate) = (Transition::COMPENSATE, Transition::REINSTATE);
        assert_eq!(compensate.to, reinstate.from);
        assert_eq!(compensate.held + reinstate.held, 0);
        assert_eq!(reinstate.to, Transition::COMPLETE.to);
        assert_eq!(Transition::COMPLETE.held, 0);
    }

    #[test]
    fn a_transition_updates_only_a_claim_still_in_its_from_status() {
        let steps = to_bson(&vec![Step::now(ClaimStep::Compensated, None)]).unwrap();
        let set = doc! { "failureReason": "no" };
        let (filter, update) = Transition::COMPENSATE.claim_update("c1", set, steps.clone());
        assert_eq!(filter, doc! { "_id": "c1", "status": "PENDING" });
        let fields = update.get_document("$set").unwrap();
        assert_eq!(fields.get_str("status"), Ok("FAILED"));
        assert_eq!(fields.get_str("failureReason"), Ok("no"));
        assert!(fields.get_datetime("updatedAt").is_ok());
        assert_eq!(
            update.get_document("$unset"),
            Ok(&doc! { "nextCheckAt": "" })
        );
        assert_eq!(
            update.get_document("$push"),
            Ok(&doc! { "timeline": { "$each": steps.clone() } })
        );

        let set = doc! { "couponCode": "C-1" };
        let (filter, update) = Transition::REINSTATE.claim_update("c1", set, steps);
        assert_eq!(filter, doc! { "_id": "c1", "status": "FAILED" });
        let fields = update.get_document("$set").unwrap();
        assert_eq!(fields.get_str("status"), Ok("SUCCEEDED"));
        assert_eq!(fields.get_str("couponCode"), Ok("C-1"));
        assert_eq!(
            update.get_document("$unset"),
            Ok(&doc! { "failureReason": "" })
        );
    }

    #[test]
    fn a_key_stands_for_its_event_reward_and_body() {
        assert_eq!(input(None).fingerprint(), input(None).fingerprint());
        assert_ne!(input(None).fingerprint(), input(Some("x")).fingerprint());
        let mut other = input(None);
        other.reward_id = "r2".into();
        assert_ne!(input(None).fingerprint(), other.fingerprint());
    }
}
