//! The wiring every backend service shares, declared once: a service says what it publishes,
//! what it consumes, its own routes, background tasks and start-up work, and [`Backend`]
//! does the rest: the dependencies and their readiness checks, the outbox relay, one
//! consumer runner per group with the dead letters and their admin routes, the start-up gate
//! (dead-letter and inbox indexes, the outbox's indexes and topics, the schemas it publishes
//! and consumes, then the service's own work), and the stop signal every task watches.

use crate::{Deps, DepsConfig, DepsError};
use audit::Audit;
use auth_claims::IdentityKey;
use axum::Router;
use contracts::ContractSchema;
use futures::future::BoxFuture;
use messaging::consumer::{ConsumerConfig, ConsumerRunner, Handler, InboxConfig};
use messaging::dlq::{DeadLetters, DlqError};
use messaging::outbox::{Outbox, Relay, RelayConfig, RelayError};
use mongo_kit::mongodb::Database;
use service_config::catalog::ServiceSpec;
use service_config::{HttpConfig, KafkaConfig};
use service_kit::startup::StartupGate;
use service_kit::{App, Server};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Any error of a service's own start-up work.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A task that runs until the stop signal it is given fires.
type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A service's own start-up work; called again until it succeeds.
type Work = Arc<dyn Fn() -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Deps(#[from] DepsError),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
    /// Consumers were declared without the service's inbox settings.
    #[error("the service consumes messages but declares no inbox settings")]
    NoInbox,
}

/// Start-up work that failed (and is tried again).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("dead-letter indexes: {0}")]
    DeadLetters(#[from] DlqError),
    #[error("audit indexes: {0}")]
    Audit(#[source] mongo_kit::mongodb::error::Error),
    #[error("inbox indexes: {0}")]
    Inbox(#[source] mongo_kit::mongodb::error::Error),
    #[error("outbox, topics and schemas: {0}")]
    Relay(#[from] RelayError),
    #[error("registering the consumed schema {subject}: {source}")]
    Consumed {
        subject: String,
        #[source]
        source: messaging::registry::RegistryError,
    },
    #[error(transparent)]
    Service(BoxError),
}

/// What a service publishes, through its outbox and relay.
#[derive(Clone)]
struct Publishing {
    relay: RelayConfig,
    schemas: Vec<ContractSchema>,
}

/// Builds a backend service's [`App`] from what the service declares.
pub struct Backend {
    name: &'static str,
    deps: Deps,
    kafka: KafkaConfig,
    identity: IdentityKey,
    dead_letters: DeadLetters,
    audit: Audit,
    publishing: Option<Publishing>,
    inbox: Option<InboxConfig>,
    consumers: Vec<Task>,
    /// The contracts the consumers read, with the topic they read them from.
    consumed: Vec<(String, ContractSchema)>,
    background: Vec<Task>,
    work: Option<Work>,
}

impl Backend {
    /// Makes the clients of the service's dependencies (no I/O yet). `identity` checks the
    /// identity assertions of the dead-letter admin routes.
    pub async fn connect(
        spec: &ServiceSpec,
        config: &DepsConfig,
        identity: IdentityKey,
    ) -> Result<Self, ServiceError> {
        let deps = Deps::connect(config, spec.name).await?;
        let audit = Audit::new(deps.mongo.db(), spec.name);
        let dead_letters = DeadLetters::new(
            deps.mongo.db(),
            deps.producer.clone(),
            deps.registry.clone(),
            audit.clone(),
        );
        Ok(Self {
            name: spec.name,
            deps,
            kafka: config.kafka.clone(),
            identity,
            dead_letters,
            audit,
            publishing: None,
            inbox: None,
            consumers: Vec::new(),
            consumed: Vec::new(),
            background: Vec::new(),
            work: None,
        })
    }

    pub fn deps(&self) -> &Deps {
        &self.deps
    }

    /// The service's own database.
    pub fn db(&self) -> &Database {
        self.deps.mongo.db()
    }

    /// Where the service records its staff's actions (served at `GET /audit`).
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// Where the service writes what it publishes (see [`Self::publishes`]).
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.db(), self.deps.registry.clone(), self.name)
    }

    /// The service publishes `schemas` through its outbox: the relay runs with `relay`, and
    /// start-up prepares the outbox, the topics and these schemas.
    pub fn publishes(mut self, relay: RelayConfig, schemas: &[ContractSchema]) -> Self {
        self.publishing = Some(Publishing {
            relay,
            schemas: schemas.to_vec(),
        });
        self
    }

    /// The inbox every consumer of the service shares (required when it consumes).
    pub fn inbox(mut self, config: InboxConfig) -> Self {
        self.inbox = Some(config);
        self
    }

    /// Runs `handler` over `topic` as consumer group `group`. A consumer that dies is logged
    /// (and readiness reports the dependency it lost). Start-up registers the contracts the
    /// handler reads under `topic`'s subjects, so producers outside the platform may run with
    /// automatic schema registration off.
    pub fn consumes<H: Handler>(
        mut self,
        group: &'static str,
        topic: &str,
        config: &ConsumerConfig,
        handler: H,
    ) -> Self {
        self.consumed.extend(
            <H::Message as messaging::consumer::Decode>::SCHEMAS
                .iter()
                .map(|schema| (topic.to_owned(), *schema)),
        );
        let runner = ConsumerRunner::new(
            group,
            &[topic],
            self.kafka.clone(),
            config.clone(),
            handler,
            self.deps.registry.clone(),
            self.deps.mongo.clone(),
            self.dead_letters.clone(),
        );
        self.consumers.push(Box::new(move |stop| {
            Box::pin(async move {
                if let Err(e) = runner.run(stop).await {
                    tracing::error!(group, error = %e, "consumer stopped");
                }
            })
        }));
        self
    }

    /// Runs `task` beside the server until the stop signal it is given fires.
    pub fn background<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push(Box::new(move |stop| Box::pin(task(stop))));
        self
    }

    /// The service's own start-up work (indexes, seed data), run after the shared work and
    /// called again until it succeeds; the service's routes answer 503 until then.
    pub fn prepare<F, E>(mut self, work: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), E>> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        self.work = Some(Arc::new(move || {
            let done = work();
            Box::pin(async move { done.await.map_err(Into::into) })
        }));
        self
    }

    /// Binds the listener and starts everything declared; the [`App`] serves `routes` (plus
    /// the dead-letter admin routes when the service consumes) once run.
    pub async fn serve(self, http: &HttpConfig, routes: Router) -> Result<App, ServiceError> {
        messaging::metrics::describe_metrics();
        service_kit::metrics::describe_metrics();
        let inbox = if self.consumers.is_empty() {
            None
        } else {
            Some(self.inbox.clone().ok_or(ServiceError::NoInbox)?)
        };
        let routes = routes.merge(audit::routes(self.audit.clone(), self.identity.clone()));
        let routes = if self.consumers.is_empty() {
            routes
        } else {
            routes.merge(messaging::dlq::routes(
                self.name,
                self.dead_letters.clone(),
                self.identity.clone(),
            ))
        };
        let gate = StartupGate::default();
        let server = Server::bind(http).await?;
        let mut app =
            App::new(self.name, server, routes, self.deps.readiness()).gated_by(gate.clone());
        let stop = app.shutdown_handle().token();
        if let Some(publishing) = &self.publishing {
            let relay = Relay::new(
                self.db(),
                self.deps.producer.clone(),
                publishing.relay.clone(),
                self.name,
            );
            app.spawn_background(relay.run(stop.clone()));
        }
        if !self.consumers.is_empty() {
            let letters = self.dead_letters.clone();
            app.spawn_background(letters.count_pending(self.name, stop.clone()));
        }
        for task in self.consumers.into_iter().chain(self.background) {
            app.spawn_background(task(stop.clone()));
        }
        let shared = SharedWork {
            db: self.deps.mongo.db().clone(),
            kafka: self.kafka,
            registry: self.deps.registry.clone(),
            dead_letters: self.dead_letters,
            audit: self.audit,
            inbox,
            consumed: self.consumed,
            publishing: self.publishing,
            own: self.work,
        };
        gate.run(stop, move || {
            let shared = shared.clone();
            Box::pin(async move { shared.run().await })
        });
        Ok(app)
    }
}

