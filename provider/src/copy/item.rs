//! DynamoDB items: their JSON form (for the journal), a canonical digest (to tell
//! whether the target still holds what was written) and their size.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::base64;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, `{"B": "<base64>"}`, ...).
pub fn to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": base64::encode(b.as_ref())}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(n) => json!({"NULL": n}),
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::Bs(v) => {
            json!({"BS": v.iter().map(|b| base64::encode(b.as_ref())).collect::<Vec<_>>()})
        }
        AttributeValue::L(v) => json!({"L": v.iter().map(to_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => json!({"M": item_to_json(m)}),
        _ => json!({"NULL": true}),
    }
}

pub fn item_to_json(item: &Item) -> Map<String, Value> {
    item.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

fn strings(value: &Value) -> Result<Vec<String>> {
    value
        .as_array()
        .ok_or_else(|| anyhow!("expected a list in {value}"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("expected a string in {value}"))
        })
        .collect()
}

fn blob(text: &str) -> Result<Blob> {
    Ok(Blob::new(base64::decode(text).map_err(|e| {
        anyhow!("bad base64 in a journal item: {e}")
    })?))
}

pub fn from_json(value: &Value) -> Result<AttributeValue> {
    let object = value
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| anyhow!("not DynamoDB JSON: {value}"))?;
    let (tag, inner) = object.iter().next().expect("one entry");
    let text = || {
        inner
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("expected a string in {value}"))
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "B" => AttributeValue::B(blob(&text()?)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().unwrap_or_default()),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(strings(inner)?),
        "NS" => AttributeValue::Ns(strings(inner)?),
        "BS" => AttributeValue::Bs(
            strings(inner)?
                .iter()
                .map(|s| blob(s))
                .collect::<Result<_>>()?,
        ),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(|| anyhow!("expected a list in {value}"))?
                .iter()
                .map(from_json)
                .collect::<Result<_>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(
            inner
                .as_object()
                .ok_or_else(|| anyhow!("expected a map in {value}"))?,
        )?),
        other => bail!("unknown DynamoDB type {other:?}"),
    })
}

pub fn item_from_json(map: &Map<String, Value>) -> Result<Item> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), from_json(v)?)))
        .collect()
}

/// A number in one spelling whatever the input's (`1.50`, `1.5`, `15E-1` agree), since
/// DynamoDB may hand back another spelling than the one written.
pub fn canonical_number(text: &str) -> String {
    let text = text.trim();
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return "0".to_string();
    }
    // value = 0.<significant> x 10^(position of the first significant digit)
    let point = whole.len() as i64 - leading as i64 + exponent;
    format!("{}0.{significant}e{point}", if negative { "-" } else { "" })
}

fn hash_value(hasher: &mut Sha256, value: &AttributeValue) {
    let mut tagged = |tag: &str, bytes: &[u8]| {
        hasher.update(tag.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    match value {
        AttributeValue::S(s) => tagged("S", s.as_bytes()),
        AttributeValue::N(n) => tagged("N", canonical_number(n).as_bytes()),
        AttributeValue::B(b) => tagged("B", b.as_ref()),
        AttributeValue::Bool(b) => tagged("BOOL", &[*b as u8]),
        AttributeValue::Null(_) => tagged("NULL", &[]),
        AttributeValue::Ss(v) => {
            let mut v: Vec<&String> = v.iter().collect();
            v.sort();
            tagged("SS", &(v.len() as u64).to_le_bytes());
            v.iter().for_each(|s| tagged("s", s.as_bytes()));
        }
        AttributeValue::Ns(v) => {
            let mut v: Vec<String> = v.iter().map(|n| canonical_number(n)).collect();
            v.sort();
            tagged("NS", &(v.len() as u64).to_le_bytes());
            v.iter().for_each(|s| tagged("n", s.as_bytes()));
        }
        AttributeValue::Bs(v) => {
            let mut v: Vec<&[u8]> = v.iter().map(|b| b.as_ref()).collect();
            v.sort();
            tagged("BS", &(v.len() as u64).to_le_bytes());
            v.iter().for_each(|b| tagged("b", b));
        }
        AttributeValue::L(v) => {
            tagged("L", &(v.len() as u64).to_le_bytes());
            v.iter().for_each(|item| hash_value(hasher, item));
        }
        AttributeValue::M(m) => {
            hasher.update(b"M");
            hash_item(hasher, m);
        }
        _ => tagged("?", &[]),
    }
}

fn hash_item(hasher: &mut Sha256, item: &Item) {
    let mut keys: Vec<&String> = item.keys().collect();
    keys.sort();
    hasher.update((keys.len() as u64).to_le_bytes());
    for key in keys {
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hash_value(hasher, &item[key]);
    }
}

/// Equal for items DynamoDB considers equal (set order and number spelling aside).
pub fn digest(item: &Item) -> String {
    let mut hasher = Sha256::new();
    hash_item(&mut hasher, item);
    hex::encode(&hasher.finalize()[..16])
}

fn value_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => n.len().div_ceil(2) as u64 + 1,
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) as u64 + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|i| 1 + value_size(i)).sum::<u64>(),
        AttributeValue::M(m) => 3 + item_size(m),
        _ => 0,
    }
}

