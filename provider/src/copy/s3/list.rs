//! Listing a prefix a page at a time, with what each object's storage class says about
//! whether it can be read now.

use std::collections::VecDeque;

use anyhow::{Context, Result};
use aws_sdk_s3::types::{Object, ObjectStorageClass, OptionalObjectAttributes};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{Bucket, ObjectInfo};
use crate::copy::aws_error;

/// Pages through a prefix in key order, holding one page at a time.
pub struct Lister<'a> {
    bucket: &'a Bucket,
    prefix: &'a str,
    page: VecDeque<ObjectInfo>,
    token: Option<String>,
    done: bool,
}

impl<'a> Lister<'a> {
    pub fn new(bucket: &'a Bucket, prefix: &'a str) -> Self {
        Lister {
            bucket,
            prefix,
            page: VecDeque::new(),
            token: None,
            done: false,
        }
    }

    async fn fill(&mut self) -> Result<()> {
        while self.page.is_empty() && !self.done {
            let out = self
                .bucket
                .client
                .list_objects_v2()
                .bucket(&self.bucket.name)
                .prefix(self.prefix)
                .set_continuation_token(self.token.take())
                .optional_object_attributes(OptionalObjectAttributes::RestoreStatus)
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("listing s3://{}/{}", self.bucket.name, self.prefix))?;
            let mut page: Vec<ObjectInfo> = out
                .contents()
                .iter()
                .map(|object| ObjectInfo {
                    key: object.key().unwrap_or_default().to_string(),
                    size: object.size().unwrap_or_default().max(0) as u64,
                    etag: object.e_tag().unwrap_or_default().to_string(),
                    modified: object.last_modified().map(|t| t.secs()).unwrap_or_default(),
                    archived: archive_of_listing(object),
                    checksum_algorithm: object
                        .checksum_algorithm()
                        .first()
                        .map(|a| a.as_str().to_string()),
                })
                .collect();
            self.mark_tiered_archives(&mut page, out.contents()).await?;
            self.page.extend(page);
            self.token = out.next_continuation_token().map(str::to_owned);
            self.done = self.token.is_none();
        }
        Ok(())
    }

    /// Intelligent-Tiering says which tier an object is in only to HeadObject: those of
    /// this page are asked, a page's worth at a time.
    async fn mark_tiered_archives(&self, page: &mut [ObjectInfo], listed: &[Object]) -> Result<()> {
        let tiered: Vec<usize> = listed
            .iter()
            .enumerate()
            .filter(|(_, o)| o.storage_class() == Some(&ObjectStorageClass::IntelligentTiering))
            .map(|(index, _)| index)
            .collect();
        let tiers: Vec<(usize, Option<String>)> = stream::iter(tiered)
            .map(|index| {
                let key = page[index].key.clone();
                async move {
                    let out = self
                        .bucket
                        .client
                        .head_object()
                        .bucket(&self.bucket.name)
                        .key(&key)
                        .send()
                        .await
                        .map_err(aws_error)
                        .with_context(|| format!("reading s3://{}/{key}", self.bucket.name))?;
                    let tier = out
                        .archive_status()
                        .filter(|_| {
                            out.restore()
                                .is_none_or(|r| r.contains("ongoing-request=\"true\""))
                        })
                        .map(|status| format!("INTELLIGENT_TIERING {}", status.as_str()));
                    anyhow::Ok((index, tier))
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        for (index, tier) in tiers {
            page[index].archived = tier;
        }
        Ok(())
    }

    pub(crate) async fn peek(&mut self) -> Result<Option<&ObjectInfo>> {
        self.fill().await?;
        Ok(self.page.front())
    }

    pub async fn next(&mut self) -> Result<Option<ObjectInfo>> {
        self.fill().await?;
        Ok(self.page.pop_front())
    }
}

/// The archive storage class of a listed object that is not restored, or None when it
/// can be read. Glacier Instant Retrieval is read like Standard.
fn archive_of_listing(object: &Object) -> Option<String> {
    let class = object.storage_class()?;
    let archived = matches!(
        class,
        ObjectStorageClass::Glacier | ObjectStorageClass::DeepArchive
    );
    let restored = object.restore_status().is_some_and(|r| {
        r.is_restore_in_progress() == Some(false) && r.restore_expiry_date().is_some()
    });
    (archived && !restored).then(|| class.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::primitives::DateTime;
    use aws_sdk_s3::types::RestoreStatus;

    fn listed(class: ObjectStorageClass, restore: Option<RestoreStatus>) -> Object {
        Object::builder()
            .key("k")
            .storage_class(class)
            .set_restore_status(restore)
            .build()
    }

    #[test]
    fn only_unrestored_glacier_and_deep_archive_objects_are_archived() {
        assert_eq!(
            archive_of_listing(&listed(ObjectStorageClass::Glacier, None)).as_deref(),
            Some("GLACIER")
        );
        assert_eq!(
            archive_of_listing(&listed(ObjectStorageClass::DeepArchive, None)).as_deref(),
            Some("DEEP_ARCHIVE")
        );
        for readable in [
            ObjectStorageClass::Standard,
            ObjectStorageClass::GlacierIr,
            ObjectStorageClass::StandardIa,
        ] {
            assert_eq!(archive_of_listing(&listed(readable, None)), None);
        }
        let restored = RestoreStatus::builder()
            .is_restore_in_progress(false)
            .restore_expiry_date(DateTime::from_secs(2_000_000_000))
            .build();
        assert_eq!(
            archive_of_listing(&listed(ObjectStorageClass::Glacier, Some(restored))),
            None
        );
        let restoring = RestoreStatus::builder()
            .is_restore_in_progress(true)
            .build();
        assert!(
            archive_of_listing(&listed(ObjectStorageClass::Glacier, Some(restoring))).is_some()
        );
    }
}
