//! Group commit for claims: the claims of one reward that arrive together are reserved in
//! one transaction.
//!
//! Every claim of a reward writes the reward's `reserved` counter. Run as one transaction
//! each, concurrent claims collide on that document (MongoDB aborts all but one with a
//! write conflict, and the retries collide again): measured, 64 concurrent claimants got 50
//! claims/s with a p99 of 9 s. So each reward gets one task in this process that takes
//! whatever claims are waiting, checks them together, and commits them with one stock
//! update: while one batch commits, the next one gathers. Nothing waits for a batch to
//! fill; a lone claim goes alone. A reward's task ends after [`LANE_IDLE`] without claims,
//! or once the service stops and its queue is empty (see [`Lanes`]); the reward's next
//! claim starts a new one.
//!
//! A batch costs a handful of round trips however many claims it holds: one parallel round
//! of reads (earlier claims with the same keys, per-user counts, the stock, the event, the
//! players' progress and status), the decisions in memory, then a transaction of four
//! writes. Every write is conditional on what its decisions read (unique keys, counts below
//! the limit, the stock as read), so if another instance changed something in between, the
//! transaction fails and the batch decides again from fresh reads.

use crate::error::EventError;
use crate::metrics as names;
use crate::progress::{self, ProgressDoc, ProgressFolder};
use crate::store::{ClaimDoc, EventDoc};
use crate::users::UserState;
use contracts::UserStatus;
use http_api::events::EventStatus;
use messaging::outbox::{Outbox, OutboxEntry};
use mongo_kit::mongodb::bson::{Bson, DateTime, Document, doc};
use mongo_kit::mongodb::error::Error;
use mongo_kit::mongodb::{Client, ClientSession, Collection, Database};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most claims committed in one transaction.
const MAX_BATCH: usize = 256;
/// How long a reward's task waits for claims before it ends.
pub const LANE_IDLE: Duration = Duration::from_secs(60);

/// A claim ready to be reserved: checked against the event, the condition and the user.
pub struct Pending {
    pub claim: ClaimDoc,
    pub command: OutboxEntry,
    pub reply: oneshot::Sender<Result<Placed, EventError>>,
}

/// What became of a claim the batch accepted for checking.
#[derive(Debug)]
pub enum Placed {
    /// Reserved and commanded: PENDING.
    New,
    /// The key was used before, by this request or another (the caller compares bodies).
    Earlier(Box<ClaimDoc>),
}

/// Why the batch transaction gave up; the driver's runner carries it out.
#[derive(Debug, Clone, Copy)]
struct Raced;

#[derive(Debug, Clone)]
enum Decision {
    New,
    Earlier(Box<ClaimDoc>),
    UserNotAllowed,
    EventNotActive,
    ConditionNotMet(Box<http_api::events::Progress>),
    LimitReached,
    OutOfStock,
}

/// The players' side of a batch's facts.
struct Players {
    progress: HashMap<String, ProgressDoc>,
    barred: HashSet<String>,
}

#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    db: Database,
    claims: Collection<ClaimDoc>,
    events: Collection<EventDoc>,
    limits: Collection<Document>,
    rewards: Collection<Document>,
    users: Collection<UserState>,
    progress: ProgressFolder,
    outbox: Outbox,
    lanes: Arc<Lanes<Pending>>,
}

impl Batcher {
    /// The reward's tasks end once `stop` is cancelled and their queues are empty.
    pub fn new(client: Client, db: &Database, outbox: Outbox, stop: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                db: db.clone(),
                claims: db.collection("claims"),
                events: db.collection("events"),
                limits: db.collection("claim_limits"),
                rewards: db.collection("rewards"),
                users: db.collection("user_states"),
                progress: ProgressFolder::new(db),
                outbox,
                lanes: Arc::new(Lanes::new(LANE_IDLE, stop)),
            }),
        }
    }

    /// Queues `claim` with the others of its reward and waits for the batch's verdict.
    pub async fn place(&self, claim: ClaimDoc, command: OutboxEntry) -> Result<Placed, EventError> {
        let (reply, verdict) = oneshot::channel();
        let pending = Pending {
            claim,
            command,
            reply,
        };
        let reward = pending.claim.reward_id.clone();
        let inner = self.inner.clone();
        self.inner
            .lanes
            .send(&reward, pending, |lane| inner.run(lane));
        verdict
            .await
            .map_err(|_| EventError::Internal("the claim batch was dropped".into()))?
    }
}

