//! What a table holds, as hashes: an item's key and its content, each 16 bytes, so that
//! comparing the source with the target costs one scan of each rather than a read per
//! source item.

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::copy::dynamodb::{Pages, Table};
use crate::copy::item::{digest, Item};
use crate::copy::progress::Meter;
use crate::copy::spill::SpillMap;

/// Key hash -> content digest of every item, as one consistent parallel scan saw them,
/// on disk (32 bytes an item, ten million items are more than the provider's memory).
pub(crate) struct Index(pub SpillMap<u128, u128>);

impl Index {
    pub fn empty() -> Result<Index> {
        Ok(Index(SpillMap::new()?))
    }

    pub async fn of(
        table: &Table,
        keys: &[String],
        segments: i32,
        scanned: &Meter<'_>,
    ) -> Result<Index> {
        let index = Index::empty()?;
        let parts = (0..segments).map(|segment| {
            let index = &index;
            async move {
                let mut pages = Pages::new(table, segment, segments);
                while let Some(page) = pages.next().await? {
                    let entries: Vec<(u128, u128)> = page
                        .iter()
                        .map(|item| (key_hash(item, keys), digest_bits(item)))
                        .collect();
                    index.0.insert_all(entries.iter().map(|(k, v)| (k, v)))?;
                    scanned.add(entries.len() as u64, 0);
                }
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(parts).await?;
        Ok(index)
    }
}

/// The key attributes of an item.
pub(crate) fn key_of(item: &Item, keys: &[String]) -> Item {
    keys.iter()
        .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

pub(crate) fn key_hash(item: &Item, keys: &[String]) -> u128 {
    digest_bits(&key_of(item, keys))
}

/// One item's contribution to a fingerprint: its key and content together.
pub(crate) fn pair_hash(key_hash: u128, digest: u128) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(key_hash.to_be_bytes());
    hasher.update(digest.to_be_bytes());
    u128::from_be_bytes(hasher.finalize()[..16].try_into().expect("16 bytes"))
}

pub(crate) fn digest_bits(item: &Item) -> u128 {
    u128::from_str_radix(&digest(item), 16).expect("a digest is 32 hex digits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::table::CopyCounts;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn counts_of(items: &[(&str, &str)]) -> CopyCounts {
        let mut counts = CopyCounts::default();
        for (key, content) in items {
            let item: Item = [("PK".to_string(), AttributeValue::S(key.to_string()))].into();
            let mut full = item.clone();
            full.insert("v".into(), AttributeValue::S(content.to_string()));
            let part = CopyCounts {
                fingerprint: pair_hash(digest_bits(&item), digest_bits(&full)),
                ..Default::default()
            };
            counts.merge(part);
        }
        counts
    }

    #[test]
    fn fingerprints_ignore_order_and_see_any_changed_item() {
        let same = counts_of(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let shuffled = counts_of(&[("c", "3"), ("a", "1"), ("b", "2")]);
        assert_eq!(same.fingerprint, shuffled.fingerprint);
        for other in [
            counts_of(&[("a", "1"), ("b", "2"), ("c", "4")]),
            counts_of(&[("a", "1"), ("b", "2")]),
            counts_of(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]),
            counts_of(&[("a", "2"), ("b", "1"), ("c", "3")]),
        ] {
            assert_ne!(same.fingerprint, other.fingerprint);
        }
    }
}
