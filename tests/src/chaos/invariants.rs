//! What must hold after a chaos run, read from the services' databases and from what the
//! harness recorded. Everything is scoped to the run (its event, its players, what was
//! written since it began), so an instance that served other work before still gives a
//! clean table.

use super::journal::{ClaimEnd, Journal};
use super::setup::Setup;
use futures::TryStreamExt;
use mongo_kit::mongodb::Database;
use mongo_kit::mongodb::bson::{Bson, DateTime, Document, doc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One row of the invariant table.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was checked, or the first violations.
    pub detail: String,
}

impl Check {
    /// Passes when `violations` is empty; shows the first few of them otherwise.
    fn of(name: &'static str, checked: String, violations: Vec<String>) -> Self {
        let ok = violations.is_empty();
        let detail = if ok {
            checked
        } else {
            let shown: Vec<&String> = violations.iter().take(5).collect();
            format!("{} violation(s): {shown:?}", violations.len())
        };
        Self { name, ok, detail }
    }
}

/// The databases of the instance's services.
pub struct Databases {
    pub event: Database,
    pub reward: Database,
    pub auth: Database,
}

impl Databases {
    pub async fn connect() -> anyhow::Result<Self> {
        let config = service_config::MongoConfig::new(
            &test_support::required(test_support::MONGO_URI),
            "event_db",
        );
        let mongo = mongo_kit::Mongo::connect(&config, "chaos").await?;
        let client = mongo.client();
        Ok(Self {
            event: client.database("event_db"),
            reward: client.database("reward_db"),
            auth: client.database("auth_db"),
        })
    }

    fn all(&self) -> [&Database; 3] {
        [&self.event, &self.reward, &self.auth]
    }

    /// The run's claims, as stored.
    pub async fn claims(&self, event: &str) -> anyhow::Result<Vec<Document>> {
        all(&self.event, "claims", doc! { "eventId": event }).await
    }

    /// Claims still PENDING.
    pub async fn pending(&self, event: &str) -> anyhow::Result<u64> {
        Ok(self
            .event
            .collection::<Document>("claims")
            .count_documents(doc! { "eventId": event, "status": "PENDING" })
            .await?)
    }

    /// Outbox entries written since `since` and not yet published, per database.
    pub async fn unpublished(&self, since: DateTime) -> anyhow::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for db in self.all() {
            let count = db
                .collection::<Document>("outbox")
                .count_documents(doc! { "published": false, "createdAt": { "$gte": since } })
                .await?;
            out.push((db.name().to_owned(), count));
        }
        Ok(out)
    }

    /// Each player's counted quests in the run's event.
    pub async fn quests(&self, event: &str) -> anyhow::Result<HashMap<String, i64>> {
        let progress = all(&self.event, "progress", doc! { "eventId": event }).await?;
        Ok(progress
            .iter()
            .map(|p| {
                let counts = p.get_document("counts").ok();
                let quests = counts.and_then(|c| c.get("quest")).map_or(0, number);
                (text(p, "userId"), quests)
            })
            .collect())
    }
}

async fn all(db: &Database, collection: &str, filter: Document) -> anyhow::Result<Vec<Document>> {
    Ok(db
        .collection::<Document>(collection)
        .find(filter)
        .await?
        .try_collect()
        .await?)
}

fn text(doc: &Document, field: &str) -> String {
    doc.get_str(field).unwrap_or_default().to_owned()
}

/// The distinct values of a text field.
fn distinct(docs: &[Document], name: &str) -> Vec<String> {
    let values: HashSet<String> = docs.iter().map(|d| text(d, name)).collect();
    values.into_iter().collect()
}

fn number(value: &Bson) -> i64 {
    match value {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        Bson::Double(n) => *n as i64,
        _ => 0,
    }
}

fn field(doc: &Document, name: &str) -> i64 {
    doc.get(name).map_or(0, number)
}

