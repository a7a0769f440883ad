//! The runbook's steps around the copies, as engines: the queue gate checked before them
//! (`queues`), workflows started after them (`workflows`), the CDN invalidated
//! (`cdn`). Nothing here knows about Pulumi; the resources map inputs onto these.

pub(crate) mod cdn;
pub(crate) mod queues;
pub(crate) mod workflows;

use std::time::Duration;

/// How long to wait between two looks at something that finishes on its own (an
/// execution, an invalidation): short at first, then no more often than every 10 s.
pub(crate) fn poll_interval(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5)).min(10_000))
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
    fn names_are_the_last_part_of_an_arn() {
        assert_eq!(
            arn_name("arn:aws:states:us-east-1:123456789012:stateMachine:line-workflow"),
            "line-workflow"
        );
        assert_eq!(arn_name("plain"), "plain");
    }
}
