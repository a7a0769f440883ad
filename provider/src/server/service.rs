//! The ResourceProvider service: each request decoded, handed to the registered
//! resource or function, and its answer encoded.

use std::collections::HashMap;
use std::sync::Arc;

use pulumi_gestalt_proto::pulumi::pulumirpc::{
    self as rpc, diff_response::DiffChanges, property_diff::Kind,
    resource_provider_server::ResourceProvider,
};
use tonic::{Request, Response, Status};

use super::log::StatusAndWarnings;
use super::{
    encode_state, failure, refuse_interrupted_runs, secrets_in, status, Configured, Provider,
};
use crate::config::ProviderConfig;
use crate::functions::Answer;
use crate::resources::diff::{self, Change};
use crate::resources::{journal_path, CommonOutputs, Context, Drift};
use crate::schema;
use crate::stacks::Stacks;
use crate::wire::Props;

#[tonic::async_trait]
impl ResourceProvider for Provider {
    async fn handshake(
        &self,
        request: Request<rpc::ProviderHandshakeRequest>,
    ) -> Result<Response<rpc::ProviderHandshakeResponse>, Status> {
        let request = request.into_inner();
        if !request.engine_address.is_empty() {
            *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Some(request.engine_address);
        }
        // Stack names are read with the CLI from the program's directory, as a user would.
        if let Some(directory) = request.program_directory.filter(|d| !d.is_empty()) {
            *self.stacks.write().unwrap_or_else(|e| e.into_inner()) =
                Arc::new(Stacks::new(directory));
        }
        Ok(Response::new(rpc::ProviderHandshakeResponse {
            accept_secrets: true,
            accept_resources: true,
            accept_outputs: false,
            supports_autonaming_configuration: false,
        }))
    }

    async fn parameterize(
        &self,
        _: Request<rpc::ParameterizeRequest>,
    ) -> Result<Response<rpc::ParameterizeResponse>, Status> {
        Err(Status::unimplemented("stackmigrate takes no parameters"))
    }

    async fn get_schema(
        &self,
        _: Request<rpc::GetSchemaRequest>,
    ) -> Result<Response<rpc::GetSchemaResponse>, Status> {
        let schema = self
            .schema
            .get_or_init(|| schema::package_schema_text(&self.registry))
            .clone();
        Ok(Response::new(rpc::GetSchemaResponse { schema }))
    }

    async fn check_config(
        &self,
        request: Request<rpc::CheckRequest>,
    ) -> Result<Response<rpc::CheckResponse>, Status> {
        let request = request.into_inner();
        let mut news = Props::decode(request.news.as_ref());
        let failures = if news.has_unknowns() {
            Vec::new()
        } else {
            match ProviderConfig::from_props(&news.value) {
                Ok(_) => Vec::new(),
                Err(err) => vec![failure("", &format!("{err:#}"))],
            }
        };
        // The engine keeps the provider's inputs in the state as this answer marks them:
        // a connection holding credentials is secret however the config was set.
        let credentials = ProviderConfig::keys_with_credentials(&news.value);
        let inputs = if credentials.iter().all(|key| news.secret_keys.contains(key)) {
            request.news
        } else {
            news.secret_keys.extend(credentials);
            Some(news.encode())
        };
        Ok(Response::new(rpc::CheckResponse { inputs, failures }))
    }

    async fn diff_config(
        &self,
        request: Request<rpc::DiffRequest>,
    ) -> Result<Response<rpc::DiffResponse>, Status> {
        let request = request.into_inner();
        let old = Props::decode(request.old_inputs.as_ref().or(request.olds.as_ref()));
        let new = Props::decode(request.news.as_ref());
        let mut diffs: Vec<String> = old
            .value
            .keys()
            .chain(new.value.keys())
            .filter(|k| old.value.get(*k) != new.value.get(*k))
            .cloned()
            .collect();
        diffs.sort();
        diffs.dedup();
        let changes = if diffs.is_empty() {
            DiffChanges::DiffNone
        } else {
            DiffChanges::DiffSome
        };
        Ok(Response::new(rpc::DiffResponse {
            changes: changes as i32,
            diffs,
            ..Default::default()
        }))
    }

