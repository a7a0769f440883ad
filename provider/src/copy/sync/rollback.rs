//! Undoing what a sync (or a journalled single write) did, from the journal.

use anyhow::{bail, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use sha2::Digest;

use super::records::{
    backup_name, load_objects, ObjectRecord, ObjectState, ObjectStates, Previous,
};
use super::CONCURRENCY;
use crate::copy::journal::{self, Journal};
use crate::copy::progress::{Meter, Progress};
use crate::copy::s3::{self, Bucket};
use crate::copy::spill::SpillMap;
use crate::copy::RolledBack;

/// The journal of another live migration into the same bucket, and what it says.
type Sharer<'a> = journal::Sharer<'a, ObjectStates>;

/// Undoes what the journal says this resource did: deletes the objects it created,
/// restores those it overwrote or deleted. A key someone else changed since is left,
/// unless one of `sharers` (other migrations into this bucket) wrote over this
/// resource's write: that one's journal then gets this resource's backup, so that the
/// original comes back whichever is destroyed first. Goes backwards through the
/// journal's segments, so what was written last (such as a pointer readers follow) is
/// undone before what it points to.
pub(crate) async fn rollback(
    target: &Bucket,
    journal: &Journal,
    sharers: &[Journal],
    progress: &dyn Progress,
) -> Result<RolledBack> {
    let shared = Sharer::load_all(sharers, load_objects).await?;
    let shared = &shared;
    let state = load_objects(journal).await?;
    let meter = Meter::new(progress, "rolled back", state.len()?, 0);
    let by_segment = in_segment_order(&state)?;
    let mut report = RolledBack::default();
    let mut unrestorable = Vec::new();
    let mut before = None;
    loop {
        let page = by_segment.page(before.as_ref(), PAGE, true)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        before = Some(last.clone());
        // One segment's keys at a time, so a later segment is undone before an earlier.
        for run in page.chunk_by(|(a, _), (b, _)| a[..8] == b[..8]) {
            let outcomes: Vec<(String, Outcome)> = stream::iter(run.to_vec())
                .map(|(order, entry)| {
                    let meter = &meter;
                    async move {
                        let key = String::from_utf8(order[8..].to_vec())?;
                        let outcome = match rollback_key(target, journal, &key, &entry).await? {
                            Outcome::LeftAlone => {
                                hand_over(target, journal, shared, &key, &entry).await?
                            }
                            outcome => outcome,
                        };
                        meter.add(1, 0);
                        anyhow::Ok((key, outcome))
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            let mut handovers: Vec<Vec<ObjectRecord>> = vec![Vec::new(); shared.len()];
            for (key, outcome) in outcomes {
                match outcome {
                    Outcome::Deleted => report.deleted += 1,
                    Outcome::Restored => report.restored += 1,
                    Outcome::LeftAlone => report.left_alone.push(key),
                    Outcome::Unrestorable => unrestorable.push(key),
                    Outcome::Untouched => {}
                    Outcome::HandedOver { sharer, previous } => {
                        handovers[sharer].push(ObjectRecord::Handover {
                            key,
                            previous: previous.map(|p| *p),
                        });
                        report.handed_over += 1;
                    }
                    Outcome::Superseded => report.handed_over += 1,
                }
            }
            // Handed over (their backups already copied) before this journal is
            // cleared: a kill in between hands nothing over twice, as the sharer's
            // backup is then the original, no longer this resource's write.
            for (sharer, records) in shared.iter().zip(handovers) {
                sharer.journal.append_from(&records, journal).await?;
            }
        }
    }
    if !unrestorable.is_empty() {
        unrestorable.sort();
        bail!(
            "{} keys of versioned s3://{} cannot be put back: the versions they held before this resource wrote them are gone (a lifecycle rule expires noncurrent versions?), for example {}; what this resource wrote there is left as it is and the journal is kept: restore those keys from a backup first",
            unrestorable.len(),
            target.name,
            unrestorable.iter().take(5).map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
        );
    }
    report.left_alone.sort();
    journal.clear().await?;
    Ok(report)
}

/// Keys rolled back per page of the journal's state.
const PAGE: usize = 1024;

/// The state again, keyed by segment (8 bytes, big-endian) then target key: paging it
/// backwards goes backwards through the journal.
fn in_segment_order(state: &ObjectStates) -> Result<SpillMap<Vec<u8>, ObjectState>> {
    let ordered = SpillMap::new()?;
    let mut after = None;
    loop {
        let page = state.page(after.as_ref(), PAGE, false)?;
        let Some((last, _)) = page.last() else {
            return Ok(ordered);
        };
        after = Some(last.clone());
        let entries: Vec<(Vec<u8>, ObjectState)> = page
            .into_iter()
            .map(|(key, entry)| {
                let mut order = entry.segment.to_be_bytes().to_vec();
                order.extend_from_slice(key.as_bytes());
                (order, entry)
            })
            .collect();
        ordered.insert_all(entries.iter().map(|(k, v)| (k, v)))?;
    }
}

/// Writes one small object (a pointer, a marker) with the same journal records as a
/// copied object, so rollback restores what was there before. `only_over`: write only
/// if `key` still holds the object with this ETag (Some(None): only if there is none);
/// false when it did not, and nothing was written.
pub(crate) async fn put_journalled(
    target: &Bucket,
    key: &str,
    body: Vec<u8>,
    journal: &Journal,
    only_over: Option<Option<&str>>,
) -> Result<bool> {
    let state = load_objects(journal).await?;
    let previous = match (
        state.contains(&key.to_string())?,
        s3::head(target, key).await?,
    ) {
        (false, Some((existing, headers))) => {
            let name = backup_name(key);
            journal.backup(&name, target, &existing).await?;
            Some(Previous {
                etag: existing.etag,
                size: existing.size,
                backup: name,
                headers,
            })
        }
        _ => None,
    };
    let source_etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&body)));
    journal
        .append(&[ObjectRecord::Write {
            key: key.to_string(),
            source_etag,
            previous,
            versioned: false,
        }])
        .await?;
    let etag = match only_over {
        None => s3::put_bytes(target, key, body).await?,
        Some(current) => match target.store.put_if(target.at(key), body, current).await? {
            Some(written) => written.etag,
            None => return Ok(false),
        },
    };
    journal
        .append(&[ObjectRecord::Written {
            key: key.to_string(),
            etag,
            version: None,
        }])
        .await?;
    Ok(true)
}

enum Outcome {
    Deleted,
    Restored,
    LeftAlone,
    /// The content from before is gone: nothing was done at the key.
    Unrestorable,
    Untouched,
    /// Sharer number `sharer` wrote over this resource's write: `previous` goes to its
    /// journal.
    HandedOver {
        sharer: usize,
        previous: Option<Box<Previous>>,
    },
    /// On a versioned target a sharer wrote over: this resource's versions, no longer
    /// current, were removed, so the sharer's rollback makes the original current.
    Superseded,
}

/// A key left alone because someone wrote it since: when that was a sharer, whose
/// journal backed up this resource's write (or, over a deletion, found nothing), the
/// sharer is to restore what this resource had backed up instead. The backup is copied
/// into the sharer's journal under a name of its own.
async fn hand_over(
    target: &Bucket,
    journal: &Journal,
    shared: &[Sharer<'_>],
    key: &str,
    ours: &ObjectState,
) -> Result<Outcome> {
    for (index, sharer) in shared.iter().enumerate() {
        let Some(theirs) = sharer.state.get(&key.to_string())? else {
            continue;
        };
        if ours.versioned {
            if !theirs.versioned {
                continue;
            }
            for version in &ours.versions {
                s3::delete_version(target, key, version).await?;
            }
            return Ok(Outcome::Superseded);
        }
        let backed_up_ours = match (&theirs.previous, &ours.written_etag) {
            (Some(previous), Some(written)) => previous.etag == *written,
            (None, _) => ours.deleted,
            (Some(_), None) => false,
        };
        if !backed_up_ours {
            continue;
        }
        let previous = match &ours.previous {
            None => None,
            Some(previous) if previous.backup.is_empty() => return Ok(Outcome::LeftAlone),
            Some(previous) => {
                let name = format!(
                    "{}-from-{}",
                    backup_name(key),
                    &backup_name(journal.uri())[..16]
                );
                journal
                    .copy_backup(&previous.backup, sharer.journal, &name)
                    .await?;
                Some(Box::new(Previous {
                    backup: name,
                    ..previous.clone()
                }))
            }
        };
        return Ok(Outcome::HandedOver {
            sharer: index,
            previous,
        });
    }
    Ok(Outcome::LeftAlone)
}

async fn rollback_key(
    target: &Bucket,
    journal: &Journal,
    key: &str,
    entry: &ObjectState,
) -> Result<Outcome> {
    if entry.versioned {
        return rollback_versions(target, key, entry).await;
    }
    let current = s3::head(target, key).await?.map(|(info, _)| info);
    let current_etag = current.as_ref().map(|c| c.etag.as_str());
    let ours = if entry.deleted {
        current.is_none()
    } else if let Some(written) = &entry.written_etag {
        current_etag == Some(written.as_str())
    } else {
        // Killed between intent and confirmation: the write landed if the target holds
        // the source's content; if it holds the old content, nothing happened.
        if current_etag == entry.previous.as_ref().map(|p| p.etag.as_str()) || current.is_none() {
            return Ok(Outcome::Untouched);
        }
        current_etag == Some(entry.source_etag.as_str())
            || holds_source_content(target, key, &entry.source_etag).await?
    };
    if !ours {
        return Ok(Outcome::LeftAlone);
    }
    match &entry.previous {
        Some(previous) if !previous.backup.is_empty() => {
            journal
                .restore(&previous.backup, &previous.headers, target, key)
                .await?;
            Ok(Outcome::Restored)
        }
        Some(_) => Ok(Outcome::LeftAlone),
        None if entry.deleted => Ok(Outcome::Untouched),
        None => {
            s3::delete(target, key).await?;
            Ok(Outcome::Deleted)
        }
    }
}

/// Whether `key` holds the content of a single-part source object whose ETag is the
/// MD5 `source_etag`: a copy written in parts or encrypted with KMS has another ETag,
/// so a write that landed unconfirmed is told by reading it. A multipart source's ETag
/// names no content, and proves nothing.
async fn holds_source_content(target: &Bucket, key: &str, source_etag: &str) -> Result<bool> {
    let md5 = source_etag.trim_matches('"');
    if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(false);
    }
    Ok(s3::content_md5(target, key).await? == md5)
}

/// On a versioned target: removes the versions and delete markers this resource
/// created, so the version current before it is current again; nothing is re-uploaded.
/// Left alone when someone else wrote the key since.
async fn rollback_versions(target: &Bucket, key: &str, entry: &ObjectState) -> Result<Outcome> {
    let versions = s3::versions(target, key).await?;
    let mut ours: Vec<&s3::Version> = versions
        .iter()
        .filter(|v| entry.versions.contains(&v.id))
        .collect();
    let Some(latest) = versions.first() else {
        return Ok(Outcome::Untouched);
    };
    // A write or deletion killed before its confirmation, or a write adopted by a later
    // run, has no version in the journal: the latest version is ours if it holds what
    // was written and is not the content from before, or is the delete marker.
    let written_etag = entry.written_etag.as_ref().unwrap_or(&entry.source_etag);
    let latest_is_ours = entry.versions.contains(&latest.id)
        || (entry.deleted && latest.delete_marker)
        || (!entry.deleted
            && latest.etag == *written_etag
            && entry.previous.as_ref().map(|p| &p.etag) != Some(&latest.etag));
    if !latest_is_ours {
        return Ok(if ours.is_empty() {
            Outcome::Untouched
        } else {
            Outcome::LeftAlone
        });
    }
    if !ours.iter().any(|v| v.id == latest.id) {
        ours.insert(0, latest);
    }
    // The key held something before, and no version but ours is left to make current.
    if entry.previous.is_some() && versions.len() <= ours.len() {
        return Ok(Outcome::Unrestorable);
    }
    for version in &ours {
        s3::delete_version(target, key, &version.id).await?;
    }
    Ok(if versions.len() > ours.len() {
        Outcome::Restored
    } else {
        Outcome::Deleted
    })
}
