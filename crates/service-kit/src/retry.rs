//! Retrying with backoff until the work succeeds, gives up, or the service stops, on `backon`.
//!
//! The first attempt always runs, and an attempt in progress finishes (work in hand is done,
//! and a cancelled MongoDB operation can leave the driver's pool stalled); the stop signal
//! cuts a wait between attempts short, and no further attempt starts after it.

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exponential backoff from `min` to `max` with jitter (each wait between the step's delay
/// and twice it), without a limit on attempts.
pub fn exponential(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// Why [`until_stopped`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum Retried<E> {
    /// The last attempt's error, which `retry` declined to try again.
    #[error(transparent)]
    Failed(E),
    /// The stop signal fired first.
    #[error("stopped")]
    Stopped,
}

/// Runs `work` until it succeeds, backing off as `backoff` says. After a failure,
/// `retry(error, delay)` decides whether to try again after `delay` (and may log it).
pub async fn until_stopped<T, E, F, Fut>(
    backoff: impl BackoffBuilder,
    stop: &CancellationToken,
    mut work: F,
    mut retry: impl FnMut(&E, Duration) -> bool,
) -> Result<T, Retried<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let (checked, sleeping) = (stop.clone(), stop.clone());
    let mut first = true;
    let attempt = move || {
        let go = std::mem::take(&mut first) || !checked.is_cancelled();
        let started = go.then(&mut work);
        async move {
            match started {
                Some(work) => work.await.map_err(Retried::Failed),
                None => Err(Retried::Stopped),
            }
        }
    };
    attempt
        .retry(backoff)
        .sleep(move |delay| pause(sleeping.clone(), delay))
        .adjust(|error, delay| match (error, delay) {
            (Retried::Failed(error), Some(delay)) if retry(error, delay) => Some(delay),
            _ => None,
        })
        .await
}

/// Sleeps for `delay` or until `stop` fires; true if the whole delay passed.
pub async fn pause(stop: CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> ExponentialBuilder {
        exponential(Duration::from_millis(1), Duration::from_millis(2))
    }

    #[tokio::test]
    async fn retries_until_the_work_succeeds() {
        let tries = AtomicU32::new(0);
        let done = until_stopped(
            quick(),
            &CancellationToken::new(),
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err("not yet"),
                    n => Ok(n),
                }
            },
            |_, _| true,
        )
        .await;
        assert_eq!(done.unwrap(), 3);
    }

    #[tokio::test]
    async fn gives_up_when_told_to_with_the_last_error() {
        let done: Result<(), _> = until_stopped(
            quick(),
            &CancellationToken::new(),
            || async { Err(7) },
            |e, _| *e != 7,
        )
        .await;
        assert!(matches!(done, Err(Retried::Failed(7))));
    }

    #[tokio::test]
    async fn the_first_attempt_runs_even_when_stopped_and_no_retry_follows() {
        let stop = CancellationToken::new();
        stop.cancel();
        let tries = AtomicU32::new(0);
        let done: Result<(), _> = until_stopped(
            quick(),
            &stop,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err("down")
            },
            |_, _| true,
        )
        .await;
        assert!(matches!(done, Err(Retried::Stopped)));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_stop_signal_cuts_the_wait_short_and_starts_no_further_attempt() {
        let stop = CancellationToken::new();
        let tries = AtomicU32::new(0);
        let slow = exponential(Duration::from_secs(3600), Duration::from_secs(3600));
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stopper.cancel();
        });
        let done: Result<(), _> = tokio::time::timeout(
            Duration::from_secs(5),
            until_stopped(
                slow,
                &stop,
                || async {
                    tries.fetch_add(1, Ordering::SeqCst);
                    Err("down")
                },
                |_, _| true,
            ),
        )
        .await
        .expect("stopped promptly");
        assert!(matches!(done, Err(Retried::Stopped)));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
