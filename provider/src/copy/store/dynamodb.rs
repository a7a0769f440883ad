//! The item store on DynamoDB: one SDK request per call (the SDK retries the request).

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    BillingMode, KeyType, KeysAndAttributes, TimeToLiveStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;

use super::{Condition, ItemStore, ScanPage, ScanRequest, TableShape};
use crate::copy::aws_error;
use crate::copy::item::Item;

#[derive(Debug, Clone)]
pub(crate) struct DynamoDb {
    client: Client,
}

impl DynamoDb {
    pub(crate) fn new(client: Client) -> Self {
        DynamoDb { client }
    }
}

#[async_trait]
impl ItemStore for DynamoDb {
    async fn describe(&self, table: &str) -> Result<Option<TableShape>> {
        let out = match self.client.describe_table().table_name(table).send().await {
            Ok(out) => out,
            Err(err)
                if err.as_service_error().and_then(|e| e.code())
                    == Some("ResourceNotFoundException") =>
            {
                return Ok(None)
            }
            Err(err) => {
                return Err(aws_error(err)).with_context(|| format!("describing table {table:?}"))
            }
        };
        let description = out.table();
        let schema = description.map(|t| t.key_schema()).unwrap_or_default();
        let definitions = description
            .map(|t| t.attribute_definitions())
            .unwrap_or_default();
        let mut keys: Vec<(bool, String)> = schema
            .iter()
            .map(|k| {
                (
                    *k.key_type() != KeyType::Hash,
                    k.attribute_name().to_string(),
                )
            })
            .collect();
        keys.sort();
        let key_schema = keys
            .iter()
            .map(|(range, name)| {
                let kind = definitions
                    .iter()
                    .find(|d| d.attribute_name() == name)
                    .map(|d| d.attribute_type().as_str())
                    .unwrap_or("?");
                let role = if *range { "range" } else { "hash" };
                format!("{name} ({kind}, {role})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        // An ARN alone repeats across local servers (their account is fixed), so the ID
        // and creation time come with it.
        let identity = description.and_then(|t| {
            Some(format!(
                "{} {} {:?}",
                t.table_arn()?,
                t.table_id().unwrap_or_default(),
                t.creation_date_time()
            ))
        });
        let provisioned_writes = description
            .filter(|t| {
                t.billing_mode_summary().and_then(|b| b.billing_mode())
                    != Some(&BillingMode::PayPerRequest)
            })
            .and_then(|t| t.provisioned_throughput())
            .and_then(|p| p.write_capacity_units())
            .filter(|units| *units > 0);
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading the TTL setting of table {table:?}"))?;
        let ttl_attribute = ttl
            .time_to_live_description()
            .filter(|d| {
                matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
            })
            .and_then(|d| d.attribute_name())
            .map(str::to_owned);
        let type_of = |name: &str| {
            definitions
                .iter()
                .find(|d| d.attribute_name() == name)
                .map(|d| d.attribute_type().as_str().to_string())
                .unwrap_or_default()
        };
        let global = description
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .map(|i| (i.index_name().unwrap_or_default(), i.key_schema()));
        let local = description
            .map(|t| t.local_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .map(|i| (i.index_name().unwrap_or_default(), i.key_schema()));
        let index_keys = global
            .chain(local)
            .flat_map(|(index, schema)| {
                schema.iter().map(move |k| {
                    let name = k.attribute_name();
                    (index.to_string(), name.to_string(), type_of(name))
                })
            })
            .collect();
        Ok(Some(TableShape {
            index_keys,
            keys: keys.into_iter().map(|(_, name)| name).collect(),
            key_schema,
            ttl_attribute,
            provisioned_writes,
            identity,
        }))
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        let out = self
            .client
            .list_tables()
            .limit(100)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out.table_names().to_vec())
    }

    async fn scan_page(&self, table: &str, request: ScanRequest) -> Result<ScanPage> {
        let out = self
            .client
            .scan()
            .table_name(table)
            .segment(request.segment)
            .total_segments(request.segments)
            .consistent_read(true)
            .limit(request.limit)
            .set_exclusive_start_key(request.start)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("scanning table {table:?}"))?;
        Ok(ScanPage {
            next: out.last_evaluated_key.filter(|k| !k.is_empty()),
            items: out.items.unwrap_or_default(),
        })
    }

    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<(Vec<Item>, Vec<Item>)> {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let out = self
            .client
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading items of table {table:?}"))?;
        let found = out
            .responses()
            .and_then(|r| r.get(table))
            .cloned()
            .unwrap_or_default();
        let unprocessed = out
            .unprocessed_keys()
            .and_then(|u| u.get(table))
            .map(|k| k.keys().to_vec())
            .unwrap_or_default();
        Ok((found, unprocessed))
    }

    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<Vec<WriteRequest>> {
        let out = self
            .client
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("writing to table {table:?}"))?;
        Ok(out
            .unprocessed_items()
            .and_then(|u| u.get(table))
            .cloned()
            .unwrap_or_default())
    }

    async fn put_if(&self, table: &str, item: Item, condition: &Condition) -> Result<bool> {
        let (expression, attribute, value) = expression(condition);
        let out = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(expression)
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":v", AttributeValue::S(value.to_string()))
            .send()
            .await;
        conditional(out, table)
    }

    async fn delete_if(&self, table: &str, key: Item, condition: &Condition) -> Result<bool> {
        let (expression, attribute, value) = expression(condition);
        let out = self
            .client
            .delete_item()
            .table_name(table)
            .set_key(Some(key))
            .condition_expression(expression)
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":v", AttributeValue::S(value.to_string()))
            .send()
            .await;
        conditional(out, table)
    }
}

/// A condition as a DynamoDB expression over `#a` and `:v`, with their values.
fn expression(condition: &Condition) -> (&'static str, &str, &str) {
    match condition {
        Condition::AbsentOrBefore { attribute, value } => {
            ("attribute_not_exists(#a) OR #a < :v", attribute, value)
        }
        Condition::Equals { attribute, value } => ("#a = :v", attribute, value),
    }
}

/// A conditional write's answer: written, or refused by its condition.
fn conditional<T, E>(
    out: Result<T, aws_sdk_dynamodb::error::SdkError<E>>,
    table: &str,
) -> Result<bool>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match out {
        Ok(_) => Ok(true),
        Err(err)
            if err.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(err) => {
            Err(aws_error(err)).with_context(|| format!("writing conditionally to table {table:?}"))
        }
    }
}