impl Inner {
    /// One reward's claims, a batch at a time, until its lane ends.
    async fn run(self: Arc<Self>, mut lane: Lane<Pending>) {
        let reward = lane.key().to_owned();
        let mut held: Vec<Pending> = Vec::new();
        loop {
            let mut batch = std::mem::take(&mut held);
            if batch.is_empty() {
                match lane.next().await {
                    Some(first) => batch.push(first),
                    None => return,
                }
            }
            while batch.len() < MAX_BATCH {
                match lane.try_next() {
                    Some(next) => batch.push(next),
                    None => break,
                }
            }
            // One claim per user per transaction: a second claim of the same user waits
            // for the next batch, so the first one's count is visible to it.
            let mut users = HashSet::new();
            let (now, later): (Vec<Pending>, Vec<Pending>) = batch
                .into_iter()
                .partition(|p| users.insert(p.claim.user_id.clone()));
            held = later;
            self.commit(&reward, now).await;
        }
    }

    async fn commit(self: &Arc<Self>, reward: &str, batch: Vec<Pending>) {
        let started = std::time::Instant::now();
        let size = batch.len();
        let decided = self.decide_and_write(reward, &batch).await;
        metrics::histogram!(names::CLAIM_BATCH_SIZE).record(size as f64);
        metrics::histogram!(names::CLAIM_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        match decided {
            Ok(decisions) => {
                for (pending, decision) in batch.into_iter().zip(decisions) {
                    let verdict = match decision {
                        Decision::New => Ok(Placed::New),
                        Decision::Earlier(claim) => Ok(Placed::Earlier(claim)),
                        Decision::UserNotAllowed => Err(EventError::UserNotAllowed),
                        Decision::EventNotActive => Err(EventError::EventNotActive),
                        Decision::ConditionNotMet(standing) => {
                            Err(EventError::ConditionNotMet(standing))
                        }
                        Decision::LimitReached => Err(EventError::ClaimLimitReached),
                        Decision::OutOfStock => Err(EventError::OutOfStock),
                    };
                    let _ = pending.reply.send(verdict);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, claims = size, "a claim batch failed");
                for pending in batch {
                    let _ = pending.reply.send(Err(EventError::Database(e.clone())));
                }
            }
        }
    }

    /// Reads, decides, then writes the accepted claims in one transaction; again from the
    /// reads if the writes find that something changed since.
    async fn decide_and_write(
        self: &Arc<Self>,
        reward: &str,
        batch: &[Pending],
    ) -> Result<Vec<Decision>, Error> {
        let items: Vec<(ClaimDoc, OutboxEntry)> = batch
            .iter()
            .map(|p| (p.claim.clone(), p.command.clone()))
            .collect();
        let mut session = self.client.start_session().await?;
        let mut attempts = 0;
        loop {
            let facts = self.facts(reward, &items).await?;
            let decisions = decide(&items, &facts);
            let accepted: Vec<usize> = (0..items.len())
                .filter(|&i| matches!(decisions[i], Decision::New))
                .collect();
            if accepted.is_empty() {
                return Ok(decisions);
            }
            let (this, items, facts) = (self.clone(), items.clone(), Arc::new(facts));
            let written = session
                .start_transaction()
                .and_run2(async move |s| this.write(s, &items, &accepted, &facts).await)
                .await;
            match written {
                Ok(()) => return Ok(decisions),
                Err(e) if e.get_custom::<Raced>().is_some() && attempts < 20 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Everything the batch's decisions rest on, read in parallel and outside the
    /// transaction: each fact a decision takes for granted is also a condition of the write
    /// that depends on it (a unique key, a count below the limit, the stock as read), so a
    /// change in between makes the transaction fail and the batch decide again. Only the
    /// players' progress and status and the event's state are taken as read, as a claim
    /// checked against them on arrival always has.
    async fn facts(
        &self,
        reward_id: &str,
        items: &[(ClaimDoc, OutboxEntry)],
    ) -> Result<Facts, Error> {
        use futures::TryStreamExt;
        let event_id = items
            .first()
            .map(|(c, _)| c.event_id.clone())
            .unwrap_or_default();
        let keys: Vec<Document> = items
            .iter()
            .map(|(c, _)| doc! { "userId": &c.user_id, "idempotencyKey": &c.idempotency_key })
            .collect();
        let limit_ids: Vec<String> = items
            .iter()
            .map(|(c, _)| limit_id(&c.user_id, &c.reward_id))
            .collect();
        let earlier = async {
            self.claims
                .find(doc! { "$or": keys })
                .await?
                .map_ok(|c| ((c.user_id.clone(), c.idempotency_key.clone()), c))
                .try_collect::<HashMap<_, _>>()
                .await
        };
        let counts = async {
            self.limits
                .find(doc! { "_id": { "$in": &limit_ids } })
                .await?
                .try_filter_map(|d| async move {
                    Ok(d.get_str("_id")
                        .ok()
                        .map(|id| (id.to_owned(), count_of(&d))))
                })
                .try_collect::<HashMap<String, i64>>()
                .await
        };
        let (earlier, counts, reward, event, players) = tokio::try_join!(
            earlier,
            counts,
            self.rewards.find_one(doc! { "_id": reward_id }),
            self.events.find_one(doc! { "_id": &event_id }),
            self.players(&event_id, items),
        )?;
        let reward = reward.ok_or_else(|| Error::custom(Raced))?;
        Ok(Facts {
            earlier,
            counts,
            limit_ids,
            reward_id: reward_id.to_owned(),
            reserved: count_in(&reward, "reserved"),
            total: match reward.get("totalStock") {
                Some(Bson::Int32(n)) => Some(i64::from(*n)),
                Some(Bson::Int64(n)) => Some(*n),
                _ => None,
            },
            limit: match count_in(&reward, "perUserLimit") {
                0 => 1,
                n => n,
            },
            event,
            players,
        })
    }

    /// The progress and the status of the batch's players (one query each per batch).
    async fn players(
        &self,
        event_id: &str,
        items: &[(ClaimDoc, OutboxEntry)],
    ) -> Result<Players, Error> {
        use futures::TryStreamExt;
        let users: Vec<&str> = items.iter().map(|(c, _)| c.user_id.as_str()).collect();
        let barred = async {
            self.users
                .find(doc! { "_id": { "$in": &users } })
                .await?
                .try_filter_map(|u: UserState| async move {
                    let barred = matches!(u.status, UserStatus::Banned | UserStatus::Deleted);
                    Ok(barred.then_some(u.user_id))
                })
                .try_collect::<HashSet<String>>()
                .await
        };
        let (progress, barred) =
            tokio::try_join!(self.progress.get_many(event_id, &users), barred)?;
        Ok(Players { progress, barred })
    }

    /// The accepted claims' writes: each conditional on the facts their decision used.
    async fn write(
        &self,
        s: &mut ClientSession,
        items: &[(ClaimDoc, OutboxEntry)],
        accepted: &[usize],
        facts: &Facts,
    ) -> Result<(), Error> {
        let claims: Vec<&ClaimDoc> = accepted.iter().map(|&i| &items[i].0).collect();
        // A duplicate key means another request took a key since our read.
        match self.claims.insert_many(claims).session(&mut *s).await {
            Err(e) if mongo_kit::is_duplicate_key(&e) => return Err(Error::custom(Raced)),
            other => other?,
        };
        let limits = accepted
            .iter()
            .map(|&i| {
                mongo_kit::update_statement(
                    doc! { "_id": &facts.limit_ids[i], "count": { "$lt": facts.limit } },
                    doc! { "$inc": { "count": 1 } },
                    true,
                )
            })
            .collect();
        // A count at the limit fails the upsert with a duplicate key: a claim of the same
        // player committed since our read.
        match mongo_kit::update_each(&self.db, "claim_limits", limits, s).await {
            Err(e) if mongo_kit::is_duplicate_key(&e) => return Err(Error::custom(Raced)),
            other => other?,
        };
        let commands: Vec<OutboxEntry> = accepted.iter().map(|&i| items[i].1.clone()).collect();
        self.outbox.write(s, &commands).await?;
        // The stock as read: another batch in between means deciding again.
        let taken = self
            .rewards
            .update_one(
                doc! { "_id": &facts.reward_id, "reserved": facts.reserved },
                doc! { "$inc": { "reserved": accepted.len() as i64 } },
            )
            .session(&mut *s)
            .await?;
        if taken.matched_count == 0 {
            return Err(Error::custom(Raced));
        }
        Ok(())
    }
}

/// What a batch read (see [`Inner::facts`]).
struct Facts {
    earlier: HashMap<(String, String), ClaimDoc>,
    counts: HashMap<String, i64>,
    /// Each claim's per-user count id, in the batch's order.
    limit_ids: Vec<String>,
    reward_id: String,
    reserved: i64,
    total: Option<i64>,
    limit: i64,
    event: Option<EventDoc>,
    players: Players,
}

/// Each claim's fate, in order, from what the batch read.
fn decide(items: &[(ClaimDoc, OutboxEntry)], facts: &Facts) -> Vec<Decision> {
    let now = DateTime::now();
    let open = facts
        .event
        .as_ref()
        .filter(|e| e.effective_status(now) == EventStatus::Active && now >= e.starts_at);
    let mut available = facts.total.map(|t| (t - facts.reserved).max(0));
    let mut decisions = Vec::with_capacity(items.len());
    for ((claim, _), limit_id) in items.iter().zip(&facts.limit_ids) {
        let key = (claim.user_id.clone(), claim.idempotency_key.clone());
        let decision = if let Some(earlier) = facts.earlier.get(&key) {
            Decision::Earlier(Box::new(earlier.clone()))
        } else if facts.players.barred.contains(&claim.user_id) {
            Decision::UserNotAllowed
        } else if let Some(event) = open {
            let progress = facts.players.progress.get(&claim.user_id);
            let standing = progress::evaluate(event, &claim.user_id, progress);
            if !standing.met {
                Decision::ConditionNotMet(Box::new(standing))
            } else if facts.counts.get(limit_id).copied().unwrap_or(0) >= facts.limit {
                Decision::LimitReached
            } else if available == Some(0) {
                Decision::OutOfStock
            } else {
                available = available.map(|a| a - 1);
                Decision::New
            }
        } else {
            Decision::EventNotActive
        };
        decisions.push(decision);
    }
    decisions
}

pub fn limit_id(user_id: &str, reward_id: &str) -> String {
    format!("{user_id}:{reward_id}")
}

fn count_of(doc: &Document) -> i64 {
    count_in(doc, "count")
}

fn count_in(doc: &Document, field: &str) -> i64 {
    match doc.get(field) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

/// One task per key (a reward), each with its own queue: the task starts with its key's
/// first item and ends after `idle` without items, or once `stop` is cancelled, but only
/// with its queue empty.
///
/// A task ends by removing its queue from the map under the lock [`Lanes::send`] holds
/// while it sends, after checking under that lock that nothing is queued. So an item is
/// either sent before the check (and the task takes it and goes on) or after the removal
/// (and starts a new task): none is ever sent to a task that is ending.
pub struct Lanes<T> {
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<T>>>,
    idle: Duration,
    stop: CancellationToken,
}

/// A task's end of its lane.
pub struct Lane<T: Send + 'static> {
    key: String,
    queue: mpsc::UnboundedReceiver<T>,
    lanes: Arc<Lanes<T>>,
}

impl<T: Send + 'static> Lanes<T> {
    pub fn new(idle: Duration, stop: CancellationToken) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            idle,
            stop,
        }
    }

    /// Queues `item` for `key`'s task, first spawning `work` on a new lane if the key has
    /// no task.
    pub fn send<F, W>(self: &Arc<Self>, key: &str, mut item: T, work: W)
    where
        W: FnOnce(Lane<T>) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut queues = self.lock();
        if let Some(queue) = queues.get(key) {
            match queue.send(item) {
                Ok(()) => return,
                // The task died without removing its queue (a panic): start another.
                Err(mpsc::error::SendError(returned)) => item = returned,
            }
        }
        let (sender, queue) = mpsc::unbounded_channel();
        if sender.send(item).is_err() {
            unreachable!("the receiver is still here");
        }
        let lane = Lane {
            key: key.to_owned(),
            queue,
            lanes: self.clone(),
        };
        tokio::spawn(work(lane));
        queues.insert(key.to_owned(), sender);
    }

