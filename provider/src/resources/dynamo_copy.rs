//! DynamoCopy: copies a table's items into another table, filtered by entity type and
//! transformed (bucket names rewritten, attributes reset), with a plan at preview, a
//! journal, read-back verification and rollback.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Context, Failure, Migration, Planned, Side, TargetClaim};
use crate::copy::dynamodb;
use crate::copy::rewrite::Rewriter;
use crate::copy::table::{self, CopyCounts, CopySpec};
use crate::stacks::bucket_renames;

pub struct DynamoCopy;

/// What to do with an item whose key the target already has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ItemConflict {
    /// Leave the target's item as it is.
    #[default]
    Skip,
    /// Replace it; the old item is kept in the journal and restored by destroy.
    Overwrite,
    /// Stop at preview, naming the keys that exist.
    Fail,
}

impl From<ItemConflict> for table::ItemConflict {
    fn from(choice: ItemConflict) -> Self {
        match choice {
            ItemConflict::Skip => table::ItemConflict::Skip,
            ItemConflict::Overwrite => table::ItemConflict::Overwrite,
            ItemConflict::Fail => table::ItemConflict::Fail,
        }
    }
}

/// How the target is kept in step with the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CopyMode {
    /// Copy the selected items; never delete (`onConflict` decides for existing keys).
    #[default]
    Copy,
    /// Keep the target equal to the source group by group (a group: the items under one partition key, for example one image): new groups are added, changed ones replaced (their target items the source lacks deleted), groups gone from the source deleted when `allowDeletes` is true; unchanged groups are left as they are. A group's fingerprint ignores rewritten bucket names and the attributes `setAttributes` sets. Only items of the selected types take part; `onConflict` does not apply.
    Mirror,
}

/// Sets one attribute to a string on every item of the given types.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetAttribute {
    /// Entity types (values of the type attribute) whose items get the attribute.
    pub types: Vec<String>,
    /// Attribute name, for example `embedding_status` or `GSI1PK`.
    pub attribute: String,
    /// String value to store, for example `NONE` or `EMBEDDING_STATUS#NONE`.
    pub value: String,
}

impl From<&SetAttribute> for table::SetAttribute {
    fn from(set: &SetAttribute) -> Self {
        table::SetAttribute {
            types: set.types.clone(),
            attribute: set.attribute.clone(),
            value: set.value.clone(),
        }
    }
}

/// Counts for one entity type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeCounts {
    /// Items written (new ones and overwrites).
    pub copied: u64,
    /// Items the target already had and that were left alone.
    pub skipped: u64,
    /// Of `copied`, items that replaced an existing one (a MODIFY event for the target's stream).
    pub overwritten: u64,
    /// Items left out by `includeTypes` / `excludeTypes`.
    pub filtered: u64,
    /// Items not copied because their TTL has passed.
    pub expired: u64,
}

impl From<table::TypeCounts> for TypeCounts {
    fn from(counts: table::TypeCounts) -> Self {
        let table::TypeCounts {
            copied,
            skipped,
            overwritten,
            filtered,
            expired,
        } = counts;
        TypeCounts {
            copied,
            skipped,
            overwritten,
            filtered,
            expired,
        }
    }
}

fn default_type_attribute() -> String {
    "TYPE".to_string()
}

fn default_output() -> String {
    "dynamodb_table_name".to_string()
}

fn yes() -> bool {
    true
}

