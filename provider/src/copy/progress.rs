//! Progress of long copies, reported through whatever the caller plugs in (the
//! provider sends it to the Pulumi engine as ephemeral log lines).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub trait Progress: Send + Sync {
    /// A status line that replaces the previous one (shown while work is under way).
    fn status(&self, message: &str);
    /// A line kept in the output (plans, summaries).
    fn info(&self, message: &str);
    /// Something the user should look at, without failing the operation.
    fn warn(&self, message: &str);
    /// A line for scripts and debugging, shown only when asked for (`pulumi --debug`).
    fn debug(&self, _message: &str) {}
}

/// Discards everything: for unit tests and for work nobody watches.
pub struct Silent;

impl Progress for Silent {
    fn status(&self, _: &str) {}
    fn info(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}

/// Counts done work and reports it at most once per interval, so a copy of a million
/// objects does not send a million log lines.
pub(crate) struct Meter<'a> {
    progress: &'a dyn Progress,
    what: String,
    total_items: u64,
    total_bytes: u64,
    items: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    last_report: Mutex<Instant>,
    /// A scan: no totals known, the line shows the count and the rate.
    open_ended: bool,
}

const REPORT_EVERY: Duration = Duration::from_secs(1);

impl<'a> Meter<'a> {
    pub(crate) fn new(
        progress: &'a dyn Progress,
        what: &str,
        total_items: u64,
        total_bytes: u64,
    ) -> Self {
        let now = Instant::now();
        Meter {
            progress,
            what: what.to_string(),
            total_items,
            total_bytes,
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: now,
            last_report: Mutex::new(now),
            open_ended: false,
        }
    }

    /// Counts items of a scan whose size is not known beforehand.
    pub(crate) fn counting(progress: &'a dyn Progress, what: &str) -> Self {
        Meter {
            open_ended: true,
            ..Meter::new(progress, what, 0, 0)
        }
    }

    pub(crate) fn add(&self, items: u64, bytes: u64) {
        self.items.fetch_add(items, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= REPORT_EVERY {
            *last = Instant::now();
            drop(last);
            self.progress.status(&self.line());
        }
    }

    pub(crate) fn line(&self) -> String {
        let items = self.items.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        if self.open_ended {
            return format!("{} {items} ({:.0}/s)", self.what, items as f64 / secs);
        }
        format!(
            "{} {items}/{} ({} of {}, {}/s)",
            self.what,
            self.total_items,
            human_bytes(bytes),
            human_bytes(self.total_bytes),
            human_bytes((bytes as f64 / secs) as u64),
        )
    }
}

/// Counts in words, as `up` and preview report them: `first`, the clauses whose count
/// is not zero, then `last`, joined by `; `.
pub(crate) fn in_words(first: String, counted: &[(u64, String)], last: String) -> String {
    std::iter::once(first)
        .chain(
            counted
                .iter()
                .filter(|(count, _)| *count > 0)
                .map(|(_, clause)| clause.clone()),
        )
        .chain(std::iter::once(last))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first clause of a summary: what is (or was) copied, and how much of it replaced
/// what was there; `nothing to copy` when nothing is.
pub(crate) fn copied_clause(
    (count, bytes, overwritten): (u64, u64, u64),
    what: &str,
    copy: &str,
) -> String {
    match (count, overwritten) {
        (0, _) => format!("nothing {copy}"),
        (_, 0) => format!("{count} {what}s ({}) {copy}", human_bytes(bytes)),
        _ => format!(
            "{count} {what}s ({}) {copy}, of which {overwritten} overwrite an existing {what}",
            human_bytes(bytes)
        ),
    }
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn a_scan_meter_shows_the_count_without_a_total() {
        let meter = Meter::counting(&Silent, "scanned table dev");
        meter.add(250, 0);
        assert!(
            meter.line().starts_with("scanned table dev 250 ("),
            "{}",
            meter.line()
        );
    }

    #[test]
    fn meter_line_counts_what_was_added() {
        let meter = Meter::new(&Silent, "copied", 10, 2048);
        meter.add(3, 1024);
        assert!(
            meter.line().starts_with("copied 3/10 (1.0 KiB of 2.0 KiB"),
            "{}",
            meter.line()
        );
    }
}