    /// Keys with a running task.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<T>>> {
        self.queues
            .lock()
            .expect("no code panics holding the lane map")
    }
}

impl<T: Send + 'static> Lane<T> {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The next item, waiting for one; `None` once the lane has ended (idle for too long,
    /// or stopped) and left the map.
    pub async fn next(&mut self) -> Option<T> {
        let lanes = self.lanes.clone();
        tokio::select! {
            biased;
            item = self.queue.recv() => return item,
            () = lanes.stop.cancelled() => {}
            () = tokio::time::sleep(lanes.idle) => {}
        }
        self.end_unless_queued()
    }

    /// The next item if one is queued.
    pub fn try_next(&mut self) -> Option<T> {
        self.queue.try_recv().ok()
    }

    /// An item that arrived meanwhile, or else the lane leaves the map: both under the
    /// senders' lock, so nothing can be sent in between.
    fn end_unless_queued(&mut self) -> Option<T> {
        let mut queues = self.lanes.lock();
        let item = self.queue.try_recv().ok();
        if item.is_none() {
            queues.remove(&self.key);
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    /// An item asks its lane's task to answer.
    type Item = oneshot::Sender<()>;

    /// Answers every item, then reports the lane's end.
    async fn answer(mut lane: Lane<Item>, ended: mpsc::UnboundedSender<String>) {
        while let Some(reply) = lane.next().await {
            let _ = reply.send(());
        }
        let _ = ended.send(lane.key().to_owned());
    }

    fn send(
        lanes: &Arc<Lanes<Item>>,
        key: &str,
        ended: &mpsc::UnboundedSender<String>,
    ) -> oneshot::Receiver<()> {
        let (reply, answered) = oneshot::channel();
        let ended = ended.clone();
        lanes.send(key, reply, move |lane| answer(lane, ended));
        answered
    }

    const SOON: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn an_idle_lane_ends_and_a_later_item_starts_a_new_one() {
        let lanes = Arc::new(Lanes::new(
            Duration::from_millis(50),
            CancellationToken::new(),
        ));
        let (ends, mut ended) = mpsc::unbounded_channel();
        send(&lanes, "r1", &ends).await.unwrap();
        assert_eq!(lanes.len(), 1);
        let end = timeout(SOON, ended.recv()).await.unwrap();
        assert_eq!(end.as_deref(), Some("r1"));
        assert_eq!(lanes.len(), 0, "the ended lane left the map");
        timeout(SOON, send(&lanes, "r1", &ends))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lanes.len(), 1, "a new lane took the later item");
    }

    #[tokio::test]
    async fn stop_ends_every_lane_and_items_sent_after_it_are_still_answered() {
        let stop = CancellationToken::new();
        let lanes = Arc::new(Lanes::new(Duration::from_secs(3600), stop.clone()));
        let (ends, mut ended) = mpsc::unbounded_channel();
        send(&lanes, "r1", &ends).await.unwrap();
        send(&lanes, "r2", &ends).await.unwrap();
        stop.cancel();
        let mut keys = vec![
            timeout(SOON, ended.recv()).await.unwrap().unwrap(),
            timeout(SOON, ended.recv()).await.unwrap().unwrap(),
        ];
        keys.sort();
        assert_eq!(keys, ["r1", "r2"]);
        assert_eq!(lanes.len(), 0);
        // A request still in flight at shutdown gets its answer from a lane that then ends.
        timeout(SOON, send(&lanes, "r1", &ends))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            timeout(SOON, ended.recv()).await.unwrap().as_deref(),
            Some("r1")
        );
        assert_eq!(lanes.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_item_is_sent_to_a_lane_that_is_ending() {
        // Lanes that try to end whenever their queue is empty, and senders racing them.
        let lanes = Arc::new(Lanes::new(Duration::ZERO, CancellationToken::new()));
        let (ends, _ended) = mpsc::unbounded_channel();
        let senders: Vec<_> = (0..4)
            .map(|s| {
                let (lanes, ends) = (lanes.clone(), ends.clone());
                tokio::spawn(async move {
                    for i in 0..500 {
                        let answered = send(&lanes, &format!("r{}", (s + i) % 3), &ends);
                        if i % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                        timeout(SOON, answered).await.unwrap().unwrap();
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.unwrap();
        }
    }
}
