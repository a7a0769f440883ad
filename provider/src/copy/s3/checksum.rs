//! Checksums as S3 keeps them, computed while streaming.

use aws_sdk_s3::types::ChecksumAlgorithm;

/// A running checksum in one of S3's algorithms, base64-encoded as S3's headers carry it.
pub(crate) struct RunningChecksum(Box<dyn aws_smithy_checksums::http::HttpChecksum>);

impl RunningChecksum {
    pub(crate) fn new(algorithm: &ChecksumAlgorithm) -> Self {
        let algorithm = algorithm
            .as_str()
            .parse()
            .unwrap_or(aws_smithy_checksums::ChecksumAlgorithm::Crc64Nvme);
        RunningChecksum(algorithm.into_impl())
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(crate) fn of(algorithm: &ChecksumAlgorithm, bytes: &[u8]) -> String {
        let mut checksum = Self::new(algorithm);
        checksum.update(bytes);
        checksum.base64()
    }

    pub(crate) fn base64(self) -> String {
        aws_smithy_types::base64::encode(&self.0.finalize()[..])
    }
}

/// S3 keeps a whole-object checksum of a multipart upload only in the CRC algorithms.
pub(crate) fn full_object_multipart(algorithm: &ChecksumAlgorithm) -> bool {
    matches!(
        algorithm,
        ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32C | ChecksumAlgorithm::Crc64Nvme
    )
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
