//! CDN invalidation: after new objects land in a bucket a CloudFront distribution
//! serves, the paths of what changed (or everything, above CloudFront's limit) are
//! invalidated and waited for.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{now_millis, poll_interval, run_name};
use crate::copy::aws_error;
use crate::copy::progress::Progress;

/// CloudFront accepts at most this many paths in invalidations in progress at once
/// (wildcard paths count apart, up to 15): above it, everything is invalidated.
pub(crate) const MAX_PATHS: usize = 3000;

/// What stays as it is in a path: RFC 3986's unreserved characters and `/`; every other
/// byte is percent-encoded, as CloudFront asks of unsafe and non-ASCII characters.
const PATH_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The paths to invalidate: the given paths as they are, then one per object key
/// (`/<key>`, encoded, for a distribution serving the bucket from its root); everything
/// (`/*`) when there are more than `MAX_PATHS`, or when a key is `*` (a copy that
/// changed too many to list).
pub(crate) fn paths_for(paths: &[String], keys: &[String]) -> Vec<String> {
    if keys.iter().any(|k| k == "*") {
        return vec!["/*".to_string()];
    }
    let mut all: Vec<String> = paths.to_vec();
    all.extend(
        keys.iter()
            .map(|key| format!("/{}", utf8_percent_encode(key, PATH_SAFE))),
    );
    all.sort();
    all.dedup();
    if all.len() > MAX_PATHS {
        return vec!["/*".to_string()];
    }
    all
}

/// Fails naming the distribution when it does not exist or cannot be read.
pub(crate) async fn check_exists(cloudfront: &aws_sdk_cloudfront::Client, id: &str) -> Result<()> {
    cloudfront
        .get_distribution()
        .id(id)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading CloudFront distribution {id}"))?;
    Ok(())
}

/// Starts an invalidation of `paths` for `owner` (a resource's URN); returns its ID.
pub(crate) async fn invalidate(
    cloudfront: &aws_sdk_cloudfront::Client,
    id: &str,
    paths: &[String],
    owner: &str,
) -> Result<String> {
    // CloudFront makes a new invalidation only for a new caller reference: one per
    // owner, paths and moment.
    let reference = format!("{}-{}", run_name(owner, &paths.join("\n")), now_millis());
    let batch = InvalidationBatch::builder()
        .paths(
            Paths::builder()
                .quantity(i32::try_from(paths.len())?)
                .set_items(Some(paths.to_vec()))
                .build()?,
        )
        .caller_reference(reference)
        .build()?;
    let out = cloudfront
        .create_invalidation()
        .distribution_id(id)
        .invalidation_batch(batch)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("invalidating {} paths of distribution {id}", paths.len()))?;
    out.invalidation()
        .map(|i| i.id().to_string())
        .with_context(|| format!("CloudFront named no invalidation for distribution {id}"))
}

/// Waits until the invalidation is completed; fails after `timeout` (it goes on: the
/// message says so).
pub(crate) async fn wait(
    cloudfront: &aws_sdk_cloudfront::Client,
    id: &str,
    invalidation: &str,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        let out = cloudfront
            .get_invalidation()
            .distribution_id(id)
            .id(invalidation)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading invalidation {invalidation} of {id}"))?;
        let status = out
            .invalidation()
            .map(|i| i.status().to_string())
            .unwrap_or_default();
        if status.eq_ignore_ascii_case("completed") {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!(
                "invalidation {invalidation} of distribution {id} is still {status} after {}s; CloudFront goes on with it",
                timeout.as_secs()
            );
        }
        progress.status(&format!(
            "waiting for invalidation {invalidation} ({status})"
        ));
        tokio::time::sleep(poll_interval(attempt)).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn keys_become_encoded_paths_after_the_given_ones() {
        assert_eq!(
            paths_for(
                &strings(&["/index.html"]),
                &strings(&["img/a b.png", "img/é.png", "img/a b.png"]),
            ),
            ["/img/%C3%A9.png", "/img/a%20b.png", "/index.html"]
        );
    }

    #[test]
    fn too_many_paths_or_an_unlisted_change_invalidate_everything() {
        let many: Vec<String> = (0..=MAX_PATHS).map(|i| format!("k{i}")).collect();
        assert_eq!(paths_for(&[], &many), ["/*"]);
        assert_eq!(paths_for(&[], &many[..MAX_PATHS]).len(), MAX_PATHS);
        assert_eq!(paths_for(&[], &strings(&["a", "*"])), ["/*"]);
        assert!(paths_for(&[], &[]).is_empty());
    }
}
