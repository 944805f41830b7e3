//! Turning SIGTERM / ctrl-c into a cancellation every part of a service watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The process-wide stop signal: cancelled on SIGTERM or SIGINT, or by hand (tests).
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token when the process receives SIGTERM or SIGINT.
    ///
    /// The handlers are registered before this returns (not in the spawned task), so a signal
    /// that arrives right after start-up is never met by the default action (exit by signal).
    pub fn on_signals(self) -> Self {
        let token = self.0.clone();
        let streams = signal(SignalKind::terminate())
            .and_then(|term| signal(SignalKind::interrupt()).map(|int| (term, int)));
        match streams {
            Ok((mut term, mut int)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = int.recv() => tracing::info!("SIGINT received"),
                    }
                    token.cancel();
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot handle signals; stop with the handle"),
        }
        self
    }

    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }
}