/// Inputs of DynamoCopy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// Table to copy from, on the source connection. Never written. Default: the `output` of `sourceStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub source_table: Option<String>,
    /// Table to copy into, on the target connection; it must have the source's key schema. Default: the `output` of `targetStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub target_table: Option<String>,
    /// Stack output naming the table, read from `sourceStack` and `targetStack` when `sourceTable` / `targetTable` are not set. Default `dynamodb_table_name`.
    #[serde(default = "default_output")]
    pub output: String,
    /// Attribute naming an item's entity type. Default `TYPE`.
    #[serde(default = "default_type_attribute")]
    pub type_attribute: String,
    /// Copy only these entity types. Default: every type.
    pub include_types: Option<Vec<String>>,
    /// Entity types not to copy, for example `COMPACTION_LOCK` or `JOB`.
    #[serde(default)]
    pub exclude_types: Vec<String>,
    /// Strings replaced in every string value at any depth (strings, string sets, nested maps and lists); key attributes are never rewritten. Default: every output present in both stacks whose name ends in `bucket_name` or `bucket` and whose values differ, source value to target value.
    pub rewrite: Option<BTreeMap<String, String>>,
    /// Attributes set on items of given types, for example `embedding_status` = `NONE` with its `GSI1PK` = `EMBEDDING_STATUS#NONE`.
    #[serde(default)]
    pub set_attributes: Vec<SetAttribute>,
    /// For a key the target already has: `skip` (default) leaves it, `overwrite` replaces it (the old item is journalled and restored by destroy), `fail` stops at preview naming the keys.
    #[serde(default)]
    pub on_conflict: ItemConflict,
    /// Leave out items whose TTL (the source table's TTL attribute) has passed. Default true.
    #[serde(default = "yes")]
    pub skip_expired: bool,
    /// Entity types written first, in this order; the rest follow.
    #[serde(default)]
    pub write_order: Vec<String>,
    /// Most items written per second. Default: the target's write capacity units when it is provisioned; on demand, as fast as the table takes them (throttling slows the copy down on its own).
    pub max_write_rate: Option<f64>,
    /// Allow `includeTypes`/`excludeTypes` to select no item of a source table that has items. Default false: such a selection fails at preview, as it is usually a mistake.
    #[serde(default)]
    pub allow_empty: bool,
    /// Let other live migrations that also set `shareTarget` copy into the target table: whichever is destroyed first hands the others its backups of the items they wrote over, so destroys in any order put back what was there before. Default false: another migration into the table is refused at preview, naming it.
    #[serde(default)]
    pub share_target: bool,
    /// `copy` (default) or `mirror`.
    #[serde(default)]
    pub mode: CopyMode,
    /// With `mode: mirror`: the attribute that groups items. Only the table's partition key is supported, which is the default.
    pub group_key: Option<String>,
    /// With `mode: mirror`: delete the target's groups that are gone from the source (destroy puts them back). Default false: such groups fail the preview, naming them.
    #[serde(default)]
    pub allow_deletes: bool,
}

/// Outputs of DynamoCopy: what the last run did (in preview, what it would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// The source table, as given or read from the source stack's outputs.
    pub source_table: String,
    /// The target table, as given or read from the target stack's outputs.
    pub target_table: String,
    /// The string replacements applied (given, or derived from the stacks' bucket outputs).
    pub rewrites: BTreeMap<String, String>,
    /// Per bucket name replaced, how many string values of the selected items it rewrote (in preview: would rewrite); a name inside a longer word or name is never rewritten.
    pub values_rewritten: BTreeMap<String, u64>,
    /// Items read from the source table.
    pub items_scanned: u64,
    /// Items written to the target (new ones and overwrites).
    #[schemars(extend("x-pending" = true))]
    pub items_copied: u64,
    /// Items whose key the target already had, left alone (or already equal).
    pub items_skipped: u64,
    /// Of `itemsCopied`, those that replaced an existing item: each is a MODIFY event for the target's stream handler.
    pub items_overwritten: u64,
    /// Items left out by `includeTypes` / `excludeTypes`.
    pub items_filtered: u64,
    /// Items left out because their TTL has passed.
    pub items_expired: u64,
    /// The counts above per entity type.
    pub counts_by_type: BTreeMap<String, TypeCounts>,
    /// Bytes written, as DynamoDB sizes items.
    pub bytes_copied: u64,
    /// True once every written item read back equal to its transformed source item (and, mirroring, every deleted one read back absent).
    pub verified: bool,
    /// Mirror mode: target items deleted (their group changed or is gone from the source).
    #[serde(default)]
    pub items_deleted: u64,
    /// Mirror mode: groups new in the source, added to the target.
    #[serde(default)]
    pub groups_added: u64,
    /// Mirror mode: groups that differ between source and target, replaced by the source's.
    #[serde(default)]
    pub groups_replaced: u64,
    /// Mirror mode: groups gone from the source, deleted from the target.
    #[serde(default)]
    pub groups_deleted: u64,
    /// Mirror mode: groups equal on both sides (bucket names and set attributes aside), left as they are.
    #[serde(default)]
    pub groups_unchanged: u64,
}