/// Every invariant of the issue, in the order the report shows them.
pub async fn check(
    setup: &Setup,
    journal: &Journal,
    dbs: &Databases,
) -> anyhow::Result<Vec<Check>> {
    let claims = dbs.claims(&setup.event).await?;
    let made = journal.claims();
    let grants = all(&dbs.reward, "grants", doc! { "eventId": &setup.event }).await?;
    let mut checks = vec![
        accepted_claims_kept(&claims, &made),
        keys_stand_for_one_claim(&claims, &made),
        refusals_expected(&made, &journal.banned()),
        one_grant_per_success(&claims, &grants),
    ];
    checks.push(stock_matches_claims(setup, dbs, &claims).await?);
    checks.push(per_user_limits_hold(setup, dbs, &claims).await?);
    checks.push(wallets_match_grants(setup, dbs, &claims).await?);
    checks.push(activity_counted_once(setup, journal, dbs).await?);
    checks.push(dead_letters_only_poison(journal, dbs).await?);
    checks.push(outboxes_drained(journal, dbs).await?);
    checks.push(answers_kept_promises(journal));
    Ok(checks)
}

/// Every claim answered 202/200 exists and is terminal (none lost, none stuck).
fn accepted_claims_kept(claims: &[Document], made: &[super::journal::ClaimMade]) -> Check {
    let status: HashMap<String, String> = claims
        .iter()
        .map(|c| (text(c, "_id"), text(c, "status")))
        .collect();
    let mut violations = Vec::new();
    let mut accepted = 0;
    for claim in made {
        let ClaimEnd::Accepted { claim_id } = &claim.end else {
            continue;
        };
        accepted += 1;
        match status.get(claim_id).map(String::as_str) {
            None => violations.push(format!("{claim_id} was accepted and is not stored")),
            Some("PENDING") => violations.push(format!("{claim_id} is still PENDING")),
            Some(_) => {}
        }
    }
    let stuck = claims
        .iter()
        .filter(|c| text(c, "status") == "PENDING")
        .count();
    if stuck > 0 {
        violations.push(format!("{stuck} stored claim(s) still PENDING"));
    }
    Check::of(
        "every accepted claim is stored and terminal",
        format!("{accepted} accepted, {} stored, all terminal", claims.len()),
        violations,
    )
}

/// A key answered twice names one claim, and every stored claim has a key the harness sent.
fn keys_stand_for_one_claim(claims: &[Document], made: &[super::journal::ClaimMade]) -> Check {
    let mut by_key: HashMap<(&str, &str), &str> = HashMap::new();
    let mut violations = Vec::new();
    for claim in made {
        if let ClaimEnd::Accepted { claim_id } = &claim.end {
            let first = by_key.entry((&claim.user, &claim.key)).or_insert(claim_id);
            if first != claim_id {
                violations.push(format!("key {} answered {first} and {claim_id}", claim.key));
            }
        }
    }
    let sent: HashSet<(&str, &str)> = made
        .iter()
        .map(|c| (c.user.as_str(), c.key.as_str()))
        .collect();
    let mut stored: HashMap<(&str, &str), usize> = HashMap::new();
    for claim in claims {
        let key = (
            claim.get_str("userId").unwrap_or(""),
            claim.get_str("idempotencyKey").unwrap_or(""),
        );
        if !sent.contains(&key) {
            violations.push(format!(
                "stored claim {} has a key nobody sent",
                text(claim, "_id")
            ));
        }
        *stored.entry(key).or_default() += 1;
    }
    for ((user, key), count) in stored.into_iter().filter(|(_, n)| *n > 1) {
        violations.push(format!("{count} claims stored for {user}'s key {key}"));
    }
    Check::of(
        "one claim per idempotency key, no claim nobody made",
        format!("{} keys answered with a claim", by_key.len()),
        violations,
    )
}

/// Every refusal is one the run provokes: stock run out, a limit reached, and for banned
/// players their ban. The harness sends the same body with each key, so anything else (a
/// reused key, a validation error, a player refused for no reason) is a bug.
fn refusals_expected(made: &[super::journal::ClaimMade], banned: &HashSet<String>) -> Check {
    let mut refused = 0;
    let mut violations = Vec::new();
    for claim in made {
        let ClaimEnd::Refused { code } = &claim.end else {
            continue;
        };
        refused += 1;
        let expected = matches!(code.as_str(), "out_of_stock" | "claim_limit_reached")
            || (banned.contains(&claim.user)
                && matches!(code.as_str(), "user_not_allowed" | "token_revoked"));
        if !expected {
            violations.push(format!(
                "{} refused with {code:?} (key {})",
                claim.user, claim.key
            ));
        }
    }
    Check::of(
        "every refusal is expected: out of stock, limit reached, or banned",
        format!("{refused} refusals"),
        violations,
    )
}

