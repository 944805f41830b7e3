//! MongoDB plumbing every service shares: connecting with sane timeouts, the readiness
//! ping, and bringing up a replica set (which transactions and change streams need) of one
//! member or several, for local runs and tests.

use backon::Retryable;
use futures::future::BoxFuture;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Database};
use secrecy::ExposeSecret;
use service_config::MongoConfig;
use std::time::Duration;

pub use mongodb;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("mongodb: {0}")]
    Driver(#[from] mongodb::error::Error),
    #[error("mongodb did not answer within {0:?}")]
    Timeout(Duration),
    #[error("replica set not writable after {0:?}: {1}")]
    NotPrimary(Duration, String),
}

/// A connected client and the database this service owns.
#[derive(Clone, Debug)]
pub struct Mongo {
    client: Client,
    db: Database,
}

impl Mongo {
    /// Parses the URI and builds the client; no I/O happens until the first operation, so a
    /// service can start (and report "not ready") while MongoDB is still coming up.
    pub async fn connect(config: &MongoConfig, app_name: &str) -> Result<Self, MongoError> {
        let mut options = ClientOptions::parse(config.uri.expose_secret()).await?;
        options.app_name = Some(app_name.to_owned());
        // Fail fast instead of the driver's 30 s: readiness and requests should report a
        // missing database promptly.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        // Every write the platform makes must survive a failover; reads inside transactions
        // see majority-committed data.
        options
            .write_concern
            .get_or_insert(WriteConcern::majority());
        options.read_concern.get_or_insert(ReadConcern::majority());
        let client = Client::with_options(options)?;
        let db = client.database(&config.database);
        Ok(Self { client, db })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// A readiness check: a `ping` bounded by 1 s.
    pub fn probe(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, Result<(), MongoError>> + Send + Sync + 'static {
        let mongo = self.clone();
        move || {
            let mongo = mongo.clone();
            Box::pin(async move { mongo.ping(Duration::from_secs(1)).await })
        }
    }

    /// One round trip to the server, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), MongoError> {
        tokio::time::timeout(timeout, self.db.run_command(doc! { "ping": 1 }))
            .await
            .map_err(|_| MongoError::Timeout(timeout))??;
        Ok(())
    }
}

/// A client for one member only (`directConnection`), whatever its role.
pub async fn direct_client(host_port: &str) -> Result<Client, MongoError> {
    let uri = format!("mongodb://{host_port}/?directConnection=true");
    let mut options = ClientOptions::parse(&uri).await?;
    options.server_selection_timeout = Some(Duration::from_secs(2));
    options.connect_timeout = Some(Duration::from_secs(2));
    Ok(Client::with_options(options)?)
}