impl Outputs {
    fn from_counts(
        spec: &CopySpec,
        rewrites: BTreeMap<String, String>,
        counts: CopyCounts,
        verified: bool,
    ) -> Self {
        Outputs {
            source_table: spec.source.name.clone(),
            target_table: spec.target.name.clone(),
            rewrites,
            values_rewritten: counts.rewritten,
            items_scanned: counts.scanned,
            items_copied: counts.copied,
            items_skipped: counts.skipped,
            items_overwritten: counts.overwritten,
            items_filtered: counts.filtered,
            items_expired: counts.expired,
            counts_by_type: counts
                .by_type
                .into_iter()
                .map(|(name, counts)| (name, counts.into()))
                .collect(),
            bytes_copied: counts.bytes_copied,
            verified,
            items_deleted: counts.deleted,
            groups_added: counts.groups.added,
            groups_replaced: counts.groups.replaced,
            groups_deleted: counts.groups.deleted,
            groups_unchanged: counts.groups.unchanged,
        }
    }
}

/// Parallel scan segments: enough to keep a table busy without a page per core too many.
const SCAN_SEGMENTS: i32 = 8;

impl Inputs {
    /// Every type name the inputs mention, with the input that mentions it.
    fn named_types(&self) -> Vec<(&'static str, &str)> {
        let mut named: Vec<(&'static str, &str)> = Vec::new();
        named.extend(
            self.include_types
                .iter()
                .flatten()
                .map(|t| ("includeTypes", t.as_str())),
        );
        named.extend(
            self.exclude_types
                .iter()
                .map(|t| ("excludeTypes", t.as_str())),
        );
        named.extend(self.write_order.iter().map(|t| ("writeOrder", t.as_str())));
        for set in &self.set_attributes {
            named.extend(set.types.iter().map(|t| ("setAttributes", t.as_str())));
        }
        named
    }
}

impl DynamoCopy {
    /// The rewrite map: as given, else derived from the two stacks' bucket outputs.
    async fn rewrites(ctx: &Context, inputs: &Inputs) -> Result<BTreeMap<String, String>> {
        if let Some(given) = &inputs.rewrite {
            return Ok(given.clone());
        }
        match (
            ctx.stack_outputs(Side::Source).await?,
            ctx.stack_outputs(Side::Target).await?,
        ) {
            (Some(source), Some(target)) => Ok(bucket_renames(&source, &target)),
            _ => Ok(BTreeMap::new()),
        }
    }