/// The ledger holds one successful grant per SUCCEEDED claim, none for any other claim.
fn one_grant_per_success(claims: &[Document], grants: &[Document]) -> Check {
    let mut succeeded: HashMap<String, usize> = HashMap::new();
    for grant in grants.iter().filter(|g| text(g, "outcome") == "SUCCEEDED") {
        *succeeded.entry(text(grant, "claimId")).or_default() += 1;
    }
    let status: HashMap<String, String> = claims
        .iter()
        .map(|c| (text(c, "_id"), text(c, "status")))
        .collect();
    let mut violations = Vec::new();
    for (claim, status) in &status {
        let granted = succeeded.get(claim).copied().unwrap_or(0);
        let expected = usize::from(status == "SUCCEEDED");
        if granted != expected {
            violations.push(format!(
                "{status} claim {claim} has {granted} successful grant(s)"
            ));
        }
    }
    for claim in succeeded.keys().filter(|c| !status.contains_key(*c)) {
        violations.push(format!("a grant for claim {claim}, which does not exist"));
    }
    let done = status.values().filter(|s| *s == "SUCCEEDED").count();
    Check::of(
        "exactly one grant per SUCCEEDED claim, none for others",
        format!(
            "{done} SUCCEEDED claims, {} successful grants",
            succeeded.values().sum::<usize>()
        ),
        violations,
    )
}

fn holds_stock(claim: &Document) -> bool {
    matches!(claim.get_str("status"), Ok("PENDING" | "SUCCEEDED"))
}

/// Each reward's `reserved` is what its PENDING and SUCCEEDED claims hold, within its stock.
async fn stock_matches_claims(
    setup: &Setup,
    dbs: &Databases,
    claims: &[Document],
) -> anyhow::Result<Check> {
    let rewards = all(&dbs.event, "rewards", doc! { "eventId": &setup.event }).await?;
    let mut held: HashMap<String, i64> = HashMap::new();
    for claim in claims.iter().filter(|c| holds_stock(c)) {
        *held.entry(text(claim, "rewardId")).or_default() += 1;
    }
    let mut violations = Vec::new();
    let mut shown = Vec::new();
    for reward in &rewards {
        let id = text(reward, "_id");
        let name = setup.reward(&id).map_or("?", |r| r.name);
        let reserved = field(reward, "reserved");
        let holding = held.get(&id).copied().unwrap_or(0);
        if reserved != holding {
            violations.push(format!(
                "{name}: reserved {reserved}, claims hold {holding}"
            ));
        }
        if let Ok(total) = reward
            .get_i64("totalStock")
            .or_else(|_| reward.get_i32("totalStock").map(i64::from))
        {
            if reserved > total {
                violations.push(format!(
                    "{name}: reserved {reserved} above its stock {total}"
                ));
            }
            shown.push(format!("{name} {reserved}/{total}"));
        } else {
            shown.push(format!("{name} {reserved}"));
        }
    }
    Ok(Check::of(
        "reserved = units of PENDING and SUCCEEDED claims, never above totalStock",
        shown.join(", "),
        violations,
    ))
}

