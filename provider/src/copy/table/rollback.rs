//! Undoing a table copy from its journal.

use anyhow::Result;

use super::records::{load_state, KeyState};
use crate::copy::dynamodb::{self, batch_write, Table, READ_BATCH};
use crate::copy::item::{digest, item_from_json};
use crate::copy::progress::{Meter, Progress};

/// What rollback did.
#[derive(Debug, Default)]
pub struct RollbackReport {
    pub deleted: u64,
    pub restored: u64,
    /// Keys whose item someone else changed since the copy: left as they are.
    pub left_alone: Vec<String>,
}

/// Deletes the items this resource created and puts back those it overwrote, where the
/// target still holds what was written.
pub async fn rollback(
    target: &Table,
    keys: &[String],
    journal: &crate::copy::journal::Journal,
    progress: &dyn Progress,
) -> Result<RollbackReport> {
    let state = load_state(journal).await?;
    let meter = Meter::new(progress, "rolled back", state.len() as u64, 0);
    let entries: Vec<(&String, &KeyState)> = state.iter().collect();
    let mut report = RollbackReport::default();
    for chunk in entries.chunks(READ_BATCH) {
        let wanted = chunk
            .iter()
            .map(|(_, s)| item_from_json(&s.key))
            .collect::<Result<Vec<_>>>()?;
        let current = super::read_items(target, keys, wanted).await?;
        let mut requests = Vec::new();
        for (id, entry) in chunk {
            let now = current.get(*id);
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
                // Killed before the write landed: the key holds what it held before.
                None if previous.is_none() => {}
                Some(item) if previous.as_ref().is_some_and(|p| digest(p) == digest(item)) => {}
                _ => report.left_alone.push((*id).clone()),
            }
        }
        batch_write(target, requests, None).await?;
        meter.add(chunk.len() as u64, 0);
    }
    report.left_alone.sort();
    journal.clear().await?;
    Ok(report)
}