    async fn spec(
        ctx: &Context,
        inputs: &Inputs,
        rewrites: &BTreeMap<String, String>,
    ) -> Result<CopySpec> {
        let config = &ctx.config;
        let output = Some(inputs.output.as_str());
        let source_table = ctx
            .resolve(Side::Source, "sourceTable", &inputs.source_table, output)
            .await?;
        let target_table = ctx
            .resolve(Side::Target, "targetTable", &inputs.target_table, output)
            .await?;
        if config.source.same_dynamodb_as(&config.target) && source_table == target_table {
            bail!(
                "source and target are the same table ({:?} at {}): a copy would write into its own source; name another targetTable",
                source_table,
                config.source.describe_dynamodb()
            );
        }
        let source = ctx.clients.source.table(&source_table).await?;
        let target = ctx.clients.target.table(&target_table).await?;
        let shape =
            dynamodb::describe(&source, "source", &config.source.describe_dynamodb()).await?;
        let target_shape =
            dynamodb::describe(&target, "target", &config.target.describe_dynamodb()).await?;
        if shape.identity.is_some() && shape.identity == target_shape.identity {
            bail!(
                "source and target are the same table: {:?} at {} and {:?} at {} are one table to DynamoDB ({}); \
                 a copy would write into its own source; name another targetTable or target connection",
                source.name,
                config.source.describe_dynamodb(),
                target.name,
                config.target.describe_dynamodb(),
                shape.identity.as_deref().unwrap_or_default(),
            );
        }
        if shape.key_schema != target_shape.key_schema {
            bail!(
                "target table {:?} has the key schema {} but source table {:?} has {}: items cannot be copied between different key schemas; copy into a table keyed like the source",
                target.name,
                target_shape.key_schema,
                source.name,
                shape.key_schema
            );
        }
        if let Some(identity) = &target_shape.identity {
            let claim = TargetClaim::table(&target.name, identity).shared(inputs.share_target);
            ctx.claim_target(&claim).await?;
        }
        if let Some(failure) = index_type_failure(&inputs.set_attributes, &target_shape) {
            bail!(failure);
        }
        if let Some(group_key) = inputs.group_key.as_ref().filter(|g| **g != shape.keys[0]) {
            bail!(
                "groupKey {group_key:?} is not the partition key of table {:?} ({}): mirror mode groups items by partition key; leave groupKey out",
                source.name,
                shape.key_schema
            );
        }
        if let Some(set) = inputs
            .set_attributes
            .iter()
            .find(|s| shape.keys.contains(&s.attribute))
        {
            bail!(
                "setAttributes would change the key attribute {:?}; only non-key attributes can be set",
                set.attribute
            );
        }
        Ok(CopySpec {
            source,
            target,
            keys: shape.keys,
            type_attribute: inputs.type_attribute.clone(),
            include: inputs
                .include_types
                .as_ref()
                .map(|t| t.iter().cloned().collect()),
            exclude: inputs.exclude_types.iter().cloned().collect(),
            rewriter: Rewriter::new(rewrites),
            set_attributes: inputs.set_attributes.iter().map(Into::into).collect(),
            on_conflict: inputs.on_conflict.into(),
            expire_by: shape.ttl_attribute.filter(|_| inputs.skip_expired),
            write_order: inputs.write_order.clone(),
            // A provisioned target's write capacity is the default pace (one unit writes
            // an item of up to 1 KB a second); throttling beyond it is retried.
            max_write_rate: inputs
                .max_write_rate
                .or(target_shape.provisioned_writes.map(|units| units as f64)),
            segments: SCAN_SEGMENTS,
            mirror: (inputs.mode == CopyMode::Mirror).then_some(table::Mirror {
                allow_deletes: inputs.allow_deletes,
            }),
        })
    }
}

/// Checks a plan against the inputs: named types must exist, `fail` must find no keys.
/// `setAttributes` stores strings: one that sets a target index's key typed otherwise
/// would make DynamoDB refuse every item it touches, halfway through the copy.
fn index_type_failure(sets: &[SetAttribute], target: &dynamodb::TableShape) -> Option<String> {
    sets.iter().find_map(|set| {
        let (index, _, kind) = target
            .index_keys
            .iter()
            .find(|(_, attribute, kind)| *attribute == set.attribute && kind != "S")?;
        Some(format!(
            "setAttributes sets {:?} to a string, but the target's index {index:?} keys items by it as type {kind}: DynamoDB would refuse every item it is set on; set another attribute, or none",
            set.attribute
        ))
    })
}

fn check_plan(inputs: &Inputs, counts: &CopyCounts) -> Result<()> {
    let present = &counts.types_present;
    let unknown: Vec<String> = inputs
        .named_types()
        .into_iter()
        .filter(|(_, t)| !present.contains(*t))
        .map(|(input, t)| format!("{t:?} in {input}"))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown entity type {}; the source table holds: {}",
            unknown.join(", "),
            present.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !inputs.allow_empty && counts.scanned > 0 && counts.filtered == counts.scanned {
        bail!(
            "includeTypes/excludeTypes select none of the {} items of the source table, which holds: {}; fix the type lists, or set allowEmpty: true if nothing is meant to be copied",
            counts.scanned,
            present.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if counts.conflict_count > 0 {
        bail!(
            "onConflict is fail and the target already has {} of the keys, for example {}",
            counts.conflict_count,
            counts.conflicts.join(", ")
        );
    }
    Ok(())
}

#[async_trait]
impl Migration for DynamoCopy {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:DynamoCopy";
    const DESCRIPTION: &'static str = concat!(
        "Copies a DynamoDB table's items into another table: filtered by entity type, \
        bucket names rewritten, attributes reset. Preview counts per type, up copies in 25-item batches, verifies by \
        reading back, journals; destroy deletes what it created and restores what it overwrote.",
        include_str!("examples/DynamoCopy.md")
    );

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let mut failures = Vec::new();
        for (value, name) in [
            (&inputs.source_table, "sourceTable"),
            (&inputs.target_table, "targetTable"),
        ] {
            if value.as_ref().is_some_and(|t| t.trim().is_empty()) {
                failures.push(Failure::new(name, "must name a table"));
            }
        }
        if inputs.output.trim().is_empty() {
            failures.push(Failure::new(
                "output",
                "must name a stack output, for example dynamodb_table_name",
            ));
        }
        if inputs.type_attribute.trim().is_empty() {
            failures.push(Failure::new(
                "typeAttribute",
                "must name the attribute holding the entity type, for example TYPE",
            ));
        }
        if let Some(rewrite) = &inputs.rewrite {
            if rewrite.keys().any(|from| from.is_empty()) {
                failures.push(Failure::new(
                    "rewrite",
                    "has an empty key; each key is a bucket name to replace, for example portfolio-dev-images",
                ));
            }
        }
        if inputs
            .max_write_rate
            .is_some_and(|r| r.is_nan() || r <= 0.0)
        {
            failures.push(Failure::new(
                "maxWriteRate",
                "must be a number of items per second above 0",
            ));
        }
        let excluded: HashSet<&String> = inputs.exclude_types.iter().collect();
        for t in inputs
            .include_types
            .iter()
            .flatten()
            .filter(|t| excluded.contains(t))
        {
            failures.push(Failure::new(
                "excludeTypes",
                format!("{t:?} is both included and excluded"),
            ));
        }
        if inputs.mode != CopyMode::Mirror {
            for (property, set) in [
                ("groupKey", inputs.group_key.is_some()),
                ("allowDeletes", inputs.allow_deletes),
            ] {
                if set {
                    failures.push(Failure::new(
                        property,
                        "applies only to mode: mirror; set mode: mirror, or leave it out",
                    ));
                }
            }
        }
        for (index, set) in inputs.set_attributes.iter().enumerate() {
            if set.attribute.trim().is_empty() {
                failures.push(Failure::new(
                    &format!("setAttributes[{index}].attribute"),
                    "must name an attribute",
                ));
            }
            if set.types.is_empty() {
                failures.push(Failure::new(
                    &format!("setAttributes[{index}].types"),
                    "must list at least one entity type",
                ));
            }
        }
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let rewrites = Self::rewrites(ctx, inputs).await?;
        let spec = Self::spec(ctx, inputs, &rewrites).await?;
        let journal = ctx.journal().await?;
        let counts =
            table::plan(&spec, &journal, ctx.progress.as_ref(), ctx.compare_target).await?;
        check_plan(inputs, &counts)?;
        for (from, to) in &rewrites {
            // A name no selected item holds changes nothing: the outputs list it.
            if let Some(values) = counts.rewritten.get(from).filter(|v| **v > 0) {
                ctx.progress
                    .info(&format!("rewrite {from} -> {to}: {values} values"));
            }
        }
        Ok(Planned {
            pending: counts.copied > 0 || counts.deleted > 0,
            outputs: Outputs::from_counts(&spec, rewrites, counts, false),
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let rewrites = Self::rewrites(ctx, inputs).await?;
        let spec = Self::spec(ctx, inputs, &rewrites).await?;
        let journal = ctx.journal().await?;
        ctx.resolved(&Outputs::from_counts(
            &spec,
            rewrites.clone(),
            CopyCounts::default(),
            false,
        ));
        let counts = table::run(&spec, &journal, ctx.progress.as_ref(), |plan| {
            check_plan(inputs, plan)
        })
        .await?;
        ctx.progress
            .info(&format!("done and verified: {}", counts.summary(true)));
        Ok(Outputs::from_counts(&spec, rewrites, counts, true))
    }

    async fn rollback(&self, ctx: &Context, state: &Outputs) -> Result<()> {
        let target = ctx.clients.target.table(&state.target_table).await?;
        let shape =
            dynamodb::describe(&target, "target", &ctx.config.target.describe_dynamodb()).await?;
        let journal = ctx.journal().await?;
        let sharers = ctx.sharer_journals().await?;
        let report = table::rollback(
            &target,
            &shape.keys,
            &journal,
            &sharers,
            ctx.progress.as_ref(),
        )
        .await?;
        ctx.report_rollback(&format!("table {}", target.name), "items", &report);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use crate::resources::inputs_from as inputs;

    #[test]
    fn a_string_set_on_an_index_key_of_another_type_is_refused() {
        let target = dynamodb::TableShape {
            keys: vec!["PK".into(), "SK".into()],
            key_schema: String::new(),
            ttl_attribute: None,
            provisioned_writes: None,
            identity: None,
            index_keys: vec![
                ("GSI1".into(), "GSI1PK".into(), "S".into()),
                ("ByScore".into(), "score".into(), "N".into()),
            ],
        };
        let set = |attribute: &str| SetAttribute {
            types: vec!["IMAGE".into()],
            attribute: attribute.into(),
            value: "NONE".into(),
        };
        assert_eq!(
            index_type_failure(&[set("GSI1PK"), set("other")], &target),
            None
        );
        let failure = index_type_failure(&[set("score")], &target).unwrap();
        assert!(
            failure.contains("\"score\"")
                && failure.contains("\"ByScore\"")
                && failure.contains("type N"),
            "{failure}"
        );
    }

    #[test]
    fn defaults_follow_the_real_table() {
        let i: Inputs = inputs(serde_json::json!({"sourceTable": "a", "targetTable": "b"}));
        assert_eq!(i.type_attribute, "TYPE");
        assert!(i.skip_expired);
        assert_eq!(i.on_conflict, ItemConflict::Skip);
    }

    #[test]
    fn static_checks_name_the_input() {
        let failures = DynamoCopy::validate(&inputs(serde_json::json!({
            "sourceTable": "a", "targetTable": "b", "maxWriteRate": 0,
            "includeTypes": ["JOB"], "excludeTypes": ["JOB"],
            "setAttributes": [{"types": [], "attribute": "x", "value": "y"}]
        })));
        let properties: Vec<&str> = failures.iter().map(|f| f.property.as_str()).collect();
        assert_eq!(
            properties,
            vec!["maxWriteRate", "excludeTypes", "setAttributes[0].types"]
        );
    }

    #[test]
    fn an_empty_rewrite_key_is_named() {
        let failures = DynamoCopy::validate(&inputs(serde_json::json!({
            "sourceTable": "a", "targetTable": "b", "rewrite": {"": "prod-images", "dev-cdn": "prod-cdn"}
        })));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].property, "rewrite");
    }

    #[test]
    fn type_lists_that_select_nothing_fail_unless_allowed() {
        let counts = CopyCounts {
            scanned: 3,
            filtered: 3,
            types_present: BTreeSet::from(["JOB".to_string()]),
            ..Default::default()
        };
        let strict = inputs(
            serde_json::json!({"sourceTable": "a", "targetTable": "b", "excludeTypes": ["JOB"]}),
        );
        let err = check_plan(&strict, &counts).unwrap_err().to_string();
        assert!(
            err.contains("select none of the 3 items") && err.contains("allowEmpty"),
            "{err}"
        );
        let allowed = inputs(
            serde_json::json!({"sourceTable": "a", "targetTable": "b", "excludeTypes": ["JOB"], "allowEmpty": true}),
        );
        assert!(check_plan(&allowed, &counts).is_ok());
        let empty_table = CopyCounts::default();
        assert!(
            check_plan(&strict_without_types(), &empty_table).is_ok(),
            "an empty source is no mistake"
        );
    }

    fn strict_without_types() -> Inputs {
        inputs(serde_json::json!({"sourceTable": "a", "targetTable": "b"}))
    }

    #[test]
    fn unknown_types_list_what_the_table_holds() {
        let i = inputs(
            serde_json::json!({"sourceTable": "a", "targetTable": "b", "excludeTypes": ["JOBS"]}),
        );
        let counts = CopyCounts {
            types_present: BTreeSet::from(["JOB".to_string(), "RECEIPT".to_string()]),
            ..Default::default()
        };
        let err = check_plan(&i, &counts).unwrap_err().to_string();
        assert!(
            err.contains("\"JOBS\" in excludeTypes") && err.contains("JOB, RECEIPT"),
            "{err}"
        );
    }
}
