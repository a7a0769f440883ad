//! The copy engines and what they share. Nothing here knows about Pulumi.

pub(crate) mod dynamodb;
pub mod filter;
pub(crate) mod item;
pub mod journal;
pub(crate) mod model;
pub mod postgres;
pub mod progress;
pub(crate) mod retry;
pub(crate) mod rewrite;
pub mod s3;
pub(crate) mod snapshot;
pub mod spill;
pub(crate) mod store;
pub mod sync;
pub(crate) mod table;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What a rollback of a bucket or a table did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RolledBack {
    pub deleted: u64,
    pub restored: u64,
    /// Keys whose object or item someone else changed since the copy: left as they are.
    pub left_alone: Vec<String>,
    /// Keys another migration sharing the target wrote over this one's write: what
    /// this one had backed up went to that one's journal, for its rollback to restore.
    pub handed_over: u64,
}

/// Runs a sync or copy until the in-memory store says a write reached its kill point
/// (`killed`), then drops it mid-write as a SIGKILL leaves it: true when it was killed,
/// false when it finished first.
#[cfg(test)]
pub(crate) async fn until_killed<T>(
    run: impl std::future::Future<Output = anyhow::Result<T>>,
    killed: impl std::future::Future<Output = ()>,
) -> bool {
    tokio::select! {
        done = run => {
            done.expect("a run that was not killed failed");
            false
        }
        _ = killed => true,
    }
}

/// An AWS SDK error as one readable line: the service's code and message when it
/// answered, the whole chain (connection refused, timeout...) when it did not.
pub(crate) fn aws_error<E, R>(err: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(code) = err.as_service_error().and_then(|e| e.code()) {
        let message = err
            .as_service_error()
            .and_then(|e| e.message())
            .unwrap_or_default();
        return anyhow::anyhow!("{code}: {message}");
    }
    anyhow::anyhow!("{}", DisplayErrorContext(err))
}
