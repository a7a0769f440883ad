//! The one retry policy, and where retries are counted. The AWS SDK retries each
//! request under it (`connection` configures the SDK from these numbers); what the SDK
//! cannot retry (items a batch left unprocessed, a streamed object to send again) is
//! retried here under the same backoff. Every retry is counted for the operation under
//! way, which reports them as `retries` and `throttles`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use backon::{BackoffBuilder, ExponentialBuilder};

/// Attempts per request. Each retry waits its own exponential backoff with jitter,
/// capped at `MAX_BACKOFF`, while the other requests in flight go on: a steady share of
/// throttled requests slows only those requests, not the whole run.
pub(crate) const MAX_ATTEMPTS: u32 = 12;
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Attempts at a whole streamed object (each of whose requests has its own).
pub(crate) const OBJECT_ATTEMPTS: usize = 3;

/// The backoff between attempts, `attempts` in all.
pub(crate) fn backoff(attempts: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(INITIAL_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(attempts.saturating_sub(1))
}

/// Sends `pending` with `attempt` until nothing is left unprocessed, backing off
/// between attempts; each attempt's answer is kept. A batch the service leaves wholly
/// unprocessed `MAX_ATTEMPTS` times in a row (it is throttling every request) fails the
/// run instead of hanging it; any progress starts the count again.
pub(crate) async fn until_processed<T, R, F, Fut>(
    mut pending: Vec<T>,
    mut attempt: F,
) -> Result<Vec<R>>
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<(R, Vec<T>)>>,
{
    let mut answers = Vec::new();
    let mut delays = backoff(MAX_ATTEMPTS as usize).build();
    while !pending.is_empty() {
        let sent = pending.len();
        let (answer, left) = attempt(pending).await?;
        answers.push(answer);
        pending = left;
        if pending.is_empty() {
            break;
        }
        Attempts::record(true);
        if pending.len() < sent {
            delays = backoff(MAX_ATTEMPTS as usize).build();
        }
        match delays.next() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => bail!(
                "{} requests were left unprocessed {MAX_ATTEMPTS} times in a row: the service is throttling all of them",
                pending.len()
            ),
        }
    }
    Ok(answers)
}

/// Retries and throttled answers seen during one provider operation.
#[derive(Debug, Default)]
pub struct Attempts {
    retries: AtomicU64,
    throttles: AtomicU64,
}

impl Attempts {
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::Relaxed)
    }

    /// Counts one retry of the operation this task runs; `throttled` when the answer
    /// behind it was throttling.
    pub(crate) fn record(throttled: bool) {
        let _ = OPERATION.try_with(|attempts| {
            attempts.retries.fetch_add(1, Ordering::Relaxed);
            if throttled {
                attempts.throttles.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Counts a throttled answer whose retry is counted on its own (the SDK's).
    pub(crate) fn record_throttle() {
        let _ = OPERATION.try_with(|a| a.throttles.fetch_add(1, Ordering::Relaxed));
    }

    /// Counts a retry whose answer is counted on its own (the SDK's).
    pub(crate) fn record_retry() {
        let _ = OPERATION.try_with(|a| a.retries.fetch_add(1, Ordering::Relaxed));
    }

    /// The retries and throttles of the operation this task runs (0 outside one).
    pub(crate) fn so_far() -> (u64, u64) {
        OPERATION
            .try_with(|a| (a.retries(), a.throttles()))
            .unwrap_or_default()
    }

    /// Runs `operation` with its retries counted in `attempts`. The SDK's hooks run in
    /// the task that awaits the request, so concurrent operations keep apart.
    pub async fn count<F: Future>(attempts: Arc<Attempts>, operation: F) -> F::Output {
        OPERATION.scope(attempts, operation).await
    }
}

tokio::task_local! {
    static OPERATION: Arc<Attempts>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_is_bounded_in_attempts_and_time() {
        let delays: Vec<Duration> = backoff(MAX_ATTEMPTS as usize).build().collect();
        assert_eq!(delays.len(), MAX_ATTEMPTS as usize - 1);
        // Jitter adds up to the delay itself on top.
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF * 2), "{delays:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn work_left_unprocessed_without_progress_fails_and_progress_goes_on() {
        let attempts = Arc::new(Attempts::default());
        let stuck = Attempts::count(attempts.clone(), async {
            until_processed(vec![1, 2], |pending| async move { Ok(((), pending)) }).await
        })
        .await;
        let err = stuck.unwrap_err().to_string();
        assert!(
            err.contains("2 requests were left unprocessed 12 times"),
            "{err}"
        );
        assert_eq!(attempts.retries(), u64::from(MAX_ATTEMPTS));
        assert_eq!(attempts.throttles(), u64::from(MAX_ATTEMPTS));

        // One item accepted per attempt: slow, but never given up on.
        let slow = until_processed((0..30).collect(), |mut pending: Vec<i32>| async move {
            let taken = pending.remove(0);
            Ok((taken, pending))
        })
        .await
        .unwrap();
        assert_eq!(slow, (0..30).collect::<Vec<_>>());
    }
}
