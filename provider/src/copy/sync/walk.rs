//! Two listings walked in lock step, as rclone's `march` does: each relative key comes
//! out once, with the object on each side that has it. Memory stays at one page a side.

use std::cmp::Ordering;

use anyhow::Result;

use crate::copy::s3::{Bucket, Lister, ObjectInfo};

/// One relative key and the objects that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    SourceOnly(ObjectInfo),
    TargetOnly(ObjectInfo),
    Both {
        source: ObjectInfo,
        target: ObjectInfo,
    },
}

pub(crate) struct March<'a> {
    source: Lister<'a>,
    source_prefix: &'a str,
    target: Lister<'a>,
    target_prefix: &'a str,
}

impl<'a> March<'a> {
    pub fn new(
        source: &'a Bucket,
        source_prefix: &'a str,
        target: &'a Bucket,
        target_prefix: &'a str,
    ) -> Self {
        March {
            source: Lister::new(source, source_prefix),
            source_prefix,
            target: Lister::new(target, target_prefix),
            target_prefix,
        }
    }

    /// The next key in order, relative to its side's prefix, or None at the end of both.
    pub async fn next(&mut self) -> Result<Option<(String, Entry)>> {
        let source_rel = self
            .source
            .peek()
            .await?
            .map(|o| o.key[self.source_prefix.len()..].to_string());
        let target_rel = self
            .target
            .peek()
            .await?
            .map(|o| o.key[self.target_prefix.len()..].to_string());
        let order = match (&source_rel, &target_rel) {
            (None, None) => return Ok(None),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(s), Some(t)) => s.cmp(t),
        };
        let next = match order {
            Ordering::Less => (
                source_rel.expect("peeked"),
                Entry::SourceOnly(self.source.next().await?.expect("peeked")),
            ),
            Ordering::Greater => (
                target_rel.expect("peeked"),
                Entry::TargetOnly(self.target.next().await?.expect("peeked")),
            ),
            Ordering::Equal => (
                source_rel.expect("peeked"),
                Entry::Both {
                    source: self.source.next().await?.expect("peeked"),
                    target: self.target.next().await?.expect("peeked"),
                },
            ),
        };
        Ok(Some(next))
    }
}
