//! CdnInvalidation: the runbook's step after the CDN bucket's sync. The paths of the
//! keys the sync changed (or everything, above CloudFront's limit) are invalidated on
//! the prod distribution, and waited for.

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Context, Failure, Migration, Planned, Side};
use crate::runbook::cdn;

pub struct CdnInvalidation;

fn default_output() -> String {
    "cdn_distribution_id".to_string()
}

fn default_wait() -> bool {
    true
}

fn default_timeout_seconds() -> u64 {
    1800
}

/// Inputs of CdnInvalidation.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// The CloudFront distribution's ID, on the target side. Default: the `output` of `targetStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub distribution_id: Option<String>,
    /// Output of `targetStack` holding the distribution's ID. Default `cdn_distribution_id`.
    #[serde(default = "default_output")]
    pub output: String,
    /// Object keys whose paths (`/<key>`) to invalidate: pass a BucketSync's `changedKeys`, so what that sync changed is invalidated (`*` among them, or more than 3,000 paths in all: everything, `/*`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Paths to invalidate besides those of `keys`, each starting with `/` (a trailing `*` is a wildcard).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Wait until CloudFront has completed the invalidation. Default: true.
    #[serde(default = "default_wait")]
    pub wait: bool,
    /// With `wait`: how long to wait before failing the up (CloudFront goes on). Default 1800.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// Outputs of CdnInvalidation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// The distribution invalidated.
    pub distribution_id: String,
    /// The paths invalidated (in preview: to be); empty when nothing changed.
    pub paths: Vec<String>,
    /// The invalidation's ID; empty at preview and when there was nothing to invalidate.
    #[schemars(extend("x-pending" = true))]
    pub invalidation_id: String,
    /// `Completed`, `InProgress` (not waited for), `NONE` (nothing to invalidate) or, at preview, `NOT_STARTED`.
    pub status: String,
}

impl CdnInvalidation {
    async fn distribution(ctx: &Context, inputs: &Inputs) -> Result<String> {
        let id = ctx
            .resolve(
                Side::Target,
                "distributionId",
                &inputs.distribution_id,
                Some(&inputs.output),
            )
            .await?;
        let cloudfront = ctx.clients.target.cloudfront().await?;
        cdn::check_exists(&cloudfront, &id).await?;
        Ok(id)
    }
}

#[async_trait]
impl Migration for CdnInvalidation {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:CdnInvalidation";
    const DESCRIPTION: &'static str = concat!(
        "Invalidates a CloudFront distribution's paths after the objects behind them changed: the keys a BucketSync \
        changed (its changedKeys output), given paths, or everything (/*) above CloudFront's 3,000-path limit; waits \
        until completed. Runs again when its inputs change. An invalidation cannot be undone, nor needs to be: destroy \
        does nothing.",
        include_str!("examples/CdnInvalidation.md")
    );
    const JOURNALLED: bool = false;

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let mut failures = Vec::new();
        for (index, path) in inputs.paths.iter().enumerate() {
            if !path.starts_with('/') {
                failures.push(Failure::new(
                    &format!("paths[{index}]"),
                    format!("{path:?} must start with /, for example /images/*"),
                ));
            } else if path.find('*').is_some_and(|at| at != path.len() - 1) {
                failures.push(Failure::new(
                    &format!("paths[{index}]"),
                    format!("{path:?}: CloudFront takes * only at the end of a path"),
                ));
            }
        }
        failures.extend(Failure::no_time_to_wait(
            inputs.wait,
            inputs.timeout_seconds,
        ));
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let distribution = Self::distribution(ctx, inputs).await?;
        let paths = cdn::paths_for(&inputs.paths, &inputs.keys);
        ctx.progress.info(&match paths.as_slice() {
            [] => format!("nothing to invalidate on distribution {distribution}"),
            [one] => format!("would invalidate {one} on distribution {distribution}"),
            many => format!(
                "would invalidate {} paths on distribution {distribution}",
                many.len()
            ),
        });
        Ok(Planned {
            // Invalidated at create and whenever the keys or paths change; never by itself.
            pending: false,
            outputs: Outputs {
                distribution_id: distribution,
                paths,
                invalidation_id: String::new(),
                status: "NOT_STARTED".to_string(),
            },
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let distribution = Self::distribution(ctx, inputs).await?;
        let paths = cdn::paths_for(&inputs.paths, &inputs.keys);
        if paths.is_empty() {
            ctx.progress.info("nothing changed: no invalidation");
            return Ok(Outputs {
                distribution_id: distribution,
                paths,
                invalidation_id: String::new(),
                status: "NONE".to_string(),
            });
        }
        let cloudfront = ctx.clients.target.cloudfront().await?;
        let id = cdn::invalidate(&cloudfront, &distribution, &paths, &ctx.urn).await?;
        ctx.progress.info(&format!(
            "invalidation {id} of {} paths on distribution {distribution}",
            paths.len()
        ));
        let status = match inputs.wait {
            true => {
                let timeout = Duration::from_secs(inputs.timeout_seconds);
                cdn::wait(
                    &cloudfront,
                    &distribution,
                    &id,
                    timeout,
                    ctx.progress.as_ref(),
                )
                .await?
            }
            false => "InProgress".to_string(),
        };
        Ok(Outputs {
            distribution_id: distribution,
            paths,
            invalidation_id: id,
            status,
        })
    }

    async fn rollback(&self, _ctx: &Context, _state: &Outputs) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_start_with_a_slash_and_end_in_their_only_wildcard() {
        let inputs: Inputs = crate::resources::inputs_from(serde_json::json!({
            "paths": ["/images/*", "images/a.png", "/a*/b"]
        }));
        let failures: Vec<String> = CdnInvalidation::validate(&inputs)
            .into_iter()
            .map(|f| format!("{}: {}", f.property, f.reason))
            .collect();
        assert_eq!(
            failures,
            [
                "paths[1]: \"images/a.png\" must start with /, for example /images/*",
                "paths[2]: \"/a*/b\": CloudFront takes * only at the end of a path",
            ]
        );
        assert_eq!(
            (inputs.output.as_str(), inputs.wait),
            ("cdn_distribution_id", true)
        );
    }
}
