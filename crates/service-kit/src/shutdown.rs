//! Turning SIGTERM / ctrl-c into a cancellation every part of a service watches.

use tokio_util::sync::CancellationToken;

/// The process-wide stop signal: cancelled on SIGTERM or ctrl-c, or by hand (tests).
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token when the process receives SIGTERM or SIGINT.
    pub fn on_signals(self) -> Self {
        let token = self.0.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            token.cancel();
        });
        self
    }

    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
