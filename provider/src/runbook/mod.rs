//! The runbook's steps around the copies, as engines: the queue gate checked before them
//! (`queues`), workflows started after them (`workflows`), the CDN invalidated
//! (`cdn`). Nothing here knows about Pulumi; the resources map inputs onto these.

pub(crate) mod cdn;
pub(crate) mod queues;
pub(crate) mod workflows;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// How long to wait between two looks at something that finishes on its own (an
/// execution, an invalidation): short at first, then no more often than every 10 s.
pub(crate) fn poll_interval(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5)).min(10_000))
}

/// The name of a resource's run: the same for the same owner (a resource's URN) and
/// `run` (what it asks for), so an interrupted attempt finds what it started.
pub(crate) fn run_name(owner: &str, run: &str) -> String {
    let digest = Sha256::digest(format!("{owner}\n{run}").as_bytes());
    format!("stackmigrate-{}", &hex::encode(digest)[..24])
}

/// Milliseconds since the Unix epoch: a suffix that makes a run's name new each time.
pub(crate) fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// The last part of an ARN (`arn:aws:states:region:account:stateMachine:NAME`), for
/// messages and names.
pub(crate) fn arn_name(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_quickly_at_first_then_every_ten_seconds() {
        assert_eq!(poll_interval(0), Duration::from_millis(500));
        assert_eq!(poll_interval(1), Duration::from_secs(1));
        assert_eq!(poll_interval(4), Duration::from_secs(8));
        assert_eq!(poll_interval(40), Duration::from_secs(10));
    }

    #[test]
    fn run_names_are_stable_per_owner_and_run() {
        let a = run_name("urn:a", "{}");
        assert_eq!(a, run_name("urn:a", "{}"));
        assert_ne!(a, run_name("urn:a", "{\"x\":1}"));
        assert_ne!(a, run_name("urn:b", "{}"));
        // Step Functions allows 80 characters in a name; the start time takes up to 14 more.
        assert!(a.len() + 14 < 80, "{a}");
    }

    #[test]
    fn names_are_the_last_part_of_an_arn() {
        assert_eq!(
            arn_name("arn:aws:states:us-east-1:123456789012:stateMachine:line-workflow"),
            "line-workflow"
        );
        assert_eq!(arn_name("plain"), "plain");
    }
}
