//! The Pulumi package schema, generated from the same Rust types the resources decode
//! their inputs into and encode their outputs from (their doc comments are the
//! descriptions), so the schema cannot drift from the code.

use serde_json::{json, Map, Value};

use crate::config::ProviderConfig;
use crate::functions::Function;
use crate::registry::{Registered, Registry};
use crate::resources::metadata::{ENVIRONMENT, SECRET};
use crate::resources::schema_of;

pub(crate) const PACKAGE: &str = "stackmigrate";
const REPOSITORY: &str = "https://github.com/stackmigrate/stackmigrate";
/// Where the engine downloads the plugin (`${VERSION}` is the plugin's version). A
/// mirror's SDKs carry their own (`scripts/release.sh --plugin-download-url`).
const PLUGIN_DOWNLOAD_URL: &str =
    "https://github.com/stackmigrate/stackmigrate/releases/download/v${VERSION}/";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Converter<'a> {
    definitions: &'a Map<String, Value>,
    types: &'a mut Map<String, Value>,
}

impl Converter<'_> {
    fn type_token(name: &str) -> String {
        format!("{PACKAGE}:index:{name}")
    }

    /// One JSON Schema (draft 7, as schemars writes it) to a Pulumi type spec.
    fn convert(&mut self, schema: &Value) -> Value {
        let Some(object) = schema.as_object() else {
            return json!({"$ref": "pulumi.json#/Any"});
        };
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            return self.reference(reference);
        }
        for combinator in ["allOf", "anyOf", "oneOf"] {
            if let Some(options) = object.get(combinator).and_then(Value::as_array) {
                // Option<T> is `anyOf: [T, null]`: the type is T.
                if let Some(first) = options
                    .iter()
                    .find(|o| o.get("type") != Some(&json!("null")))
                {
                    return self.convert(first);
                }
            }
        }
        let kind = match object.get("type") {
            Some(Value::Array(kinds)) => kinds.iter().find(|k| *k != "null").cloned(),
            other => other.cloned(),
        };
        match kind.as_ref().and_then(Value::as_str) {
            Some("array") => {
                let items = object.get("items").cloned().unwrap_or(Value::Bool(true));
                json!({"type": "array", "items": self.convert(&items)})
            }
            Some("object") => {
                let values = object
                    .get("additionalProperties")
                    .cloned()
                    .unwrap_or(Value::Bool(true));
                json!({"type": "object", "additionalProperties": self.convert(&values)})
            }
            Some(kind @ ("string" | "integer" | "number" | "boolean")) => json!({"type": kind}),
            _ => json!({"$ref": "pulumi.json#/Any"}),
        }
    }

    /// A named type: an object type or a string enum, registered under `types`.
    fn reference(&mut self, reference: &str) -> Value {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        let token = Self::type_token(name);
        if !self.types.contains_key(&token) {
            let definition = self.definitions.get(name).cloned().unwrap_or(Value::Null);
            let spec = if let Some(variants) = definition.get("oneOf").and_then(Value::as_array) {
                let values: Vec<Value> = variants
                    .iter()
                    .filter_map(|v| {
                        let value = v
                            .get("const")
                            .or_else(|| v.get("enum").and_then(|e| e.get(0)))?;
                        Some(json!({
                            "value": value,
                            "description": v.get("description").cloned().unwrap_or(Value::Null),
                        }))
                    })
                    .collect();
                json!({"type": "string", "enum": values})
            } else if let Some(values) = definition.get("enum").and_then(Value::as_array) {
                let values: Vec<Value> = values.iter().map(|v| json!({"value": v})).collect();
                json!({"type": "string", "enum": values})
            } else {
                // Registered before its properties so that recursive types terminate.
                self.types.insert(token.clone(), Value::Null);
                let (properties, required) = self.properties(&definition);
                json!({"type": "object", "properties": properties, "required": required})
            };
            let mut spec = spec.as_object().cloned().unwrap_or_default();
            if let Some(description) = definition.get("description") {
                spec.insert("description".into(), description.clone());
            }
            self.types.insert(token.clone(), Value::Object(spec));
        }
        json!({"$ref": format!("#/types/{token}")})
    }

    /// The `properties` of an object schema, with descriptions, defaults and secrets.
    fn properties(&mut self, schema: &Value) -> (Map<String, Value>, Vec<String>) {
        let mut out = Map::new();
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (name, property) in properties {
            let mut spec = self
                .convert(property)
                .as_object()
                .cloned()
                .unwrap_or_default();
            if let Some(description) = property.get("description") {
                spec.insert("description".into(), description.clone());
            }
            // Scalars and enum values; lists and objects have no schema default.
            if let Some(default) = property.get("default").filter(|d| !d.is_null()) {
                if !default.is_array() && !default.is_object() {
                    spec.insert("default".into(), default.clone());
                }
            }
            if let Some(variables) = property.get(ENVIRONMENT) {
                spec.insert("defaultInfo".into(), json!({"environment": variables}));
            }
            if property.get(SECRET) == Some(&Value::Bool(true)) {
                spec.insert("secret".into(), Value::Bool(true));
            }
            out.insert(name.clone(), Value::Object(spec));
        }
        let required = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (out, required)
    }
}