/// Turns freshly started `mongod --replSet <name>` processes at `hosts` into one replica set
/// (the first host is asked), and waits until it has a primary and every member is a primary
/// or a secondary, so that majority writes go through. Harmless on a set that is already
/// initiated. `election_timeout` sets the set's `electionTimeoutMillis` (default 10 s): how
/// long the members wait for a lost primary before electing another.
pub async fn initiate_replica_set(
    hosts: &[String],
    set_name: &str,
    election_timeout: Option<Duration>,
    wait: Duration,
) -> Result<(), MongoError> {
    let first = hosts.first().map(String::as_str).unwrap_or_default();
    let admin = direct_client(first).await?.database("admin");
    let members: Vec<Document> = hosts
        .iter()
        .enumerate()
        .map(|(id, host)| doc! { "_id": id as i32, "host": host })
        .collect();
    let mut config = doc! { "_id": set_name, "members": members };
    if let Some(timeout) = election_timeout {
        config.insert(
            "settings",
            doc! { "electionTimeoutMillis": timeout.as_millis() as i64 },
        );
    }
    let deadline = tokio::time::Instant::now() + wait;
    let before_deadline = || tokio::time::Instant::now() < deadline;
    let initiated = (|| async {
        admin
            .run_command(doc! { "replSetInitiate": config.clone() })
            .await
    })
    .retry(every_100_ms())
    .when(|e| {
        tracing::debug!(error = %e, "mongod not ready for replSetInitiate yet");
        !already_initiated(e) && before_deadline()
    })
    .await;
    if let Err(e) = initiated
        && !already_initiated(&e)
    {
        return Err(e.into());
    }
    let members = || async {
        match replica_set_members(first).await {
            Ok(states) if settled(&states) => Ok(()),
            Ok(states) => Err(format!("members: {states:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    members
        .retry(every_100_ms())
        .when(|_| before_deadline())
        .await
        .map_err(|last| MongoError::NotPrimary(wait, last))
}

/// 23 AlreadyInitialized: someone (an earlier `up`) initiated the set before us.
fn already_initiated(error: &mongodb::error::Error) -> bool {
    command_error_code(error) == Some(23)
}

/// Polling a server that is coming up: every 100 ms, for as long as the caller allows.
fn every_100_ms() -> backon::ConstantBuilder {
    backon::ConstantBuilder::new()
        .with_delay(Duration::from_millis(100))
        .without_max_times()
}

/// One primary, and every other member a secondary.
fn settled(states: &[(String, String)]) -> bool {
    states.iter().filter(|(_, s)| s == "PRIMARY").count() == 1
        && states
            .iter()
            .all(|(_, s)| s == "PRIMARY" || s == "SECONDARY")
}

/// Each member of the replica set `host_port` belongs to, as `(host:port, state)`, the state
/// as `replSetGetStatus` names it (`PRIMARY`, `SECONDARY`, `STARTUP2`, `(not reachable/healthy)`,
/// ...), as that member sees the set.
pub async fn replica_set_members(host_port: &str) -> Result<Vec<(String, String)>, MongoError> {
    let admin = direct_client(host_port).await?.database("admin");
    let status = admin.run_command(doc! { "replSetGetStatus": 1 }).await?;
    let members = status
        .get_array("members")
        .map_err(|e| MongoError::NotPrimary(Duration::ZERO, format!("replSetGetStatus: {e}")))?;
    Ok(members
        .iter()
        .filter_map(|m| m.as_document())
        .map(|m| {
            (
                m.get_str("name").unwrap_or_default().to_owned(),
                m.get_str("stateStr").unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Whether the `mongod` at `host_port` answers at all (initiated or not).
pub async fn ping_member(host_port: &str, timeout: Duration) -> Result<(), MongoError> {
    let admin = direct_client(host_port).await?.database("admin");
    tokio::time::timeout(timeout, admin.run_command(doc! { "ping": 1 }))
        .await
        .map_err(|_| MongoError::Timeout(timeout))??;
    Ok(())
}

/// The server's error code, when the error is a command error.
pub fn command_error_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Whether a write failed on a unique index (E11000).
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::InsertMany(e) => e.write_errors.iter().flatten().any(|e| e.code == 11000),
        ErrorKind::Command(c) => c.code == 11000,
        _ => error
            .get_custom::<UpdateEachFailed>()
            .is_some_and(|e| e.code == 11000),
    }
}

/// Makes sure `collection` has the TTL index `name` on `field`, expiring documents `expire`
/// after that field's time. An index of that name with another expiry (the retention was
/// changed) is changed to this one in place (`collMod`), not refused.
pub async fn ensure_ttl_index<T: Send + Sync>(
    collection: &mongodb::Collection<T>,
    name: &str,
    field: &str,
    expire: Duration,
) -> Result<(), mongodb::error::Error> {
    let options = mongodb::options::IndexOptions::builder()
        .name(name.to_owned())
        .expire_after(expire)
        .build();
    let index = mongodb::IndexModel::builder()
        .keys(doc! { field: 1 })
        .options(options)
        .build();
    match collection.create_index(index).await {
        Ok(_) => Ok(()),
        // 85 IndexOptionsConflict: the same index with another expiry.
        Err(e) if command_error_code(&e) == Some(85) => {
            let seconds = i64::try_from(expire.as_secs()).unwrap_or(i64::MAX);
            collection
                .client()
                .database(&collection.namespace().db)
                .run_command(doc! {
                    "collMod": collection.name(),
                    "index": { "name": name, "expireAfterSeconds": seconds },
                })
                .await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The condition `from <= field < to` (milliseconds since the epoch; either end open), or
/// None when both ends are.
pub fn time_range(from: Option<i64>, to: Option<i64>) -> Option<Document> {
    let mut range = Document::new();
    if let Some(from) = from {
        range.insert("$gte", mongodb::bson::DateTime::from_millis(from));
    }
    if let Some(to) = to {
        range.insert("$lt", mongodb::bson::DateTime::from_millis(to));
    }
    (!range.is_empty()).then_some(range)
}

/// One page of `query`'s matches in `sort` order, and how many match in all.
pub async fn find_page<T>(
    collection: &mongodb::Collection<T>,
    query: Document,
    sort: Document,
    skip: u64,
    limit: u64,
) -> Result<(Vec<T>, u64), mongodb::error::Error>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    use futures::TryStreamExt;
    let total = collection.count_documents(query.clone()).await?;
    let items = collection
        .find(query)
        .sort(sort)
        .skip(skip)
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .await?
        .try_collect()
        .await?;
    Ok((items, total))
}

/// Every document `filter` matches, read inside the transaction of `session` (a cursor
/// opened in a session has to be driven with that session too).
pub async fn find_all<T>(
    collection: &mongodb::Collection<T>,
    filter: Document,
    session: &mut mongodb::ClientSession,
) -> Result<Vec<T>, mongodb::error::Error>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    use futures::TryStreamExt;
    collection
        .find(filter)
        .session(&mut *session)
        .await?
        .stream(&mut *session)
        .try_collect()
        .await
}

/// One statement of [`update_each`]: update the first document matching `query` with
/// `update`, inserting it when none matches and `upsert` is set.
pub fn update_statement(query: Document, update: Document, upsert: bool) -> Document {
    doc! { "q": query, "u": update, "upsert": upsert }
}

/// What [`update_each`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateEach {
    /// Statements that matched a document or upserted one.
    pub matched: i64,
    pub modified: i64,
}

/// Several single-document updates of one collection in one `update` command: one round
/// trip instead of one per document, applied in order (MongoDB before 8.0 has no
/// client-wide bulk write, and the driver's `update_one` sends a command per document).
///
/// A statement that fails (a duplicate key on upsert, say) fails the whole call, so inside a
/// transaction nothing of it sticks. With no statements nothing is sent.
pub async fn update_each(
    db: &Database,
    collection: &str,
    statements: Vec<Document>,
    session: &mut mongodb::ClientSession,
) -> Result<UpdateEach, mongodb::error::Error> {
    if statements.is_empty() {
        return Ok(UpdateEach {
            matched: 0,
            modified: 0,
        });
    }
    let reply = db
        .run_command(doc! { "update": collection, "updates": statements, "ordered": true })
        .session(session)
        .await?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && let Some(first) = errors.first().and_then(|e| e.as_document())
    {
        let code = first.get_i32("code").unwrap_or_default();
        let message = first.get_str("errmsg").unwrap_or_default();
        return Err(mongodb::error::Error::custom(UpdateEachFailed {
            collection: collection.to_owned(),
            code,
            message: message.to_owned(),
        }));
    }
    let count = |field: &str| match reply.get(field) {
        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        _ => 0,
    };
    Ok(UpdateEach {
        matched: count("n"),
        modified: count("nModified"),
    })
}

/// A statement of [`update_each`] the server refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("update of {collection} refused ({code}): {message}")]
pub struct UpdateEachFailed {
    pub collection: String,
    pub code: i32,
    pub message: String,
}