/// The item's size as DynamoDB counts it (names plus values), for `bytesCopied`.
pub fn item_size(item: &Item) -> u64 {
    item.iter()
        .map(|(k, v)| k.len() as u64 + value_size(v))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.into())
    }

    #[test]
    fn json_round_trip_keeps_every_type() {
        let item: Item = [
            ("s".to_string(), s("")),
            (
                "n".to_string(),
                AttributeValue::N("12345678901234567890123456789012345678".into()),
            ),
            (
                "b".to_string(),
                AttributeValue::B(Blob::new(vec![0, 159, 255])),
            ),
            (
                "ss".to_string(),
                AttributeValue::Ss(vec!["a".into(), "b".into()]),
            ),
            (
                "ns".to_string(),
                AttributeValue::Ns(vec!["1".into(), "2.5".into()]),
            ),
            (
                "bs".to_string(),
                AttributeValue::Bs(vec![Blob::new(vec![1])]),
            ),
            (
                "l".to_string(),
                AttributeValue::L(vec![
                    AttributeValue::Null(true),
                    AttributeValue::Bool(false),
                ]),
            ),
            (
                "m".to_string(),
                AttributeValue::M([("x".to_string(), s("é✓"))].into()),
            ),
        ]
        .into();
        let back = item_from_json(&item_to_json(&item)).unwrap();
        assert_eq!(back, item);
        assert_eq!(digest(&back), digest(&item));
    }

    #[test]
    fn digest_ignores_set_order_and_number_spelling_but_not_values() {
        let a: Item = [(
            "x".to_string(),
            AttributeValue::Ns(vec!["1.50".into(), "2".into()]),
        )]
        .into();
        let b: Item = [(
            "x".to_string(),
            AttributeValue::Ns(vec!["2".into(), "15E-1".into()]),
        )]
        .into();
        let c: Item = [(
            "x".to_string(),
            AttributeValue::Ns(vec!["2".into(), "1.51".into()]),
        )]
        .into();
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        let m: Item = [("x".to_string(), s("1"))].into();
        let n: Item = [("x".to_string(), AttributeValue::N("1".into()))].into();
        assert_ne!(digest(&m), digest(&n), "a string is not a number");
    }

    #[test]
    fn canonical_numbers() {
        assert_eq!(canonical_number("1.50"), canonical_number("15e-1"));
        assert_eq!(canonical_number("-0012.3400"), "-0.1234e2");
        assert_eq!(canonical_number("0.000"), "0");
        assert_eq!(canonical_number("0.0012"), "0.12e-2");
        assert_ne!(canonical_number("100"), canonical_number("10"));
    }

    #[test]
    fn sizes_count_names_and_values() {
        let item: Item = [
            ("PK".to_string(), s("IMAGE#1")),
            ("n".to_string(), AttributeValue::N("123".into())),
        ]
        .into();
        assert_eq!(item_size(&item), 2 + 7 + 1 + 3);
    }
}
