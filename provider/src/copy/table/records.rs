//! The table copy's journal records: one per item about to be put (or, mirroring,
//! deleted), written before the write, and the note of the last verified copy.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::index::{key_hash, key_of};
use crate::copy::item::{digest, item_from_json, item_to_json, Item};
use crate::copy::journal::Journal;
use crate::copy::spill::{stored_as_json, SpillMap};

/// About to put `digest`'s item at `key`; `previous` is the item that was there (None:
/// none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ItemRecord {
    pub key: Map<String, Value>,
    pub previous: Option<Map<String, Value>>,
    pub digest: String,
    /// Written by the rollback of another migration sharing the target: the item this
    /// resource's write backed up was that migration's, and `previous` is what that
    /// one had backed up, so this resource's rollback restores the original. `digest`
    /// repeats this resource's last write.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handover: bool,
}

impl ItemRecord {
    /// About to write `digest`'s item at `key` over `previous`.
    pub(crate) fn write(
        key: Map<String, Value>,
        previous: Option<Map<String, Value>>,
        digest: String,
    ) -> ItemRecord {
        ItemRecord {
            key,
            previous,
            digest,
            handover: false,
        }
    }

    /// About to delete `item` (mirror mode): the journal keeps all of it, for a rollback
    /// to put back; the empty digest stands for no item.
    pub(crate) fn deleted(item: &Item, keys: &[String]) -> ItemRecord {
        ItemRecord::write(
            item_to_json(&key_of(item, keys)),
            Some(item_to_json(item)),
            String::new(),
        )
    }
}

/// What the journal says about one key.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ItemState {
    pub key: Map<String, Value>,
    /// The item before this resource first wrote the key.
    pub previous: Option<Map<String, Value>>,
    /// The digest of the last item written there.
    pub digest: String,
}
stored_as_json!(ItemState);

/// Key id -> state, on disk: a journal can name ten million keys.
pub(crate) type ItemStates = SpillMap<String, ItemState>;

/// Folds one record into a key's state: the first record of a key keeps its
/// `previous`, the last its digest. A later record carries a `previous` only when
/// someone else had changed the key since this resource wrote it: rollback then puts
/// back their item.
fn apply_record(current: Option<ItemState>, record: ItemRecord) -> ItemState {
    let mut state = match current {
        Some(mut state) if record.handover => {
            state.previous = record.previous;
            state
        }
        Some(mut state) => {
            let theirs = record
                .previous
                .as_ref()
                .and_then(|previous| item_from_json(previous).ok())
                .is_some_and(|previous| digest(&previous) != state.digest);
            if theirs {
                state.previous = record.previous;
            }
            state
        }
        None => ItemState {
            key: record.key,
            previous: record.previous,
            digest: String::new(),
        },
    };
    state.digest = record.digest;
    state
}

fn fold_segment(state: &ItemStates, records: Vec<ItemRecord>) -> Result<()> {
    state.update_all(
        records.into_iter().map(|r| (key_id(&r.key), r)),
        apply_record,
    )
}

pub(crate) async fn load_items(journal: &Journal) -> Result<ItemStates> {
    let state = ItemStates::new()?;
    journal
        .replay(|_, records: Vec<ItemRecord>| fold_segment(&state, records))
        .await?;
    Ok(state)
}

/// The keys this resource has written, hashed, each with the digest of the last item
/// written there: all a copy needs of the journal to tell its own items from items
/// someone changed since. Rollback loads the full state instead.
pub(crate) async fn keys_written(
    journal: &Journal,
    keys: &[String],
) -> Result<SpillMap<u128, u128>> {
    let written = SpillMap::new()?;
    journal
        .replay(|_, records: Vec<ItemRecord>| {
            let entries = records
                .iter()
                .map(|r| {
                    // A delete leaves no item: 0 stands for it (no item's digest is 0,
                    // bar a 1 in 2^128 chance).
                    let digest = match r.digest.as_str() {
                        "" => 0,
                        hex => u128::from_str_radix(hex, 16)
                            .with_context(|| format!("journal digest {hex:?} is corrupt"))?,
                    };
                    Ok((key_hash(&item_from_json(&r.key)?, keys), digest))
                })
                .collect::<Result<Vec<(u128, u128)>>>()?;
            written.insert_all(entries.iter().map(|(k, v)| (k, v)))
        })
        .await?;
    Ok(written)
}

