//! Checksums as S3 keeps them: computed while streaming, and read from a response.

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};

/// A running checksum in one of S3's algorithms, base64-encoded as S3's headers carry it.
pub(super) struct RunningChecksum(Box<dyn aws_smithy_checksums::http::HttpChecksum>);

impl RunningChecksum {
    pub(super) fn new(algorithm: &ChecksumAlgorithm) -> Self {
        let algorithm = algorithm
            .as_str()
            .parse()
            .unwrap_or(aws_smithy_checksums::ChecksumAlgorithm::Crc64Nvme);
        RunningChecksum(algorithm.into_impl())
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(super) fn of(algorithm: &ChecksumAlgorithm, bytes: &[u8]) -> String {
        let mut checksum = Self::new(algorithm);
        checksum.update(bytes);
        checksum.base64()
    }

    pub(super) fn base64(self) -> String {
        aws_smithy_types::base64::encode(&self.0.finalize()[..])
    }
}

/// S3 keeps a whole-object checksum of a multipart upload only in the CRC algorithms.
pub(super) fn full_object_multipart(algorithm: &ChecksumAlgorithm) -> bool {
    matches!(
        algorithm,
        ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32C | ChecksumAlgorithm::Crc64Nvme
    )
}

/// The checksum of the whole object a GetObject response carries, which the SDK then
/// checks the body against as it is read; None for a composite one (it cannot).
pub(super) fn full_object_checksum(out: &GetObjectOutput) -> Option<(ChecksumAlgorithm, String)> {
    if is_composite(out.checksum_type(), out.e_tag()) {
        return None;
    }
    [
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha1,
    ]
    .into_iter()
    .find_map(|algorithm| {
        checksum_in!(out, &algorithm)
            .filter(|value| !value.contains('-'))
            .map(|value| (algorithm, value))
    })
}

/// Whether a stored checksum covers the parts of a multipart upload rather than the whole
/// object. A server that does not say the type (moto) may keep a composite one for a
/// multipart object: only a single-part object's untyped checksum is whole.
pub(super) fn is_composite(kind: Option<&ChecksumType>, etag: Option<&str>) -> bool {
    match kind {
        Some(kind) => *kind == ChecksumType::Composite,
        None => etag.unwrap_or_default().contains('-'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_s3s_values_and_run_across_parts() {
        // What S3 (and the Versity gateway) report for "hello world".
        let crc64 = ChecksumAlgorithm::Crc64Nvme;
        assert_eq!(RunningChecksum::of(&crc64, b"hello world"), "jSnVw/bqjr4=");
        assert_eq!(
            RunningChecksum::of(&ChecksumAlgorithm::Crc32, b"hello world"),
            "DUoRhQ=="
        );
        assert_eq!(
            RunningChecksum::of(&ChecksumAlgorithm::Sha256, b"hello"),
            "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
        );
        let mut running = RunningChecksum::new(&crc64);
        running.update(b"hello ");
        running.update(b"world");
        assert_eq!(running.base64(), "jSnVw/bqjr4=");
    }
}