/// No player holds more claims of a reward than its limit, and the per-user counters agree.
async fn per_user_limits_hold(
    setup: &Setup,
    dbs: &Databases,
    claims: &[Document],
) -> anyhow::Result<Check> {
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for claim in claims.iter().filter(|c| holds_stock(c)) {
        let id = format!("{}:{}", text(claim, "userId"), text(claim, "rewardId"));
        *held.entry(id).or_default() += 1;
    }
    let reward_ids = distinct(claims, "rewardId");
    let ids: Vec<String> = distinct(claims, "userId")
        .iter()
        .flat_map(|u| reward_ids.iter().map(move |r| format!("{u}:{r}")))
        .collect();
    let counters: HashMap<String, i64> =
        all(&dbs.event, "claim_limits", doc! { "_id": { "$in": &ids } })
            .await?
            .iter()
            .map(|l| (text(l, "_id"), field(l, "count")))
            .collect();
    let mut violations = Vec::new();
    for id in &ids {
        let holding = held.get(id).copied().unwrap_or(0);
        let counted = counters.get(id).copied().unwrap_or(0);
        let reward = id.rsplit(':').next().unwrap_or_default();
        let limit = setup.reward(reward).map_or(1, |r| r.per_user_limit);
        if holding > limit {
            violations.push(format!("{id}: {holding} claims held, limit {limit}"));
        }
        if holding != counted {
            violations.push(format!(
                "{id}: {holding} claims held, counter says {counted}"
            ));
        }
    }
    Ok(Check::of(
        "per-user limits hold (and their counters match the claims)",
        format!("{} player-reward pairs", held.len()),
        violations,
    ))
}

/// Each player's wallet holds the points of their SUCCEEDED point claims, once each (and
/// nothing for a player none of whose claims succeeded).
async fn wallets_match_grants(
    setup: &Setup,
    dbs: &Databases,
    claims: &[Document],
) -> anyhow::Result<Check> {
    let amount = |reward: &str| match setup.reward(reward).map(|r| r.name) {
        Some("points") => 5,
        Some("probe") => 1,
        _ => 0,
    };
    let mut expected: HashMap<String, i64> = setup
        .players
        .iter()
        .chain(&setup.probers)
        .map(|p| (p.id.clone(), 0))
        .collect();
    for claim in claims.iter().filter(|c| text(c, "status") == "SUCCEEDED") {
        *expected.entry(text(claim, "userId")).or_default() += amount(&text(claim, "rewardId"));
    }
    let users: Vec<&String> = expected.keys().collect();
    let wallets: HashMap<String, i64> =
        all(&dbs.reward, "wallets", doc! { "_id": { "$in": &users } })
            .await?
            .iter()
            .map(|w| (text(w, "_id"), field(w, "points")))
            .collect();
    let violations = expected
        .iter()
        .filter_map(|(user, points)| {
            let held = wallets.get(user).copied().unwrap_or(0);
            (held != *points).then(|| format!("{user}: wallet {held}, claims granted {points}"))
        })
        .collect();
    Ok(Check::of(
        "wallets hold exactly the points of SUCCEEDED claims",
        format!("{} wallets", expected.len()),
        violations,
    ))
}

/// Every activity id a broker acknowledged counts once in the player's progress, deliberate
/// duplicates and redeliveries included.
async fn activity_counted_once(
    setup: &Setup,
    journal: &Journal,
    dbs: &Databases,
) -> anyhow::Result<Check> {
    let counted = dbs.quests(&setup.event).await?;
    let produced = journal.activity();
    let mut violations = Vec::new();
    for (user, ids) in &produced {
        let seen = counted.get(user).copied().unwrap_or(0);
        if seen != ids.len() as i64 {
            violations.push(format!("{user}: {} produced, {seen} counted", ids.len()));
        }
    }
    let total: usize = produced.values().map(HashSet::len).sum();
    Ok(Check::of(
        "every produced activity id is counted exactly once",
        format!(
            "{total} ids ({} sent twice on purpose) for {} players",
            journal.duplicates_sent(),
            produced.len()
        ),
        violations,
    ))
}

/// The only dead letters since the run began are the deliberate poison records, one each.
async fn dead_letters_only_poison(journal: &Journal, dbs: &Databases) -> anyhow::Result<Check> {
    let poison: HashSet<String> = journal.poison_keys().into_iter().collect();
    let mut found: HashMap<String, usize> = HashMap::new();
    let mut violations = Vec::new();
    let since = doc! { "firstFailureAt": { "$gte": journal.started_at } };
    for db in dbs.all() {
        for letter in all(db, "dead_letters", since.clone()).await? {
            let key = text(&letter, "key");
            if poison.contains(&key) {
                *found.entry(key).or_default() += 1;
            } else {
                violations.push(format!(
                    "{}: {} at {}[{}]@{} ({}: {})",
                    db.name(),
                    text(&letter, "_id"),
                    text(&letter, "topic"),
                    field(&letter, "partition"),
                    field(&letter, "offset"),
                    text(&letter, "errorClass"),
                    text(&letter, "error"),
                ));
            }
        }
    }
    for key in &poison {
        match found.get(key) {
            Some(1) => {}
            Some(n) => violations.push(format!("poison {key} dead-lettered {n} times")),
            None => violations.push(format!("poison {key} was never dead-lettered")),
        }
    }
    Ok(Check::of(
        "no dead letter but the deliberate poison records",
        format!("{} poison records, each dead-lettered once", poison.len()),
        violations,
    ))
}