/// A key as one string, the same for the same key whatever the attribute order.
pub(crate) fn key_id(key: &Map<String, Value>) -> String {
    let sorted: BTreeMap<&String, &Value> = key.iter().collect();
    serde_json::to_string(&sorted).expect("JSON serializes")
}

/// The journal's note of the last verified copy: the fingerprint of what it selected.
const VERIFIED_NOTE: &str = "verified.json";

#[derive(Serialize, Deserialize)]
struct Verified {
    fingerprint: Option<String>,
}

pub(crate) async fn last_verified(journal: &Journal) -> Result<Option<u128>> {
    let Some(body) = journal.read_note(VERIFIED_NOTE).await? else {
        return Ok(None);
    };
    let note: Verified = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{VERIFIED_NOTE} in the journal at {} is corrupt",
            journal.uri()
        )
    })?;
    Ok(note
        .fingerprint
        .and_then(|f| u128::from_str_radix(&f, 16).ok()))
}

/// Records the fingerprint of a verified copy, or (None) that a copy is under way.
pub(crate) async fn note_verified(journal: &Journal, fingerprint: Option<u128>) -> Result<()> {
    let note = Verified {
        fingerprint: fingerprint.map(|f| format!("{f:032x}")),
    };
    journal
        .write_note(VERIFIED_NOTE, serde_json::to_vec(&note)?)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::item::{item_to_json, to_json, Item};
    use aws_sdk_dynamodb::types::AttributeValue;
    use serde_json::json;

    #[test]
    fn key_ids_ignore_attribute_order() {
        let a: Item = [
            ("PK".into(), AttributeValue::S("a".into())),
            ("SK".into(), AttributeValue::S("b".into())),
        ]
        .into();
        let mut b = Map::new();
        b.insert("SK".into(), to_json(&AttributeValue::S("b".into())));
        b.insert("PK".into(), to_json(&AttributeValue::S("a".into())));
        assert_eq!(key_id(&item_to_json(&a)), key_id(&b));
    }

    #[test]
    fn the_record_format_is_stable() {
        // Journals outlive the provider version that wrote them.
        let line = r#"{"key":{"PK":{"S":"a"}},"previous":null,"digest":"00ff"}"#;
        let record: ItemRecord = serde_json::from_str(line).unwrap();
        assert_eq!(record.key["PK"], json!({"S": "a"}));
        assert_eq!(serde_json::to_string(&record).unwrap(), line);
    }

    #[test]
    fn replay_keeps_the_first_previous_and_the_last_digest() {
        let key = json!({"PK": {"S": "a"}}).as_object().unwrap().clone();
        let item = |v: &str| {
            json!({"PK": {"S": "a"}, "v": {"S": v}})
                .as_object()
                .unwrap()
                .clone()
        };
        let digest_of = |v: &str| digest(&item_from_json(&item(v)).unwrap());
        let state = ItemStates::new().unwrap();
        let record = |previous: Option<&str>, written: &str| {
            ItemRecord::write(key.clone(), previous.map(item), digest_of(written))
        };
        // A second write over this resource's own item names it as previous: ignored.
        fold_segment(
            &state,
            vec![record(Some("old"), "ours"), record(Some("ours"), "ours2")],
        )
        .unwrap();
        let entry = state.get(&key_id(&key)).unwrap().unwrap();
        assert_eq!(entry.previous, Some(item("old")));
        assert_eq!(entry.digest, digest_of("ours2"));
        // Someone changed it since: their item is what rollback puts back.
        fold_segment(&state, vec![record(Some("prod edit"), "ours3")]).unwrap();
        let entry = state.get(&key_id(&key)).unwrap().unwrap();
        assert_eq!(entry.previous, Some(item("prod edit")));
        assert_eq!(entry.digest, digest_of("ours3"));
    }
}
