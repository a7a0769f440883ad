//! Undoing a table copy from its journal.

use anyhow::Result;

use futures::stream::{FuturesUnordered, StreamExt};

use super::records::{load_items, ItemRecord, ItemState, ItemStates};
use crate::copy::dynamodb::{self, batch_write, Table, READ_BATCH};
use crate::copy::item::{digest, item_from_json};
use crate::copy::journal::{self, Journal};
use crate::copy::progress::{Meter, Progress};
use crate::copy::RolledBack;

/// Chunks of the journal's keys rolled back at once, as the copy's scan segments write.
const CHUNKS_IN_FLIGHT: usize = 8;

/// The journal of another live migration into the same table, and what it says.
type Sharer<'a> = journal::Sharer<'a, ItemStates>;

/// Deletes the items this resource created and puts back those it overwrote, where the
/// target still holds what was written. A key that one of `sharers` (other migrations
/// into this table) wrote over this resource's item gets this resource's backup in
/// that one's journal, so that the original comes back whichever is destroyed first.
pub async fn rollback(
    target: &Table,
    keys: &[String],
    journal: &Journal,
    sharers: &[Journal],
    progress: &dyn Progress,
) -> Result<RolledBack> {
    let shared = Sharer::load_all(sharers, load_items).await?;
    let state = load_items(journal).await?;
    let meter = Meter::new(progress, "rolled back", state.len()?, 0);
    // The state is read a chunk at a time, so memory holds only the chunks in flight.
    let mut in_flight = FuturesUnordered::new();
    let mut after: Option<String> = None;
    let mut read_all = false;
    let mut report = RolledBack::default();
    loop {
        while !read_all && in_flight.len() < CHUNKS_IN_FLIGHT {
            let chunk = state.page(after.as_ref(), READ_BATCH, false)?;
            match chunk.last() {
                Some((last, _)) => {
                    after = Some(last.clone());
                    in_flight.push(rollback_chunk(
                        target, keys, journal, chunk, &shared, &meter,
                    ));
                }
                None => read_all = true,
            }
        }
        let Some(part) = in_flight.next().await else {
            break;
        };
        let part = part?;
        report.deleted += part.deleted;
        report.restored += part.restored;
        report.left_alone.extend(part.left_alone);
        report.handed_over += part.handed_over;
    }
    report.left_alone.sort();
    journal.clear().await?;
    Ok(report)
}

async fn rollback_chunk(
    target: &Table,
    keys: &[String],
    journal: &Journal,
    chunk: Vec<(String, ItemState)>,
    shared: &[Sharer<'_>],
    meter: &Meter<'_>,
) -> Result<RolledBack> {
    let mut report = RolledBack::default();
    let mut handovers: Vec<Vec<ItemRecord>> = vec![Vec::new(); shared.len()];
    let wanted = chunk
        .iter()
        .map(|(_, s)| item_from_json(&s.key))
        .collect::<Result<Vec<_>>>()?;
    let current = super::read_items(target, keys, wanted).await?;
    let mut requests = Vec::new();
    for (id, entry) in &chunk {
        let now = current.get(id);
        let previous = entry.previous.as_ref().map(item_from_json).transpose()?;
        match now {
            Some(item) if digest(item) == entry.digest => match previous {
                Some(previous) => {
                    requests.push(dynamodb::put(previous)?);
                    report.restored += 1;
                }
                None => {
                    requests.push(dynamodb::delete(item_from_json(&entry.key)?)?);
                    report.deleted += 1;
                }
            },
            // Deleted by a mirror and still absent: put back what was there.
            None if entry.digest.is_empty() => {
                if let Some(previous) = previous {
                    requests.push(dynamodb::put(previous)?);
                    report.restored += 1;
                }
            }
            // Killed before the write landed: the key holds what it held before.
            None if previous.is_none() => {}
            Some(item) if previous.as_ref().is_some_and(|p| digest(p) == digest(item)) => {}
            _ => match wrote_over(shared, id, entry)? {
                Some((index, theirs)) => {
                    handovers[index].push(ItemRecord {
                        key: entry.key.clone(),
                        previous: entry.previous.clone(),
                        digest: theirs.digest,
                        handover: true,
                    });
                    report.handed_over += 1;
                }
                None => report.left_alone.push(id.clone()),
            },
        }
    }
    // Handed over before this journal is cleared: a kill in between hands nothing over
    // twice (the sharer's backup is then the original, no longer this resource's item).
    for (sharer, records) in shared.iter().zip(handovers) {
        sharer.journal.append_from(&records, journal).await?;
    }
    batch_write(target, requests, None).await?;
    meter.add(chunk.len() as u64, 0);
    Ok(report)
}

/// The sharer whose journal backed up what this resource last wrote at `id` (for a
/// mirror's delete: found nothing there), with its state of the key.
fn wrote_over(
    shared: &[Sharer<'_>],
    id: &str,
    ours: &ItemState,
) -> Result<Option<(usize, ItemState)>> {
    for (index, sharer) in shared.iter().enumerate() {
        let Some(theirs) = sharer.state.get(&id.to_string())? else {
            continue;
        };
        let backed_up_ours = match &theirs.previous {
            Some(previous) => digest(&item_from_json(previous)?) == ours.digest,
            None => ours.digest.is_empty(),
        };
        if backed_up_ours {
            return Ok(Some((index, theirs)));
        }
    }
    Ok(None)
}