async fn outboxes_drained(journal: &Journal, dbs: &Databases) -> anyhow::Result<Check> {
    let violations = dbs
        .unpublished(journal.started_at)
        .await?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(db, n)| format!("{db}: {n} unpublished"))
        .collect();
    Ok(Check::of(
        "every outbox is drained",
        "auth_db, event_db, reward_db".into(),
        violations,
    ))
}

/// No 500 or 504 (nor 502 in a cluster), and every 503 a problem with Retry-After.
fn answers_kept_promises(journal: &Journal) -> Check {
    let answers: u64 = journal.answers().values().sum();
    let (count, first) = journal.bad_answers();
    Check {
        name: "no 500 or 504 (no 502 in a cluster); every 503 has Retry-After",
        ok: count == 0,
        detail: if count == 0 {
            format!("{answers} answers")
        } else {
            format!("{count} violation(s), the first: {first:?}")
        },
    }
}

/// What clients and operators saw while each fault lasted (issue: "what clients see during a
/// fault stays sane"):
/// - `/readyz` of the services said so within 5 s when a single instance lost a
///   dependency, and every service was ready again afterwards without being restarted;
/// - claims were still accepted while a single instance's only broker was down (the outbox
///   holds their commands);
/// - claims still succeeded while the registry was down (every schema was already seen).
pub fn during_faults(single: bool, faults: &[super::faults::FaultRecord]) -> Vec<Check> {
    use super::faults::FaultKind;
    let mut readiness = Vec::new();
    let mut working = Vec::new();
    for fault in faults {
        let what = format!(
            "{} of {} at {:.1}s",
            fault.kind.name(),
            fault.target,
            fault.injected_at
        );
        if single && fault.kind.takes_a_dependency() {
            match fault.unready_after {
                Some(after) if after <= 5.0 => {}
                Some(after) => {
                    readiness.push(format!("{what}: /readyz failed only after {after:.1}s"))
                }
                None => readiness.push(format!("{what}: /readyz never failed")),
            }
        }
        if fault.unready_after.is_some() && fault.ready_again_after.is_none() {
            readiness.push(format!(
                "{what}: a service was still not ready 30 s after it settled"
            ));
        }
        if fault.recovered_after.is_none() {
            working.push(format!("{what}: no claim succeeded after it, within 2 min"));
        }
        let accepted = fault.answers_during.get(&202).copied().unwrap_or(0);
        if single && fault.kind == FaultKind::BrokerKill && accepted == 0 {
            working.push(format!("{what}: no claim accepted while Kafka was down"));
        }
        if fault.kind == FaultKind::RegistryDown && fault.succeeded_during == 0 {
            working.push(format!(
                "{what}: no claim succeeded while the registry was down"
            ));
        }
    }
    let readiness_checked = faults
        .iter()
        .map(|f| match (f.unready_after, f.ready_again_after) {
            (Some(down), Some(up)) => format!("{} {down:.1}s/{up:.1}s", f.kind.name()),
            _ => format!("{} stayed ready", f.kind.name()),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let working_checked = faults
        .iter()
        .map(|f| {
            let accepted = f.answers_during.get(&202).copied().unwrap_or(0);
            format!(
                "{}: {accepted} accepted, {} probes succeeded",
                f.kind.name(),
                f.succeeded_during
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    vec![
        Check::of(
            "/readyz shows a lost dependency within 5 s and recovers without a restart",
            format!("unready after / ready again after: {readiness_checked}"),
            readiness,
        ),
        Check::of(
            "claims recover after each fault, go on while Kafka or the registry is down",
            working_checked,
            working,
        ),
    ]
}
