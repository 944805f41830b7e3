//! One-time start-up work that needs the database (indexes, seed data): run in the
//! background, retried until it succeeds, and reported by `/readyz` until then. A service so
//! starts (and says why it is not ready) while its database is still coming up.

use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Middleware answering 503 until the gate opens.
pub async fn require_started(
    axum::extract::State(gate): axum::extract::State<StartupGate>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if gate.is_open() {
        next.run(request).await
    } else {
        crate::Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "The service is still starting; try again shortly",
        )
        .into_response()
    }
}

/// Whether the start-up work has finished.
#[derive(Clone, Default)]
pub struct StartupGate(Arc<AtomicBool>);

impl StartupGate {
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A readiness check that passes once the work is done.
    pub fn probe(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, Result<(), &'static str>> + Send + Sync + 'static {
        let gate = self.clone();
        move || {
            let open = gate.is_open();
            Box::pin(async move {
                if open {
                    Ok(())
                } else {
                    Err("start-up work (indexes, seed data) not done yet")
                }
            })
        }
    }

    /// Runs `work` until it succeeds (backing off from 100 ms to 5 s between attempts) or
    /// `stop` fires, then opens the gate.
    pub fn run<F, E>(&self, stop: CancellationToken, work: F)
    where
        F: FnMut() -> BoxFuture<'static, Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let gate = self.clone();
        tokio::spawn(async move {
            let backoff =
                crate::retry::exponential(Duration::from_millis(100), Duration::from_secs(5));
            let done = crate::retry::until_stopped(backoff, &stop, work, |e, retry_in| {
                tracing::warn!(error = %e, ?retry_in, "start-up work failed");
                true
            })
            .await;
            if done.is_ok() {
                gate.0.store(true, Ordering::Release);
                tracing::info!("start-up work done");
            }
        });
    }
}
