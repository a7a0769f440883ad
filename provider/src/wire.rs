//! Pulumi's property-value encoding on the wire (a `google.protobuf.Struct` with
//! signature-keyed objects for secrets and a sentinel string for unknowns), turned into
//! plain JSON for the resources and back.

use std::collections::BTreeSet;

use prost_types::{value::Kind, ListValue, Struct, Value as PbValue};
use serde_json::{Map, Number, Value};

pub const SIG_KEY: &str = "4dabf18193072939515e22adb298388d";
pub const SECRET_SIG: &str = "1b47061264138c4ac30d75fd1eb44270";
/// What the engine sends in place of a value not known until apply (preview only).
pub const UNKNOWN: &str = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/// A decoded property map: plain JSON plus the top-level keys that held a secret
/// anywhere inside, so that the same keys are secret again on the way out.
#[derive(Debug, Default, Clone)]
pub struct Props {
    pub value: Map<String, Value>,
    pub secret_keys: BTreeSet<String>,
}

impl Props {
    /// Decodes a struct from the engine. Keys starting with `__` are the engine's own
    /// bookkeeping (for example `__defaults`) and are dropped.
    pub fn decode(input: Option<&Struct>) -> Props {
        let mut props = Props::default();
        let Some(input) = input else { return props };
        for (key, value) in &input.fields {
            if key.starts_with("__") {
                continue;
            }
            let mut secret = false;
            props.value.insert(key.clone(), to_json(value, &mut secret));
            if secret {
                props.secret_keys.insert(key.clone());
            }
        }
        props
    }

    pub fn encode(&self) -> Struct {
        Struct {
            fields: self
                .value
                .iter()
                .map(|(key, value)| {
                    let encoded = if self.secret_keys.contains(key) {
                        from_json(&secret_json(value.clone()))
                    } else {
                        from_json(value)
                    };
                    (key.clone(), encoded)
                })
                .collect(),
        }
    }

    pub fn has_unknowns(&self) -> bool {
        self.value.values().any(contains_unknown)
    }
}

pub fn contains_unknown(value: &Value) -> bool {
    match value {
        Value::String(s) => s == UNKNOWN,
        Value::Array(items) => items.iter().any(contains_unknown),
        Value::Object(map) => map.values().any(contains_unknown),
        _ => false,
    }
}

fn to_json(value: &PbValue, secret: &mut bool) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(|v| to_json(v, secret)).collect())
        }
        Some(Kind::StructValue(object)) => {
            if let Some(sig) = signature(object) {
                if sig == SECRET_SIG {
                    *secret = true;
                    return object
                        .fields
                        .get("value")
                        .map(|v| to_json(v, secret))
                        .unwrap_or(Value::Null);
                }
            }
            Value::Object(
                object
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v, secret)))
                    .collect(),
            )
        }
    }
}

fn signature(object: &Struct) -> Option<&str> {
    match &object.fields.get(SIG_KEY)?.kind {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// Whole numbers become JSON integers so they deserialize into integer fields.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

pub fn from_json(value: &Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(from_json).collect(),
        }),
        Value::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
        }),
    };
    PbValue { kind: Some(kind) }
}

/// A value marked secret in the engine's own encoding, which `from_json` sends as a
/// secret and `Props::decode` reads back as one.
pub fn secret_json(value: Value) -> Value {
    let mut object = Map::new();
    object.insert(SIG_KEY.into(), Value::String(SECRET_SIG.into()));
    object.insert("value".into(), value);
    Value::Object(object)
}

/// A JSON object as a property map, for tests that write their inputs and states as
/// `json!` literals.
#[cfg(test)]
pub(crate) fn map(value: Value) -> Map<String, Value> {
    value.as_object().expect("a JSON object").clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pb(value: Value) -> Struct {
        match from_json(&value).kind {
            Some(Kind::StructValue(s)) => s,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn secrets_are_unwrapped_and_rewrapped_by_top_level_key() {
        let wire = pb(json!({
            "plain": "a",
            "nested": {"token": {SIG_KEY: SECRET_SIG, "value": "hunter2"}},
            "__defaults": []
        }));
        let props = Props::decode(Some(&wire));
        assert_eq!(props.value["nested"]["token"], json!("hunter2"));
        assert_eq!(props.value["plain"], json!("a"));
        assert!(!props.value.contains_key("__defaults"));
        assert_eq!(props.secret_keys.iter().collect::<Vec<_>>(), vec!["nested"]);

        let out = props.encode();
        let nested = &out.fields["nested"];
        let Some(Kind::StructValue(s)) = &nested.kind else {
            panic!("secret must be an object on the wire")
        };
        assert_eq!(signature(s), Some(SECRET_SIG));
        assert!(matches!(
            out.fields["plain"].kind,
            Some(Kind::StringValue(_))
        ));
    }

    #[test]
    fn unknowns_are_detected_at_any_depth() {
        let props = Props::decode(Some(&pb(json!({"a": ["x", {"b": UNKNOWN}]}))));
        assert!(props.has_unknowns());
        let props = Props::decode(Some(&pb(json!({"a": ["x", {"b": "known"}]}))));
        assert!(!props.has_unknowns());
    }

    #[test]
    fn whole_numbers_decode_as_integers() {
        let props = Props::decode(Some(&pb(json!({"n": 25, "f": 2.5}))));
        assert!(props.value["n"].is_i64());
        assert_eq!(props.value["f"], json!(2.5));
    }
}
