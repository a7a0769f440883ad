//! A plan's answer handed from a `pulumi up`'s preview to its update. Both run Diff with
//! the same inputs and state moments apart, and on a huge source each Diff is a full
//! scan; the preview's answer stands for the update, so an `up` scans once. The answer is
//! kept in a local file keyed by the resource, its inputs and state, and the Pulumi
//! process that runs the provider (its pid and start time): a separate `pulumi preview`
//! followed by `pulumi up` never shares an answer, so data changed in between is seen.
//! Taken once, and only within `LIFETIME`; anything unreadable is a miss.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How long a preview's answer waits for its update (the user's confirmation prompt).
const LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Serialize, Deserialize)]
struct Answer {
    planned: Map<String, Value>,
    pending: bool,
}

pub(crate) struct Answers {
    dir: PathBuf,
}

impl Answers {
    /// `STACKMIGRATE_ANSWERS` overrides the place, under the user's cache by default.
    pub fn new() -> Answers {
        let dir = std::env::var_os("STACKMIGRATE_ANSWERS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .map(|cache| cache.join("stackmigrate").join("answers"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("stackmigrate-answers"));
        Answers { dir }
    }

    /// The file of one question: None when the Pulumi process cannot be told apart.
    fn path(
        &self,
        urn: &str,
        inputs: &Map<String, Value>,
        state: &Map<String, Value>,
    ) -> Option<PathBuf> {
        let process = pulumi_process()?;
        let mut hasher = Sha256::new();
        for part in [
            urn.to_string(),
            serde_json::to_string(inputs).ok()?,
            serde_json::to_string(state).ok()?,
            process,
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Some(
            self.dir
                .join(format!("{}.json", hex::encode(hasher.finalize()))),
        )
    }

    /// The answer a Diff of this same `pulumi` command gave, taken so it serves once.
    pub fn take(
        &self,
        urn: &str,
        inputs: &Map<String, Value>,
        state: &Map<String, Value>,
    ) -> Option<(Map<String, Value>, bool)> {
        let path = self.path(urn, inputs, state)?;
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .is_some_and(|age| age < LIFETIME);
        let body = std::fs::read(&path).ok();
        let _ = std::fs::remove_file(&path);
        let answer: Answer = serde_json::from_slice(&body?).ok()?;
        fresh.then_some((answer.planned, answer.pending))
    }

    /// Keeps an answer for the next Diff of this command; old answers nobody took (an
    /// `up --skip-preview`, a declined prompt) are removed. Failing to keep one only costs
    /// the next Diff a scan.
    pub fn keep(
        &self,
        urn: &str,
        inputs: &Map<String, Value>,
        state: &Map<String, Value>,
        planned: &Map<String, Value>,
        pending: bool,
    ) {
        let Some(path) = self.path(urn, inputs, state) else {
            return;
        };
        self.remove_stale();
        let answer = Answer {
            planned: planned.clone(),
            pending,
        };
        let Ok(body) = serde_json::to_vec(&answer) else {
            return;
        };
        let tmp = path.with_extension("partial");
        let _ = private_dir(&self.dir)
            .and_then(|_| private_write(&tmp, &body))
            .and_then(|_| std::fs::rename(&tmp, &path));
    }

    fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| SystemTime::now().duration_since(at).ok())
                .is_some_and(|age| age >= LIFETIME);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The process that started this provider (the `pulumi` command), as its pid and, where
/// the system says, its start time, so a reused pid is a different process.
#[cfg(unix)]
fn pulumi_process() -> Option<String> {
    let parent = std::os::unix::process::parent_id();
    if parent <= 1 {
        return None;
    }
    // Field 22 of /proc/<pid>/stat, counted after the command name in parentheses.
    let started = std::fs::read_to_string(format!("/proc/{parent}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name.split_whitespace().nth(19).map(str::to_string)
        })
        .unwrap_or_default();
    Some(format!("{parent}:{started}"))
}

/// Elsewhere the parent is not asked: every Diff scans.
#[cfg(not(unix))]
fn pulumi_process() -> Option<String> {
    None
}

/// Answers hold counts and names of prod's data: readable by their owner only.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn private_write(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::map;
    use serde_json::json;

    #[test]
    fn an_answer_serves_the_same_question_once() {
        let dir = tempfile::tempdir().unwrap();
        let answers = Answers {
            dir: dir.path().to_path_buf(),
        };
        let inputs = map(json!({"sourceTable": "a"}));
        let state = map(json!({"itemsCopied": 3}));
        let planned = map(json!({"itemsCopied": 0}));
        answers.keep("urn:x", &inputs, &state, &planned, false);
        let other_inputs = map(json!({"sourceTable": "b"}));
        assert_eq!(answers.take("urn:x", &other_inputs, &state), None);
        assert_eq!(answers.take("urn:y", &inputs, &state), None);
        assert_eq!(
            answers.take("urn:x", &inputs, &state),
            Some((planned, false))
        );
        assert_eq!(answers.take("urn:x", &inputs, &state), None, "taken once");
    }
}
