//! Proving each written object holds its source's content, by the strongest means both
//! sides allow: a checksum of the whole content, the MD5 ETag, or (said so) the size.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};

use anyhow::{bail, Context, Result};
use aws_sdk_s3::types::ChecksumAlgorithm;

use super::{SyncCounts, SyncSpec};
use crate::copy::retry;
use crate::copy::s3::{self, ObjectInfo};
use backon::Retryable;

/// How a written object was proven to hold its source's content, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Proof {
    /// A checksum of the whole content, equal on both sides.
    Checksum,
    /// The MD5 ETag (single part, not KMS-encrypted), equal on both sides.
    Etag,
    /// Read back: the MD5s of both objects' bytes are equal, or the target's bytes have
    /// the checksum of those sent.
    Content,
    /// Only the sizes compare: no checksum or MD5 covers both sides.
    Size,
}

/// Objects written per proof, counted as copies land.
#[derive(Default)]
pub(super) struct Proofs([AtomicU64; 4]);

impl Proofs {
    pub(super) fn add(&self, proof: Proof) {
        self.0[proof as usize].fetch_add(1, AtomicOrdering::Relaxed);
    }

    pub(super) fn into_counts(self, counts: &mut SyncCounts) {
        let [checksum, etag, content, size] = self.0.map(AtomicU64::into_inner);
        counts.verified_by_checksum = checksum;
        counts.verified_by_etag = etag;
        counts.verified_by_content = content;
        counts.verified_by_size = size;
    }
}

/// Whether the target has reported the checksum of a streamed write. Until it has (and
/// for each object, until its first part's checksum comes back), streamed copies also
/// compute the MD5 ETag, the proof left for a target that keeps no checksums; after,
/// the checksum proves them and the MD5's hashing is saved.
#[derive(Default)]
pub(super) struct TargetChecksums(AtomicBool);

impl TargetChecksums {
    fn seen(&self) -> bool {
        self.0.load(AtomicOrdering::Relaxed)
    }
}

/// Copies one object and proves the target holds the source's content, by the
/// strongest means both sides allow; by reading both when only the sizes would compare
/// and the spec asks for content. Returns the target's ETag and the proof.
pub(super) async fn copy_verified(
    spec: &SyncSpec,
    source: &ObjectInfo,
    key: &str,
    checksums: &TargetChecksums,
) -> Result<(s3::Written, Proof)> {
    let (written, proof) = copy_proven(spec, source, key, checksums).await?;
    if proof != Proof::Size || !spec.verify_content {
        return Ok((written, proof));
    }
    let (read, wrote) = futures::future::try_join(
        s3::content_md5(&spec.source, &source.key),
        s3::content_md5(&spec.target, key),
    )
    .await?;
    if read != wrote {
        bail!(
            "verification failed for s3://{}/{key}: its bytes have MD5 {wrote}, the source's {read}",
            spec.target.name
        );
    }
    Ok((written, Proof::Content))
}

async fn copy_proven(
    spec: &SyncSpec,
    source: &ObjectInfo,
    key: &str,
    checksums: &TargetChecksums,
) -> Result<(s3::Written, Proof)> {
    let target_url = || format!("s3://{}/{key}", spec.target.name);
    if spec.server_side {
        let written =
            s3::server_side_copy(&spec.source, source, &spec.target, key, &spec.write).await?;
        // A single-part object's ETag is its MD5, which a copy keeps unless KMS encrypts.
        if !source.etag.contains('-') && written.etag == source.etag {
            return Ok((written, Proof::Etag));
        }
        // The copy computed a checksum in the source's algorithm: compare it with the
        // one the source stores (one HEAD, only where the ETags cannot tell).
        if let (Some(algorithm), Some(copied)) = (&source.checksum_algorithm, &written.checksum) {
            let algorithm = ChecksumAlgorithm::from(algorithm.as_str());
            match s3::stored_checksum(&spec.source, &source.key, &algorithm).await? {
                Some(stored) if stored == *copied => return Ok((written, Proof::Checksum)),
                Some(stored) => bail!(
                    "verification failed for {}: its {} is {copied}, the source's is {stored}",
                    target_url(),
                    algorithm.as_str()
                ),
                None => {}
            }
        }
        check_size(spec, source, key).await?;
        return Ok((written, Proof::Size));
    }
    let streamed = copy_streamed_with_retry(spec, source, key, checksums.seen()).await?;
    let (written, expected) = (streamed.written, streamed.expected);
    let algorithm = expected.algorithm.as_str();
    let target_proof = match &written.checksum {
        Some(checksum) if *checksum == expected.checksum => {
            checksums.0.store(true, AtomicOrdering::Relaxed);
            Proof::Checksum
        }
        Some(checksum) => bail!(
            "verification failed for {}: its {algorithm} is {checksum}, the bytes sent have {}",
            target_url(),
            expected.checksum
        ),
        None if expected.etag.as_ref() == Some(&written.etag) => Proof::Etag,
        // A target that reports part checksums but no whole one (moto) got no MD5
        // computed for it: what it holds is read back.
        None if expected.etag.is_none() => {
            let read = s3::content_checksum(&spec.target, key, &expected.algorithm).await?;
            if read != expected.checksum {
                bail!(
                    "verification failed for {}: its bytes read back have {algorithm} {read}, the bytes sent {}",
                    target_url(),
                    expected.checksum
                );
            }
            Proof::Content
        }
        None => {
            check_size(spec, source, key).await?;
            Proof::Size
        }
    };
    // The bytes sent are the source's if they have its stored checksum (which the
    // target now keeps too), or if they hash to its MD5 ETag.
    let source_proof = match &streamed.source_checksum {
        Some(stored) if *stored == expected.checksum => Proof::Checksum,
        Some(stored) => bail!(
            "verification failed for {}: the bytes read have {algorithm} {}, the source stores {stored}",
            target_url(),
            expected.checksum
        ),
        None if streamed.checked_by_sdk => Proof::Checksum,
        None if !source.etag.contains('-') && expected.etag.as_ref() == Some(&source.etag) => {
            Proof::Etag
        }
        None => Proof::Size,
    };
    let proof = target_proof.max(source_proof);
    Ok((written, proof))
}

async fn check_size(spec: &SyncSpec, source: &ObjectInfo, key: &str) -> Result<()> {
    let size = s3::head(&spec.target, key)
        .await?
        .map(|(info, _)| info.size);
    if size != Some(source.size) {
        bail!(
            "verification failed for s3://{}/{key}: the source has {} bytes, the target {}",
            spec.target.name,
            source.size,
            size.map_or("nothing".to_string(), |s| format!("{s} bytes"))
        );
    }
    Ok(())
}

/// A streamed copy reads a response body that a dropped connection cuts short; the SDK
/// retries requests, not half-read bodies, so the whole object is tried again.
async fn copy_streamed_with_retry(
    spec: &SyncSpec,
    source: &ObjectInfo,
    key: &str,
    target_reports_checksums: bool,
) -> Result<s3::Streamed> {
    let attempt = || {
        s3::streamed_copy(
            &spec.source,
            source,
            &spec.target,
            key,
            &spec.write,
            target_reports_checksums,
        )
    };
    attempt
        .retry(retry::backoff(retry::OBJECT_ATTEMPTS))
        .notify(|_, _| retry::Attempts::record(false))
        .await
        .with_context(|| format!("after {} attempts", retry::OBJECT_ATTEMPTS))
}
