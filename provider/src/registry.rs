//! Everything the provider serves, by token: the server looks resources and functions up
//! here and knows none by name. Each resource's metadata is read once, from the marks on
//! its fields (see `resources::metadata`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::functions::{self, Function};
use crate::resources::metadata::Metadata;
use crate::resources::{
    bucket_sync, cdn_invalidation, dynamo_copy, model_copy, postgres_copy, queue_gate,
    snapshot_promote, workflow_run, Resource,
};

/// Everything this provider serves.
pub fn all() -> Registry {
    Registry::new(all_resources(), all_functions())
}

/// Every resource: adding one is adding a line here.
fn all_resources() -> Vec<Box<dyn Resource>> {
    vec![
        Box::new(bucket_sync::BucketSync),
        Box::new(dynamo_copy::DynamoCopy),
        Box::new(snapshot_promote::SnapshotPromote),
        Box::new(model_copy::ModelCopy),
        Box::new(queue_gate::QueueGate),
        Box::new(workflow_run::WorkflowRun),
        Box::new(cdn_invalidation::CdnInvalidation),
        Box::new(postgres_copy::PostgresCopy),
        // CONTRIBUTING's fifth resource, added as any other is (test builds only).
        #[cfg(test)]
        Box::new(crate::harness::fifth_resource::Marker),
    ]
}

/// Every function: adding one is adding a line here.
fn all_functions() -> Vec<Box<dyn Function>> {
    vec![Box::new(functions::get_stack_outputs::GetStackOutputs)]
}

/// A resource with the schemas and metadata read from its types.
pub(crate) struct Registered {
    pub resource: Box<dyn Resource>,
    pub inputs: Value,
    pub outputs: Value,
    pub metadata: Metadata,
}

impl Registered {
    pub(crate) fn new(resource: Box<dyn Resource>) -> Self {
        let inputs = resource.input_schema();
        let outputs = resource.output_schema();
        let metadata = Metadata::read(resource.token(), &inputs, &outputs);
        Registered {
            resource,
            inputs,
            outputs,
            metadata,
        }
    }
}

pub struct Registry {
    resources: BTreeMap<&'static str, Registered>,
    functions: BTreeMap<&'static str, Box<dyn Function>>,
}

impl Registry {
    pub(crate) fn new(
        resources: Vec<Box<dyn Resource>>,
        functions: Vec<Box<dyn Function>>,
    ) -> Self {
        Registry {
            resources: resources
                .into_iter()
                .map(|r| (r.token(), Registered::new(r)))
                .collect(),
            functions: functions.into_iter().map(|f| (f.token(), f)).collect(),
        }
    }

    pub(crate) fn resource(&self, token: &str) -> Option<&Registered> {
        self.resources.get(token)
    }

    pub(crate) fn function(&self, token: &str) -> Option<&dyn Function> {
        self.functions.get(token).map(|f| f.as_ref())
    }

    /// In token order.
    pub(crate) fn resources(&self) -> impl Iterator<Item = &Registered> {
        self.resources.values()
    }

    pub(crate) fn functions(&self) -> impl Iterator<Item = &dyn Function> {
        self.functions.values().map(|f| f.as_ref())
    }

    /// Every token, for messages naming what exists.
    pub(crate) fn tokens(&self) -> Vec<&'static str> {
        self.resources
            .keys()
            .chain(self.functions.keys())
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::metadata::{ENVIRONMENT, PENDING, REPLACES_ON_CHANGE, SECRET};

    /// Every mark a field may carry; any other `x-` key is a typo.
    const MARKS: [&str; 4] = [REPLACES_ON_CHANGE, PENDING, SECRET, ENVIRONMENT];

    /// Every `x-` key anywhere in a schema, with where it is.
    fn marks_in(schema: &Value, path: &str, found: &mut Vec<(String, String)>) {
        match schema {
            Value::Object(object) => {
                for (key, value) in object {
                    if key.starts_with("x-") {
                        found.push((path.to_string(), key.clone()));
                    }
                    marks_in(value, &format!("{path}.{key}"), found);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| marks_in(v, path, found)),
            _ => {}
        }
    }

    #[test]
    fn every_mark_is_one_the_provider_reads() {
        let registry = all();
        let mut found = Vec::new();
        for registered in registry.resources() {
            marks_in(&registered.inputs, registered.resource.token(), &mut found);
            marks_in(&registered.outputs, registered.resource.token(), &mut found);
        }
        for function in registry.functions() {
            marks_in(&function.input_schema(), function.token(), &mut found);
            marks_in(&function.output_schema(), function.token(), &mut found);
        }
        let config = crate::resources::schema_of::<crate::config::ProviderConfig>();
        marks_in(&config, "config", &mut found);
        assert!(!found.is_empty());
        let unknown: Vec<_> = found
            .iter()
            .filter(|(_, mark)| !MARKS.contains(&mark.as_str()))
            .collect();
        assert!(unknown.is_empty(), "unknown marks: {unknown:?}");
    }

    #[test]
    fn every_resource_replaces_on_what_it_writes_to_and_shows_pending_work() {
        for registered in all().resources() {
            let token = registered.resource.token();
            assert!(
                !registered.metadata.replace_on_change.is_empty(),
                "{token}: mark the inputs naming what it writes to x-replace-on-change: a new target is a new copy"
            );
            assert!(
                registered.outputs["properties"]
                    .get(&registered.metadata.pending_output)
                    .is_some(),
                "{token}"
            );
        }
    }

    #[test]
    fn the_registry_knows_each_token_once() {
        let registry = all();
        let tokens = registry.tokens();
        let mut distinct = tokens.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            tokens.len(),
            all_resources().len() + all_functions().len(),
            "a resource and a function share a token"
        );
        assert_eq!(distinct.len(), tokens.len());
        assert!(registry.resource("stackmigrate:index:BucketSync").is_some());
        assert!(registry
            .function("stackmigrate:index:getStackOutputs")
            .is_some());
        assert!(registry
            .resource("stackmigrate:index:getStackOutputs")
            .is_none());
    }
}