fn definitions(schema: &Value) -> Map<String, Value> {
    schema
        .get("definitions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The `properties` and `required` of an object schema, its named types registered.
fn object_spec(
    schema: &Value,
    types: &mut Map<String, Value>,
) -> (Map<String, Value>, Vec<String>) {
    let definitions = definitions(schema);
    Converter {
        definitions: &definitions,
        types,
    }
    .properties(schema)
}

fn resource_spec(registered: &Registered, types: &mut Map<String, Value>) -> Value {
    // Marked on the fields Diff reads, so the SDKs and the provider agree.
    let mark_replacements = |properties: &mut Map<String, Value>| {
        for name in &registered.metadata.replace_on_change {
            if let Some(Value::Object(spec)) = properties.get_mut(name) {
                spec.insert("replaceOnChanges".into(), Value::Bool(true));
            }
        }
    };
    let (mut input_properties, required_inputs) = object_spec(&registered.inputs, types);
    mark_replacements(&mut input_properties);
    let (output_properties, output_required) = object_spec(&registered.outputs, types);
    // The state holds the inputs with the outputs on top.
    let mut properties = input_properties.clone();
    properties.extend(output_properties);
    mark_replacements(&mut properties);
    let mut required: Vec<String> = required_inputs
        .iter()
        .chain(&output_required)
        .cloned()
        .collect();
    required.sort();
    required.dedup();
    json!({
        "description": registered.resource.description(),
        "inputProperties": input_properties,
        "requiredInputs": required_inputs,
        "properties": properties,
        "required": required,
    })
}

fn function_spec(function: &dyn Function, types: &mut Map<String, Value>) -> Value {
    let (inputs, required_inputs) = object_spec(&function.input_schema(), types);
    let (outputs, required_outputs) = object_spec(&function.output_schema(), types);
    json!({
        "description": function.description(),
        "inputs": {"properties": inputs, "required": required_inputs},
        "outputs": {"properties": outputs, "required": required_outputs},
    })
}

/// The whole package schema of a registry's resources and functions.
pub(crate) fn package_schema(registry: &Registry) -> Value {
    let mut types = Map::new();
    let mut resource_specs = Map::new();
    for registered in registry.resources() {
        let spec = resource_spec(registered, &mut types);
        resource_specs.insert(registered.resource.token().to_string(), spec);
    }
    let mut function_specs = Map::new();
    for function in registry.functions() {
        let spec = function_spec(function, &mut types);
        function_specs.insert(function.token().to_string(), spec);
    }
    let (config_properties, _) = object_spec(&schema_of::<ProviderConfig>(), &mut types);
    json!({
        "name": PACKAGE,
        "displayName": "stackmigrate",
        "version": VERSION,
        "description": "Data migrations between Pulumi stacks as resources: DynamoDB tables, S3 buckets, ChromaDB snapshots and models. Preview is the dry run, up copies and verifies, destroy rolls back.",
        "keywords": ["pulumi", "migration", "s3", "dynamodb", "category/utility", "kind/native"],
        "license": "Apache-2.0",
        "publisher": "stackmigrate",
        "homepage": REPOSITORY,
        "repository": REPOSITORY,
        "logoUrl": format!("{REPOSITORY}/raw/main/docs/logo.svg"),
        "pluginDownloadURL": PLUGIN_DOWNLOAD_URL,
        "config": {"variables": config_properties},
        "provider": {
            "description": "The stackmigrate provider: source and target connections, the stacks whose outputs name tables and buckets, and where journals live.",
            "inputProperties": config_properties,
        },
        "types": types,
        "resources": resource_specs,
        "functions": function_specs,
        "language": {
            // respectSchemaVersion: each SDK and its pulumi-plugin.json carry the schema's
            // version, so the engine knows which plugin to fetch and from where.
            "nodejs": {
                "packageName": "@stackmigrate/stackmigrate",
                "packageDescription": "stackmigrate: data migrations between Pulumi stacks as resources",
                "dependencies": {"@pulumi/pulumi": "^3.0.0"},
                "respectSchemaVersion": true,
            },
            "python": {
                "packageName": "pulumi_stackmigrate",
                "requires": {"pulumi": ">=3.0.0,<4.0.0"},
                "pyproject": {"enabled": true},
                "respectSchemaVersion": true,
            },
            "go": {
                "importBasePath": "github.com/stackmigrate/stackmigrate/sdk/go/stackmigrate",
                "generateResourceContainerTypes": true,
                "respectSchemaVersion": true,
            },
            // Not `Pulumi`: that namespace is Pulumi's own on NuGet.
            "csharp": {
                "rootNamespace": "StackMigrate",
                "packageReferences": {"Pulumi": "3.*"},
                "respectSchemaVersion": true,
            },
        },
    })
}

/// The schema of `registry`; of `registry::all()`, it is `schema/schema.json`.
pub fn package_schema_text(registry: &Registry) -> String {
    let mut text =
        serde_json::to_string_pretty(&package_schema(registry)).expect("a JSON value serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    fn each_property(schema: &Value, mut check: impl FnMut(&str, &Value)) {
        for (token, resource) in schema["resources"].as_object().unwrap() {
            for section in ["inputProperties", "properties"] {
                for (name, property) in resource[section].as_object().unwrap() {
                    check(&format!("{token}.{section}.{name}"), property);
                }
            }
        }
        for (token, ty) in schema["types"].as_object().unwrap() {
            for (name, property) in ty
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                check(&format!("{token}.{name}"), property);
            }
        }
        for (name, property) in schema["config"]["variables"].as_object().unwrap() {
            check(&format!("config.{name}"), property);
        }
    }

    #[test]
    fn every_input_and_output_is_described() {
        let schema = package_schema(&registry::all());
        each_property(&schema, |path, property| {
            let description = property
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            assert!(!description.trim().is_empty(), "{path} has no description");
        });
    }

    #[test]
    fn types_are_pulumi_types() {
        let schema = package_schema(&registry::all());
        each_property(&schema, |path, property| {
            let ok = property.get("$ref").is_some()
                || matches!(
                    property.get("type").and_then(Value::as_str),
                    Some("string" | "integer" | "number" | "boolean" | "array" | "object")
                );
            assert!(ok, "{path} has no Pulumi type: {property}");
        });
        let on_conflict = &schema["types"]["stackmigrate:index:OnConflict"];
        assert_eq!(on_conflict["type"], "string");
        assert_eq!(on_conflict["enum"].as_array().unwrap().len(), 3);
        let connection = &schema["types"]["stackmigrate:index:Connection"]["properties"];
        assert_eq!(connection["secretAccessKey"]["secret"], true);
        assert_eq!(
            schema["config"]["variables"]["source"]["$ref"],
            "#/types/stackmigrate:index:Connection"
        );
    }

    #[test]
    fn replace_on_changes_in_the_schema_are_what_diff_replaces_on() {
        let generated = package_schema(&registry::all());
        for registered in registry::all().resources() {
            let token = registered.resource.token();
            for section in ["inputProperties", "properties"] {
                let mut in_schema: Vec<&String> = generated["resources"][token][section]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(_, p)| p["replaceOnChanges"] == true)
                    .map(|(name, _)| name)
                    .collect();
                in_schema.sort();
                let mut in_diff: Vec<&String> =
                    registered.metadata.replace_on_change.iter().collect();
                in_diff.sort();
                assert_eq!(in_schema, in_diff, "{token}.{section}");
            }
        }
    }

    #[test]
    fn every_resource_and_function_shows_an_example_in_each_language() {
        let schema = package_schema(&registry::all());
        let described = schema["resources"]
            .as_object()
            .unwrap()
            .iter()
            .chain(schema["functions"].as_object().unwrap());
        for (token, spec) in described {
            let description = spec["description"].as_str().unwrap();
            assert!(
                description.contains("{{% examples %}}")
                    && description.contains("{{% /examples %}}"),
                "{token}"
            );
            for language in ["typescript", "python", "go", "csharp", "yaml"] {
                assert!(
                    description.contains(&format!("```{language}\n")),
                    "{token}: {language}"
                );
            }
        }
    }
}
