//! `--include` / `--exclude` with `aws s3 sync` semantics: patterns match the key
//! relative to the prefix, `*` crosses `/`, every key is included unless a filter says
//! otherwise, and a later filter wins over an earlier one.

use globset::{Glob, GlobBuilder, GlobMatcher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Include,
    Exclude,
}

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// In the order `aws s3 sync` applies them. Includes come before excludes here
    /// because Pulumi inputs are two lists, not an interleaved command line.
    rules: Vec<(Effect, GlobMatcher)>,
}

/// A pattern that is not a valid glob, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid glob {pattern:?}: {reason}")]
pub struct InvalidGlob {
    pub pattern: String,
    pub reason: String,
}

fn compile(pattern: &str) -> Result<GlobMatcher, InvalidGlob> {
    let glob: Glob = GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| InvalidGlob {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })?;
    Ok(glob.compile_matcher())
}

impl KeyFilter {
    /// `aws s3 sync --exclude A --include B` semantics: when includes are given alone they
    /// only re-include, so `include: ["*.jpg"]` with no exclude still includes everything;
    /// to copy only JPEGs write `exclude: ["*"], include: ["*.jpg"]`. Here, to match what
    /// users mean by two lists, excludes apply first and includes re-include after them.
    pub fn new(include: &[String], exclude: &[String]) -> Result<KeyFilter, InvalidGlob> {
        let mut rules = Vec::with_capacity(include.len() + exclude.len());
        for pattern in exclude {
            rules.push((Effect::Exclude, compile(pattern)?));
        }
        for pattern in include {
            rules.push((Effect::Include, compile(pattern)?));
        }
        Ok(KeyFilter { rules })
    }

    pub(crate) fn matches(&self, relative_key: &str) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|(_, glob)| glob.is_match(relative_key))
            .is_none_or(|(effect, _)| *effect == Effect::Include)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> KeyFilter {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        KeyFilter::new(&own(include), &own(exclude)).expect("valid globs")
    }

    #[test]
    fn star_crosses_slashes_like_aws_s3_sync() {
        let f = filter(&[], &["*.json", "*/delta/*"]);
        assert!(!f.matches("a/b/c.json"));
        assert!(!f.matches("lines/delta/run1/delta.tar.gz"));
        assert!(f.matches("images/a.png"));
        assert!(
            f.matches("delta/x"),
            "*/delta/* needs something before delta/"
        );
    }

    #[test]
    fn include_re_includes_after_exclude() {
        let f = filter(&["*.png"], &["*"]);
        assert!(f.matches("x/y.png"));
        assert!(!f.matches("x/y.jpg"));
    }

    #[test]
    fn no_filters_include_everything() {
        assert!(filter(&[], &[]).matches("anything/at/all"));
    }

    #[test]
    fn question_mark_and_classes() {
        let f = filter(&[], &["img?.png", "[!a]*.txt"]);
        assert!(!f.matches("img1.png"));
        assert!(f.matches("img10.png"));
        assert!(!f.matches("b.txt"));
        assert!(f.matches("a.txt"));
    }

    #[test]
    fn invalid_glob_names_the_pattern() {
        let err = KeyFilter::new(&[], &["images/[abc".into()]).unwrap_err();
        assert_eq!(err.pattern, "images/[abc");
        assert!(err.to_string().contains("images/[abc"), "{err}");
    }
}