    async fn configure(
        &self,
        request: Request<rpc::ConfigureRequest>,
    ) -> Result<Response<rpc::ConfigureResponse>, Status> {
        let request = request.into_inner();
        let props = match &request.args {
            Some(args) => Props::decode(Some(args)).value,
            // Older engines send `pkg:config:key` strings.
            None => request
                .variables
                .iter()
                .map(|(k, v)| {
                    (
                        k.rsplit(':').next().unwrap_or(k).to_string(),
                        serde_json::Value::String(v.clone()),
                    )
                })
                .collect(),
        };
        let config = ProviderConfig::from_props(&props)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        *self.configured.write().unwrap_or_else(|e| e.into_inner()) = Configured::new(config);
        Ok(Response::new(rpc::ConfigureResponse {
            accept_secrets: true,
            supports_preview: true,
            accept_resources: true,
            accept_outputs: false,
            supports_autonaming_configuration: false,
        }))
    }

    async fn invoke(
        &self,
        request: Request<rpc::InvokeRequest>,
    ) -> Result<Response<rpc::InvokeResponse>, Status> {
        let request = request.into_inner();
        let Some(function) = self.registry.function(&request.tok) else {
            return Err(Status::invalid_argument(format!(
                "unknown function {:?}; this provider has {}",
                request.tok,
                self.registry.tokens().join(", ")
            )));
        };
        let args = Props::decode(request.args.as_ref());
        let answer = self
            .with_context(
                "",
                |ctx| async move { function.invoke(&ctx, &args.value).await },
            )
            .await
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        Ok(Response::new(match answer {
            Answer::Outputs(outputs) => rpc::InvokeResponse {
                // Secrets inside the outputs are marked in the engine's own encoding.
                r#return: Some(
                    Props {
                        value: outputs,
                        secret_keys: Default::default(),
                    }
                    .encode(),
                ),
                failures: Vec::new(),
            },
            Answer::Failures(failures) => rpc::InvokeResponse {
                r#return: None,
                failures: failures
                    .iter()
                    .map(|f| failure(&f.property, &f.reason))
                    .collect(),
            },
        }))
    }

    async fn call(
        &self,
        _: Request<rpc::CallRequest>,
    ) -> Result<Response<rpc::CallResponse>, Status> {
        Err(Status::unimplemented("stackmigrate has no methods"))
    }

    async fn check(
        &self,
        request: Request<rpc::CheckRequest>,
    ) -> Result<Response<rpc::CheckResponse>, Status> {
        let request = request.into_inner();
        let resource = self.resource(&request.r#type, &request.urn)?;
        self.declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request.urn.clone());
        let news = Props::decode(request.news.as_ref());
        // Values only known at apply time are checked then; a preview must not fail on them.
        let failures = if news.has_unknowns() {
            Vec::new()
        } else {
            resource
                .resource
                .check(&news.value)
                .into_iter()
                .map(|f| failure(&f.property, &f.reason))
                .collect()
        };
        Ok(Response::new(rpc::CheckResponse {
            inputs: request.news,
            failures,
        }))
    }

    async fn diff(
        &self,
        request: Request<rpc::DiffRequest>,
    ) -> Result<Response<rpc::DiffResponse>, Status> {
        let request = request.into_inner();
        let resource = self.resource(&request.r#type, &request.urn)?;
        let old = Props::decode(request.old_inputs.as_ref().or(request.olds.as_ref()));
        let new = Props::decode(request.news.as_ref());
        let mut changes = diff::input_changes(&resource.metadata, &old.value, &new.value);
        // Unchanged inputs: the resource is still out of date when the source has data
        // the target lacks. Asking costs listings or a scan, which is what a preview is;
        // the preview's answer serves the update of the same `pulumi up` (answers.rs).
        // `changeDetection: inputs` does not ask: only a drift refresh found counts.
        let last = Props::decode(request.olds.as_ref());
        let secrets = secrets_in(&new);
        secrets.add_all(&secrets_in(&last));
        if changes.is_empty() && diff::compares_inputs_only(&new.value) {
            // `pulumi refresh` compared the data and found work: the next up does it.
            changes = diff::refreshed_drift(&resource.metadata, &last.value);
        } else if changes.is_empty() && !new.has_unknowns() {
            let taken = self
                .answers
                .as_ref()
                .and_then(|a| a.take(&request.urn, &new.value, &last.value));
            let (planned, pending) = match taken {
                Some(answer) => answer,
                None => {
                    let inputs = &new.value;
                    let answer = self
                        .with_state_context(
                            &request.urn,
                            Some(&last.value),
                            &secrets,
                            |ctx| async move {
                                let ctx = Context {
                                    progress: Arc::new(StatusAndWarnings(ctx.progress.clone())),
                                    ..ctx
                                };
                                resource.resource.plan(&ctx, inputs).await
                            },
                        )
                        .await
                        .map_err(|e| status(e, &secrets))?;
                    if let Some(answers) = &self.answers {
                        answers.keep(&request.urn, &new.value, &last.value, &answer.0, answer.1);
                    }
                    answer
                }
            };
            // Names read from stack outputs can change while the inputs do not.
            changes = diff::plan_changes(&resource.metadata, &last.value, &planned, pending);
        }
        let replaces: Vec<String> = changes
            .iter()
            .filter(|c| c.replace)
            .map(|c| c.property.clone())
            .collect();
        let detailed_diff: HashMap<String, rpc::PropertyDiff> = changes
            .into_iter()
            .map(
                |Change {
                     property,
                     replace,
                     input,
                 }| {
                    let kind = if replace {
                        Kind::UpdateReplace
                    } else {
                        Kind::Update
                    };
                    let diff = rpc::PropertyDiff {
                        kind: kind as i32,
                        input_diff: input,
                    };
                    (property, diff)
                },
            )
            .collect();
        let mut diffs: Vec<String> = detailed_diff.keys().cloned().collect();
        diffs.sort();
        let changes = if diffs.is_empty() {
            DiffChanges::DiffNone
        } else {
            DiffChanges::DiffSome
        };
        Ok(Response::new(rpc::DiffResponse {
            replaces,
            stables: Vec::new(),
            // Old and new copies share the resource's journal (it is keyed by URN), so
            // the old one is rolled back before the new one starts.
            delete_before_replace: true,
            changes: changes as i32,
            diffs,
            detailed_diff,
            has_detailed_diff: true,
        }))
    }

    async fn create(
        &self,
        request: Request<rpc::CreateRequest>,
    ) -> Result<Response<rpc::CreateResponse>, Status> {
        let request = request.into_inner();
        let resource = self.resource(&request.r#type, &request.urn)?;
        let inputs = Props::decode(request.properties.as_ref());
        let state = self
            .run(resource, &request.urn, &inputs, request.preview, None)
            .await?;
        Ok(Response::new(rpc::CreateResponse {
            id: if request.preview {
                String::new()
            } else {
                journal_path(&request.urn)
            },
            properties: Some(state),
            refresh_before_update: false,
        }))
    }

    async fn read(
        &self,
        request: Request<rpc::ReadRequest>,
    ) -> Result<Response<rpc::ReadResponse>, Status> {
        let request = request.into_inner();
        let known = Props::decode(request.properties.as_ref());
        let given = Props::decode(request.inputs.as_ref());
        if !known.value.is_empty() {
            // The state says what the last run did; refresh keeps it and compares the
            // data again, reporting what an up would write as `drift`.
            let properties = if given.value.is_empty() {
                request.properties
            } else {
                let resource = self.resource(&request.r#type, &request.urn)?;
                let secrets = secrets_in(&known);
                secrets.add_all(&secrets_in(&given));
                let drift = self
                    .with_state_context(&request.urn, Some(&known.value), &secrets, |ctx| async move {
                        let ctx = Context {
                            progress: Arc::new(StatusAndWarnings(ctx.progress.clone())),
                            compare_target: true,
                            ..ctx
                        };
                        if resource.resource.journalled() {
                            ctx.forget_stale_run().await;
                        }
                        // A source that is gone (the dev stack destroyed after the
                        // migration) leaves nothing to compare: refresh keeps the state.
                        match resource.resource.plan(&ctx, &given.value).await {
                            Ok((planned, pending)) => {
                                anyhow::Ok(Some(Drift::found(&resource.metadata, &planned, pending)))
                            }
                            Err(cause) => {
                                ctx.progress.warn(&format!(
                                    "refresh could not compare the source with the target, so drift is not updated: {cause:#}"
                                ));
                                Ok(None)
                            }
                        }
                    })
                    .await
                    .map_err(|e| status(e, &secrets))?;
                match drift {
                    Some(drift) => {
                        let mut state = known.value.clone();
                        let mut common = CommonOutputs::of(&state);
                        common.drift = Some(drift);
                        common.write_into(&mut state);
                        Some(encode_state(&known, state, &secrets))
                    }
                    None => request.properties,
                }
            };
            return Ok(Response::new(rpc::ReadResponse {
                id: request.id,
                properties,
                inputs: request.inputs,
                refresh_before_update: false,
            }));
        }
        // No state: `pulumi import` of a run the engine lost track of (its plugin was
        // killed). The journal holds that run's inputs, and whether it wrote anything.
        let resource = self.resource(&request.r#type, &request.urn)?;
        let secrets = secrets_in(&given);
        let recovered = self
            .with_state_context(&request.urn, None, &secrets, |ctx| async move {
                let inputs = match ctx.recorded_inputs().await? {
                    Some(recorded) if given.value.is_empty() => recorded,
                    _ => given.value,
                };
                let state = resource.resource.recover(&ctx, &inputs).await?;
                if resource.resource.journalled() {
                    ctx.run_handed_over().await;
                }
                anyhow::Ok(state.map(|state| (inputs, state)))
            })
            .await
            .map_err(|e| status(e, &secrets))?;
        Ok(Response::new(match recovered {
            Some((inputs, state)) => {
                let inputs = Props {
                    value: inputs,
                    secret_keys: Default::default(),
                };
                rpc::ReadResponse {
                    id: request.id,
                    properties: Some(encode_state(&inputs, state, &secrets)),
                    inputs: Some(inputs.encode()),
                    refresh_before_update: false,
                }
            }
            // Nothing was written: there is nothing to keep.
            None => rpc::ReadResponse::default(),
        }))
    }

    async fn update(
        &self,
        request: Request<rpc::UpdateRequest>,
    ) -> Result<Response<rpc::UpdateResponse>, Status> {
        let request = request.into_inner();
        let resource = self.resource(&request.r#type, &request.urn)?;
        let inputs = Props::decode(request.news.as_ref());
        let last = Props::decode(request.olds.as_ref());
        let state = self
            .run(
                resource,
                &request.urn,
                &inputs,
                request.preview,
                Some(&last.value),
            )
            .await?;
        Ok(Response::new(rpc::UpdateResponse {
            properties: Some(state),
            refresh_before_update: false,
        }))
    }

    async fn delete(&self, request: Request<rpc::DeleteRequest>) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let resource = self.resource(&request.r#type, &request.urn)?;
        // The state, not the inputs: it holds the names the last run resolved.
        let state = Props::decode(request.properties.as_ref());
        let secrets = secrets_in(&state);
        let state = &state.value;
        let declared = self
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.with_state_context(&request.urn, Some(state), &secrets, |ctx| async move {
            let journalled = resource.resource.journalled();
            refuse_interrupted_runs(&ctx, journalled, &declared).await?;
            resource.resource.rollback(&ctx, state).await?;
            if journalled {
                ctx.forget_run().await;
            }
            Ok(())
        })
        .await
        .map_err(|e| status(e, &secrets))?;
        Ok(Response::new(()))
    }

    async fn construct(
        &self,
        _: Request<rpc::ConstructRequest>,
    ) -> Result<Response<rpc::ConstructResponse>, Status> {
        Err(Status::unimplemented(
            "stackmigrate has no component resources",
        ))
    }

    async fn cancel(&self, _: Request<()>) -> Result<Response<()>, Status> {
        // Nothing to stop gracefully: every write is journalled first, so the engine may
        // end this process at any point and the next `pulumi up` resumes.
        Ok(Response::new(()))
    }

    async fn get_plugin_info(&self, _: Request<()>) -> Result<Response<rpc::PluginInfo>, Status> {
        Ok(Response::new(rpc::PluginInfo {
            version: schema::VERSION.to_string(),
        }))
    }

    async fn attach(&self, _: Request<rpc::PluginAttach>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("attach is not supported"))
    }

    async fn get_mapping(
        &self,
        _: Request<rpc::GetMappingRequest>,
    ) -> Result<Response<rpc::GetMappingResponse>, Status> {
        Ok(Response::new(rpc::GetMappingResponse::default()))
    }

    async fn get_mappings(
        &self,
        _: Request<rpc::GetMappingsRequest>,
    ) -> Result<Response<rpc::GetMappingsResponse>, Status> {
        Ok(Response::new(rpc::GetMappingsResponse::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;
    use serde_json::json;

    #[tokio::test]
    async fn check_config_marks_a_connection_holding_credentials_secret() {
        let provider = Provider::with_registry(None, registry::all());
        let news = Props {
            value: json!({
                "source": {"endpoint": "http://127.0.0.1:9000", "secretAccessKey": "s3cr3t"},
                "target": {"endpoint": "http://127.0.0.1:9001"},
                "sourceStack": "organization/p/dev",
            })
            .as_object()
            .unwrap()
            .clone(),
            secret_keys: Default::default(),
        };
        let answer = provider
            .check_config(Request::new(rpc::CheckRequest {
                news: Some(news.encode()),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.failures.is_empty(), "{:?}", answer.failures);
        let inputs = Props::decode(answer.inputs.as_ref());
        assert_eq!(inputs.secret_keys.iter().collect::<Vec<_>>(), ["source"]);
        assert_eq!(inputs.value, news.value, "the values are kept");
    }
}