/// The start-up work: what every service needs for what it declared, then its own.
#[derive(Clone)]
struct SharedWork {
    db: Database,
    kafka: KafkaConfig,
    registry: Arc<messaging::SchemaRegistry>,
    dead_letters: DeadLetters,
    audit: Audit,
    /// Set when the service consumes.
    inbox: Option<InboxConfig>,
    consumed: Vec<(String, ContractSchema)>,
    publishing: Option<Publishing>,
    own: Option<Work>,
}

impl SharedWork {
    async fn run(&self) -> Result<(), PrepareError> {
        self.audit
            .ensure_indexes()
            .await
            .map_err(PrepareError::Audit)?;
        if let Some(inbox) = &self.inbox {
            self.dead_letters.ensure_indexes().await?;
            messaging::consumer::ensure_inbox_indexes(&self.db, inbox)
                .await
                .map_err(PrepareError::Inbox)?;
        }
        for (topic, schema) in &self.consumed {
            let subject = messaging::SchemaRegistry::subject(topic, schema);
            let id = self
                .registry
                .register(topic, schema)
                .await
                .map_err(|source| PrepareError::Consumed {
                    subject: subject.clone(),
                    source,
                })?;
            tracing::info!(subject, id, "consumed schema registered");
        }
        if let Some(publishing) = &self.publishing {
            Relay::prepare(
                &self.db,
                &publishing.relay,
                &self.kafka,
                &self.registry,
                &publishing.schemas,
            )
            .await?;
        }
        match &self.own {
            Some(work) => work().await.map_err(PrepareError::Service),
            None => Ok(()),
        }
    }
}
