//! Trained models in a training bucket (`runs/<run>/best/`,
//! `runs/<run>/checkpoints/checkpoint-<step>/`): which run and checkpoint to take, and
//! whether a saved model is complete enough to load.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

use super::filter::KeyFilter;
use super::s3::{self, Bucket, ObjectInfo};

/// The model chosen in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub run_id: String,
    /// `best` or `checkpoint-<step>`.
    pub checkpoint: String,
    /// Key prefix of the run, ending in `/`.
    pub run_prefix: String,
    /// Key prefix of the chosen directory, ending in `/`.
    pub model_prefix: String,
}

const WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// `checkpoint-1000/` or `checkpoints/checkpoint-1000/` at the start of a run-relative
/// key: (step, directory prefix).
fn checkpoint_of(relative: &str) -> Option<(u64, String)> {
    let rest = relative.strip_prefix("checkpoints/").unwrap_or(relative);
    let parent = &relative[..relative.len() - rest.len()];
    let (dir, _) = rest.split_once('/')?;
    let step = dir.strip_prefix("checkpoint-")?.parse().ok()?;
    Some((step, format!("{parent}{dir}/")))
}

/// Picks the run (the one with the newest object, as the inference code does, unless
/// pinned) and its checkpoint (`best` when it holds weights, else the highest step,
/// compared as numbers, unless pinned) from a listing of `runs_prefix`.
pub fn choose(
    objects: &[ObjectInfo],
    runs_prefix: &str,
    run_id: Option<&str>,
    checkpoint: Option<&str>,
) -> Result<Choice> {
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    for object in objects {
        if let Some((run, _)) = object.key[runs_prefix.len()..].split_once('/') {
            let entry = newest.entry(run).or_insert(i64::MIN);
            *entry = (*entry).max(object.modified);
        }
    }
    let runs = || newest.keys().copied().collect::<Vec<_>>().join(", ");
    let run = match run_id {
        Some(run) if newest.contains_key(run) => run,
        Some(run) => bail!(
            "run {run:?} is not under {runs_prefix}; runs there: {}",
            runs()
        ),
        None => newest
            .iter()
            .max_by_key(|(name, modified)| (**modified, *name))
            .map(|(name, _)| *name)
            .ok_or_else(|| anyhow::anyhow!("no runs under {runs_prefix}"))?,
    };
    let run_prefix = format!("{runs_prefix}{run}/");
    let files: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_prefix(&run_prefix))
        .collect();
    let has_weights = |dir: &str| {
        WEIGHTS
            .iter()
            .any(|w| files.contains(format!("{dir}{w}").as_str()))
    };
    let mut steps: BTreeMap<u64, String> = BTreeMap::new();
    for file in &files {
        if let Some((step, dir)) = checkpoint_of(file) {
            steps.insert(step, dir);
        }
    }
    let highest = |require_weights: bool| {
        steps
            .iter()
            .rev()
            .find(|(_, dir)| !require_weights || has_weights(dir))
            .map(|(step, dir)| (format!("checkpoint-{step}"), dir.clone()))
    };
    let best_exists = files.iter().any(|f| f.starts_with("best/"));
    let (name, dir) = match checkpoint {
        Some("best") if best_exists => ("best".to_string(), "best/".to_string()),
        Some("best") => bail!("run {run} has no best/ directory"),
        Some("latest") => highest(false)
            .ok_or_else(|| anyhow::anyhow!("run {run} has no checkpoint-<step> directory"))?,
        Some(pinned) => {
            let step: Option<u64> = pinned
                .strip_prefix("checkpoint-")
                .and_then(|s| s.parse().ok());
            match step.and_then(|s| steps.get(&s).map(|dir| (s, dir))) {
                Some((_, dir)) => (pinned.to_string(), dir.clone()),
                None => bail!(
                    "run {run} has no {pinned:?}; expected best, latest or one of: {}",
                    steps
                        .keys()
                        .map(|s| format!("checkpoint-{s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        None if files.contains("best/model.safetensors") => {
            ("best".to_string(), "best/".to_string())
        }
        None => highest(true).ok_or_else(|| {
            anyhow::anyhow!(
                "run {run} has no best/model.safetensors and no checkpoint holding model weights"
            )
        })?,
    };
    Ok(Choice {
        run_id: run.to_string(),
        checkpoint: name,
        model_prefix: format!("{run_prefix}{dir}"),
        run_prefix,
    })
}

/// Refuses a model that could not be loaded: a `config.json` that parses, weights
/// (`model.safetensors` whose header parses and whose tensors fit the file, or
/// `pytorch_model.bin`), and a tokenizer (`tokenizer.json`, `vocab.txt`, or `vocab.json`
/// with `merges.txt`, plus `tokenizer_config.json`) that the filter does not drop.
pub async fn check_complete(
    bucket: &Bucket,
    prefix: &str,
    files: &[ObjectInfo],
    filter: &KeyFilter,
) -> Result<()> {
    let names: BTreeMap<&str, &ObjectInfo> = files
        .iter()
        .filter_map(|o| o.key.strip_prefix(prefix).map(|name| (name, o)))
        .collect();
    let location = format!("s3://{}/{prefix}", bucket.name);
    let mut missing = Vec::new();
    let mut needed = Vec::new();
    if names.contains_key("config.json") {
        needed.push("config.json");
        let body = s3::get_bytes(bucket, &format!("{prefix}config.json")).await?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .with_context(|| format!("{location}config.json is not JSON"))?;
    } else {
        missing.push("config.json");
    }
    if let Some(weights) = names.get("model.safetensors") {
        needed.push("model.safetensors");
        check_safetensors(bucket, weights)
            .await
            .with_context(|| format!("{location}model.safetensors"))?;
    } else if names.contains_key("pytorch_model.bin") {
        needed.push("pytorch_model.bin");
    } else {
        missing.push("model.safetensors (or pytorch_model.bin)");
    }
    let tokenizer: Option<Vec<&str>> = [
        vec!["tokenizer.json"],
        vec!["vocab.txt"],
        vec!["vocab.json", "merges.txt"],
    ]
    .into_iter()
    .find(|set| set.iter().all(|f| names.contains_key(f)));
    match tokenizer {
        Some(set) => needed.extend(set),
        None => missing.push("tokenizer.json, vocab.txt, or vocab.json with merges.txt"),
    }
    if names.contains_key("tokenizer_config.json") {
        needed.push("tokenizer_config.json");
    } else {
        missing.push("tokenizer_config.json");
    }
    if !missing.is_empty() {
        bail!(
            "the model at {location} is incomplete: missing {}",
            missing.join("; ")
        );
    }
    let dropped: Vec<&str> = needed.into_iter().filter(|f| !filter.matches(f)).collect();
    if !dropped.is_empty() {
        bail!(
            "exclude would drop {} from the model at {location}, which loading needs; narrow the exclude patterns",
            dropped.join(", ")
        );
    }
    Ok(())
}

/// A safetensors file: 8 bytes of header length, a JSON header, then the tensors,
/// each at `data_offsets` that must lie inside the file.
async fn check_safetensors(bucket: &Bucket, file: &ObjectInfo) -> Result<()> {
    if file.size < 8 {
        bail!("{} bytes is too short for a header", file.size);
    }
    let length = u64::from_le_bytes(
        s3::get_range(bucket, &file.key, 0, 8)
            .await?
            .try_into()
            .expect("8 bytes"),
    );
    if length > file.size - 8 || length > 100 * 1024 * 1024 {
        bail!(
            "header length {length} does not fit the file of {} bytes",
            file.size
        );
    }
    let header = s3::get_range(bucket, &file.key, 8, 8 + length).await?;
    check_safetensors_header(&header, file.size - 8 - length)
}

fn check_safetensors_header(header: &[u8], data_size: u64) -> Result<()> {
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).context("the header is not a JSON object")?;
    for (name, tensor) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let offsets = tensor
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
        match offsets {
            Some((begin, end)) if begin <= end && end <= data_size => {}
            _ => bail!("tensor {name:?} has data_offsets outside the {data_size} bytes of data"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, modified: i64) -> ObjectInfo {
        ObjectInfo {
            archived: None,
            checksum_algorithm: None,
            key: key.to_string(),
            size: 1,
            etag: String::new(),
            modified,
        }
    }

    #[test]
    fn newest_run_by_object_time_and_checkpoints_by_number() {
        let objects = vec![
            object("runs/zzz-old/best/model.safetensors", 100),
            object("runs/aaa-new/run.json", 300),
            object(
                "runs/aaa-new/checkpoints/checkpoint-999/model.safetensors",
                200,
            ),
            object(
                "runs/aaa-new/checkpoints/checkpoint-1000/model.safetensors",
                250,
            ),
            object(
                "runs/aaa-new/checkpoints/checkpoint-1500/trainer_state.json",
                260,
            ),
        ];
        let choice = choose(&objects, "runs/", None, None).unwrap();
        assert_eq!(choice.run_id, "aaa-new");
        assert_eq!(
            choice.checkpoint, "checkpoint-1000",
            "1500 holds no weights; 1000 > 999 as numbers"
        );
        assert_eq!(
            choice.model_prefix,
            "runs/aaa-new/checkpoints/checkpoint-1000/"
        );
        let latest = choose(&objects, "runs/", None, Some("latest")).unwrap();
        assert_eq!(latest.checkpoint, "checkpoint-1500");
        let pinned = choose(&objects, "runs/", Some("zzz-old"), None).unwrap();
        assert_eq!(
            (pinned.checkpoint.as_str(), pinned.model_prefix.as_str()),
            ("best", "runs/zzz-old/best/")
        );
    }

    #[test]
    fn unknown_pins_list_what_exists() {
        let objects = vec![object("runs/r1/checkpoint-5/model.safetensors", 1)];
        let err = choose(&objects, "runs/", Some("r2"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs there: r1"), "{err}");
        let err = choose(&objects, "runs/", None, Some("checkpoint-6"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkpoint-5"), "{err}");
        assert_eq!(
            choose(&objects, "runs/", None, None).unwrap().model_prefix,
            "runs/r1/checkpoint-5/"
        );
    }

    #[test]
    fn safetensors_offsets_must_fit() {
        let header = br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(check_safetensors_header(header, 8).is_ok());
        assert!(check_safetensors_header(header, 7).is_err());
        assert!(check_safetensors_header(b"not json", 8).is_err());
    }
}
