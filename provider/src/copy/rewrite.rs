//! Bucket names rewritten in an item's string values, wherever a name stands as a name:
//! the whole value, `s3://name/...`, `arn:aws:s3:::name/...`, path-style and
//! virtual-hosted S3 URLs, or between characters no bucket name holds. Never inside a
//! longer word or a longer bucket name.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::Item;

pub struct Rewriter {
    /// Longest first, so that of two names sharing a start the longer one is tried first.
    pairs: Vec<(String, String)>,
}

/// Characters of a name or a word: a match next to one is part of something longer.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Whether `text[start..end]` stands as a whole name in `text`.
fn stands_alone(text: &str, start: usize, end: usize) -> bool {
    if text[..start].chars().next_back().is_some_and(is_name_char) {
        return false;
    }
    let after = &text[end..];
    match after.chars().next() {
        None => true,
        // Virtual-hosted S3 URLs: `name.s3.amazonaws.com`, `name.s3-us-west-2...`,
        // `name.s3.us-east-1.amazonaws.com`.
        Some('.') if after.starts_with(".s3.") || after.starts_with(".s3-") => true,
        // A name never ends in a dot: one followed by no name character ends a sentence.
        Some('.') => !after[1..].chars().next().is_some_and(is_name_char),
        Some(c) => !is_name_char(c),
    }
}

impl Rewriter {
    pub fn new(map: &BTreeMap<String, String>) -> Self {
        let mut pairs: Vec<(String, String)> = map
            .iter()
            .filter(|(from, _)| !from.is_empty())
            .map(|(f, t)| (f.clone(), t.clone()))
            .collect();
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Rewriter { pairs }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The rewritten text, or None when no name stands in it; `changed` counts, per
    /// name replaced, the values it changed.
    fn string(&self, text: &str, changed: &mut BTreeMap<String, u64>) -> Option<String> {
        if !self
            .pairs
            .iter()
            .any(|(from, _)| text.contains(from.as_str()))
        {
            return None;
        }
        // One pass, left to right, so a replacement is never rewritten again.
        let mut out = String::with_capacity(text.len());
        let mut replaced: Vec<&str> = Vec::new();
        let mut at = 0;
        'outer: while at < text.len() {
            for (from, to) in &self.pairs {
                let end = at + from.len();
                if text[at..].starts_with(from.as_str()) && stands_alone(text, at, end) {
                    out.push_str(to);
                    if !replaced.contains(&from.as_str()) {
                        replaced.push(from);
                    }
                    at = end;
                    continue 'outer;
                }
            }
            let ch = text[at..].chars().next().expect("not at the end");
            out.push(ch);
            at += ch.len_utf8();
        }
        if replaced.is_empty() {
            return None;
        }
        for from in replaced {
            *changed.entry(from.to_string()).or_default() += 1;
        }
        Some(out)
    }

    /// Rewrites `value` in place.
    fn value(&self, value: &mut AttributeValue, changed: &mut BTreeMap<String, u64>) {
        match value {
            AttributeValue::S(s) => {
                if let Some(new) = self.string(s, changed) {
                    *s = new;
                }
            }
            AttributeValue::Ss(set) => {
                let mut any = false;
                for s in set.iter_mut() {
                    if let Some(new) = self.string(s, changed) {
                        *s = new;
                        any = true;
                    }
                }
                if any {
                    // A set holds each string once, also after a rewrite.
                    set.sort();
                    set.dedup();
                }
            }
            AttributeValue::L(list) => list.iter_mut().for_each(|v| self.value(v, changed)),
            AttributeValue::M(map) => map.values_mut().for_each(|v| self.value(v, changed)),
            _ => {}
        }
    }

    /// Rewrites every attribute but the table's keys, counting the values changed per
    /// name into `changed`.
    pub fn item(&self, item: &mut Item, keys: &[String], changed: &mut BTreeMap<String, u64>) {
        for (name, value) in item.iter_mut() {
            if !keys.contains(name) {
                self.value(value, changed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_string())
    }

    fn rewriter(pairs: &[(&str, &str)]) -> Rewriter {
        Rewriter::new(
            &pairs
                .iter()
                .map(|(f, t)| (f.to_string(), t.to_string()))
                .collect(),
        )
    }

    fn rewrite(r: &Rewriter, text: &str) -> String {
        r.string(text, &mut BTreeMap::new())
            .unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn names_are_rewritten_where_they_stand_as_names() {
        let r = rewriter(&[("dev-images", "prod-images")]);
        for (text, expected) in [
            ("dev-images", "prod-images"),
            ("s3://dev-images/raw/1.png", "s3://prod-images/raw/1.png"),
            ("arn:aws:s3:::dev-images/*", "arn:aws:s3:::prod-images/*"),
            ("arn:aws:s3:::dev-images", "arn:aws:s3:::prod-images"),
            (
                "https://s3.amazonaws.com/dev-images/a.png",
                "https://s3.amazonaws.com/prod-images/a.png",
            ),
            (
                "https://dev-images.s3.amazonaws.com/a.png",
                "https://prod-images.s3.amazonaws.com/a.png",
            ),
            (
                "https://dev-images.s3.us-east-1.amazonaws.com/a",
                "https://prod-images.s3.us-east-1.amazonaws.com/a",
            ),
            ("copied to dev-images.", "copied to prod-images."),
            (
                "{\"bucket\": \"dev-images\"}",
                "{\"bucket\": \"prod-images\"}",
            ),
        ] {
            assert_eq!(rewrite(&r, text), expected, "{text}");
        }
    }

    #[test]
    fn names_inside_longer_words_or_names_are_left_alone() {
        let r = rewriter(&[("dev-images", "prod-images")]);
        for text in [
            "dev-images-backup",
            "old-dev-images",
            "s3://my.dev-images/x",
            "dev-images2",
            "dev-images_v1",
            "predev-images",
            "dev-images.example.com",
        ] {
            assert_eq!(rewrite(&r, text), text);
        }
    }

    #[test]
    fn longer_names_win_and_replacements_are_not_rewritten_again() {
        let r = rewriter(&[
            ("dev", "prod"),
            ("dev-images", "prod-images"),
            ("prod", "dev"),
        ]);
        assert_eq!(rewrite(&r, "dev-images dev prod"), "prod-images prod dev");
    }

    #[test]
    fn values_changed_are_counted_per_name_and_keys_are_never_rewritten() {
        let r = rewriter(&[("dev-a", "prod-a"), ("dev-b", "prod-b")]);
        let mut item: Item = [
            ("PK".to_string(), s("dev-a")),
            ("uri".to_string(), s("s3://dev-a/x s3://dev-a/y")),
            (
                "tags".to_string(),
                AttributeValue::Ss(vec!["dev-b".into(), "prod-b".into()]),
            ),
            (
                "nested".to_string(),
                AttributeValue::M([("l".to_string(), AttributeValue::L(vec![s("dev-a")]))].into()),
            ),
            ("word".to_string(), s("dev-abc")),
        ]
        .into();
        let mut changed = BTreeMap::new();
        r.item(&mut item, &["PK".to_string()], &mut changed);
        assert_eq!(item["PK"], s("dev-a"));
        assert_eq!(item["uri"], s("s3://prod-a/x s3://prod-a/y"));
        assert_eq!(item["tags"], AttributeValue::Ss(vec!["prod-b".into()]));
        assert_eq!(item["word"], s("dev-abc"));
        assert_eq!(
            changed,
            BTreeMap::from([("dev-a".to_string(), 2), ("dev-b".to_string(), 1)])
        );
    }
}
