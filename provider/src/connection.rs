//! One side of a migration (source or target): where the AWS APIs are and whose
//! credentials to use. Unset fields follow the AWS SDK's usual chain.

use std::sync::Arc;
use std::time::Duration;

use aws_config::{
    retry::RetryConfig, sts::AssumeRoleProvider, timeout::TimeoutConfig, BehaviorVersion, Region,
};
use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::copy::dynamodb::Table;
use crate::copy::retry::{Attempts, INITIAL_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF};
use crate::copy::s3::{Bucket, Buckets};
use crate::copy::store::dynamodb::DynamoDb;
use crate::copy::store::s3::S3;

/// A connection that cannot be made fails in this long rather than hanging a preview.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to a response's first byte. Generous: S3 answers a multi-gigabyte CopyObject or
/// UploadPartCopy only once it is under way, and a throttled DynamoDB page can lag.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);

/// How to reach one side of a migration: region, credentials and endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connection {
    /// AWS region, for example `us-east-1`. Default: the SDK chain (`AWS_REGION`, profile). Required against AWS itself (no endpoint).
    #[schemars(extend("x-env" = ["AWS_REGION", "AWS_DEFAULT_REGION"]))]
    pub region: Option<String>,
    /// Named profile from the shared AWS config files. Default: `AWS_PROFILE`.
    #[schemars(extend("x-env" = ["AWS_PROFILE"]))]
    pub profile: Option<String>,
    /// Endpoint URL used for every service (S3, DynamoDB, SQS, Step Functions, CloudFront), for example a MinIO or DynamoDB Local URL.
    pub endpoint: Option<String>,
    /// Endpoint URL for S3 only; wins over `endpoint`.
    pub s3_endpoint: Option<String>,
    /// Endpoint URL for DynamoDB only; wins over `endpoint`.
    pub dynamodb_endpoint: Option<String>,
    /// Endpoint URL for SQS only (the queue gate); wins over `endpoint`.
    pub sqs_endpoint: Option<String>,
    /// Endpoint URL for Step Functions only (workflow runs, the queue gate); wins over `endpoint`.
    pub sfn_endpoint: Option<String>,
    /// Endpoint URL for CloudFront only (CDN invalidations); wins over `endpoint`.
    pub cloudfront_endpoint: Option<String>,
    /// Access key id; with `secretAccessKey`, replaces the SDK credential chain.
    #[schemars(extend("x-secret" = true))]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[schemars(extend("x-secret" = true))]
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    #[schemars(extend("x-secret" = true))]
    pub session_token: Option<String>,
    /// Role to assume with the credentials above (or the SDK chain's).
    pub role_arn: Option<String>,
    /// Address buckets by path (`http://host/bucket/key`), as MinIO needs. Default: false.
    pub force_path_style: Option<bool>,
    /// The account ID that must own this side's buckets (the journal's too, on the target side). Sent with every S3 request, so a bucket name that resolves to another account's bucket is refused instead of read or written. Default: not checked.
    pub expected_bucket_owner: Option<String>,
}

impl Connection {
    /// The fields (as configured) that hold credentials.
    pub const CREDENTIAL_FIELDS: &'static [&'static str] =
        &["accessKeyId", "secretAccessKey", "sessionToken"];

    fn effective_s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint.as_deref().or(self.endpoint.as_deref())
    }

    fn effective_dynamodb_endpoint(&self) -> Option<&str> {
        self.dynamodb_endpoint
            .as_deref()
            .or(self.endpoint.as_deref())
    }

    /// Where DynamoDB requests go, for messages.
    pub(crate) fn describe_dynamodb(&self) -> String {
        match (self.effective_dynamodb_endpoint(), &self.region) {
            (Some(endpoint), _) => endpoint.to_string(),
            (None, Some(region)) => format!("AWS DynamoDB in {region}"),
            (None, None) => "AWS DynamoDB (default region)".to_string(),
        }
    }

    /// Where S3 requests go, for messages: the endpoint or the region.
    pub(crate) fn describe_s3(&self) -> String {
        match (self.effective_s3_endpoint(), &self.region) {
            (Some(endpoint), _) => endpoint.to_string(),
            (None, Some(region)) => format!("AWS S3 in {region}"),
            (None, None) => "AWS S3 (default region)".to_string(),
        }
    }

    async fn sdk_config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Standard retry: throttling (503 SlowDown, ThrottlingException,
            // ProvisionedThroughputExceeded) and transient errors are retried per request.
            // Not adaptive: its client-wide rate limit halves every request's rate on a
            // steady share of throttles. The server's x-amz-retry-after is honoured.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(FIRST_BYTE_TIMEOUT)
                    .build(),
            );
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                self.session_token.clone(),
                None,
                "stackmigrate-config",
            ));
        }
        let config = loader.load().await;
        let Some(role_arn) = &self.role_arn else {
            return config;
        };
        let assumed = AssumeRoleProvider::builder(role_arn)
            .session_name("stackmigrate")
            .configure(&config)
            .build()
            .await;
        config
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(assumed))
            .build()
    }

    fn s3_client_from(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
        let mut builder = aws_sdk_s3::config::Builder::from(sdk);
        if let Some(endpoint) = self.effective_s3_endpoint() {
            builder = builder.endpoint_url(endpoint);
        }
        if sdk.region().is_none() {
            // An S3-compatible server (an endpoint is given) ignores the region, but the SDK
            // refuses to sign without one.
            builder = builder.region(Region::new("us-east-1"));
        }
        builder = builder
            .force_path_style(self.force_path_style.unwrap_or(false))
            .retry_partition(unlimited_retries("stackmigrate-s3"))
            .interceptor(CountAttempts);
        if let Some(owner) = &self.expected_bucket_owner {
            builder = builder.interceptor(ExpectedBucketOwner(owner.clone()));
        }
        aws_sdk_s3::Client::from_conf(builder.build())
    }

    fn dynamodb_client_from(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
        if let Some(endpoint) = self.effective_dynamodb_endpoint() {
            builder = builder.endpoint_url(endpoint);
        }
        if sdk.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        builder = builder
            .retry_partition(unlimited_retries("stackmigrate-dynamodb"))
            .interceptor(CountAttempts);
        aws_sdk_dynamodb::Client::from_conf(builder.build())
    }

    /// True when both sides reach the same DynamoDB service and account, where one
    /// table name means one table.
    pub(crate) fn same_dynamodb_as(&self, other: &Connection) -> bool {
        self.effective_dynamodb_endpoint() == other.effective_dynamodb_endpoint()
            && self.region == other.region
            && self.profile == other.profile
            && self.access_key_id == other.access_key_id
            && self.role_arn == other.role_arn
    }

    /// True when a bucket name means the same bucket on both sides: one endpoint, or
    /// both AWS, whose bucket names are global whatever the region or account.
    pub(crate) fn same_s3_service(&self, other: &Connection) -> bool {
        self.effective_s3_endpoint() == other.effective_s3_endpoint()
    }

    /// True when a bucket name means the same bucket on both sides, decided from where
    /// the endpoints lead rather than how they are spelled: both AWS, or endpoints that
    /// resolve to a common address and port (`localhost` and `127.0.0.1`, say).
    pub(crate) async fn same_s3_place(&self, other: &Connection) -> bool {
        if self.same_s3_service(other) {
            return true;
        }
        let (Some(ours), Some(theirs)) =
            (self.effective_s3_endpoint(), other.effective_s3_endpoint())
        else {
            return false;
        };
        let (ours, theirs) = (resolve(ours).await, resolve(theirs).await);
        ours.iter().any(|address| theirs.contains(address))
    }

    /// True when both sides reach the same S3 service with the same identity, so an
    /// object can be copied server side instead of streamed through this process.
    pub(crate) fn same_s3_as(&self, other: &Connection) -> bool {
        self.effective_s3_endpoint() == other.effective_s3_endpoint()
            && self.region == other.region
            && self.profile == other.profile
            && self.access_key_id == other.access_key_id
            && self.secret_access_key == other.secret_access_key
            && self.session_token == other.session_token
            && self.role_arn == other.role_arn
    }
}

/// The addresses an endpoint URL's host and port resolve to; none when it does not
/// resolve (a later request then names the endpoint).
async fn resolve(endpoint: &str) -> Vec<std::net::SocketAddr> {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let address = if has_port {
        authority.to_string()
    } else {
        let port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        format!("{authority}:{port}")
    };
    match tokio::net::lookup_host(address).await {
        Ok(addresses) => addresses.collect(),
        Err(_) => Vec::new(),
    }
}

/// A retry partition without the SDK's retry quota: under a steady 20% of throttles the
/// default quota empties within a few thousand requests and then no request is retried.
/// The backoff itself still bounds the load.
fn unlimited_retries(name: &'static str) -> RetryPartition {
    RetryPartition::custom(name)
        .token_bucket(TokenBucket::unlimited())
        .build()
}

/// Error codes services answer a throttled request with (HTTP 400 for DynamoDB).
const THROTTLING_CODES: [&str; 5] = [
    "Throttling",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
    "SlowDown",
    "TooManyRequests",
];

#[derive(Debug)]
struct CountAttempts;

impl Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "stackmigrate::CountAttempts"
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            Attempts::record_retry();
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(response) = context.response() else {
            return Ok(());
        };
        let status = response.status().as_u16();
        let throttled = status == 503
            || status == 429
            || (status == 400
                && response.body().bytes().is_some_and(|body| {
                    let body = String::from_utf8_lossy(body);
                    THROTTLING_CODES.iter().any(|code| body.contains(code))
                }));
        if throttled {
            Attempts::record_throttle();
        }
        Ok(())
    }
}

/// Sends `x-amz-expected-bucket-owner` with every request of a side's S3 client: S3
/// refuses the request when another account owns the bucket.
#[derive(Debug)]
struct ExpectedBucketOwner(String);

impl Intercept for ExpectedBucketOwner {
    fn name(&self) -> &'static str {
        "stackmigrate::ExpectedBucketOwner"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-amz-expected-bucket-owner", self.0.clone());
        Ok(())
    }
}

#[async_trait::async_trait]
impl Buckets for SideClients {
    /// A bucket of this side, with the side's S3 client and expected owner.
    async fn bucket(&self, name: &str) -> anyhow::Result<Bucket> {
        Ok(Bucket {
            store: Arc::new(S3::new(self.s3().await?)),
            name: name.to_string(),
            expected_owner: self.connection.expected_bucket_owner.clone(),
        })
    }
}

/// The clients of one side, built on first use and then shared by every operation until
/// the next Configure: one SDK config (and one AssumeRole session) per side, one
/// connection pool per service.
pub struct SideClients {
    /// `source` or `target`: the config key that names this side.
    pub side: &'static str,
    pub connection: Connection,
    sdk: OnceCell<aws_config::SdkConfig>,
    s3: OnceCell<aws_sdk_s3::Client>,
    dynamodb: OnceCell<aws_sdk_dynamodb::Client>,
    account: OnceCell<String>,
}

impl SideClients {
    pub fn new(side: &'static str, connection: Connection) -> Self {
        SideClients {
            side,
            connection,
            sdk: OnceCell::new(),
            s3: OnceCell::new(),
            dynamodb: OnceCell::new(),
            account: OnceCell::new(),
        }
    }

    async fn sdk(&self) -> &aws_config::SdkConfig {
        self.sdk.get_or_init(|| self.connection.sdk_config()).await
    }

    /// The side's S3 client (cheap to clone: clones share the pool).
    pub async fn s3(&self) -> anyhow::Result<aws_sdk_s3::Client> {
        let endpoint = self.connection.effective_s3_endpoint();
        let service = ("S3", "AWS_ENDPOINT_URL_S3");
        self.client(&self.s3, endpoint, service, Connection::s3_client_from)
            .await
    }

    /// The AWS account these credentials act for, as STS answers (AWS itself only);
    /// asked once per configuration.
    pub(crate) async fn account_id(&self) -> anyhow::Result<String> {
        let account = self
            .account
            .get_or_try_init(|| async {
                let identity = aws_sdk_sts::Client::new(self.sdk().await)
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(crate::copy::aws_error)?;
                identity.account().map(str::to_owned).ok_or_else(|| {
                    anyhow::anyhow!("STS named no account for the {} credentials", self.side)
                })
            })
            .await?;
        Ok(account.clone())
    }

    /// The region the side resolved (its setting, or the SDK chain's).
    pub(crate) async fn region(&self) -> Option<String> {
        self.sdk().await.region().map(|r| r.to_string())
    }

    /// Whether S3 requests go to AWS itself (no endpoint given).
    pub(crate) fn s3_is_aws(&self) -> bool {
        self.connection.effective_s3_endpoint().is_none()
    }

    pub async fn dynamodb(&self) -> anyhow::Result<aws_sdk_dynamodb::Client> {
        let endpoint = self.connection.effective_dynamodb_endpoint();
        let service = ("DynamoDB", "AWS_ENDPOINT_URL_DYNAMODB");
        self.client(
            &self.dynamodb,
            endpoint,
            service,
            Connection::dynamodb_client_from,
        )
        .await
    }

    /// The side's SQS client. The runbook's clients are made per use: each step makes a
    /// few requests, and needs no pool or attempt counts.
    pub(crate) async fn sqs(&self) -> anyhow::Result<aws_sdk_sqs::Client> {
        let endpoint = &self.connection.sqs_endpoint;
        let config = self.service_config(endpoint, "SQS", "AWS_ENDPOINT_URL_SQS");
        Ok(aws_sdk_sqs::Client::new(&config.await?))
    }

    pub(crate) async fn sfn(&self) -> anyhow::Result<aws_sdk_sfn::Client> {
        let endpoint = &self.connection.sfn_endpoint;
        let config = self.service_config(endpoint, "Step Functions", "AWS_ENDPOINT_URL_SFN");
        Ok(aws_sdk_sfn::Client::new(&config.await?))
    }

    pub(crate) async fn cloudfront(&self) -> anyhow::Result<aws_sdk_cloudfront::Client> {
        let endpoint = &self.connection.cloudfront_endpoint;
        let config = self.service_config(endpoint, "CloudFront", "AWS_ENDPOINT_URL_CLOUDFRONT");
        Ok(aws_sdk_cloudfront::Client::new(&config.await?))
    }

    /// The side's SDK config for a service reached at its own endpoint, else `endpoint`.
    async fn service_config(
        &self,
        own_endpoint: &Option<String>,
        service: &str,
        endpoint_variable: &str,
    ) -> anyhow::Result<aws_config::SdkConfig> {
        let sdk = self.sdk().await;
        let endpoint = own_endpoint
            .as_deref()
            .or(self.connection.endpoint.as_deref());
        self.needs_region(sdk, endpoint, service, endpoint_variable)?;
        let mut config = sdk.to_builder();
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        if sdk.region().is_none() {
            config = config.region(Region::new("us-east-1"));
        }
        Ok(config.build())
    }

    /// A table of this side, behind the item store on the side's DynamoDB client.
    pub async fn table(&self, name: &str) -> anyhow::Result<Table> {
        Ok(Table {
            store: Arc::new(DynamoDb::new(self.dynamodb().await?)),
            name: name.to_string(),
        })
    }

    /// The side's client of `service` (its name, and the variable that gives its
    /// endpoint), made once.
    async fn client<C: Clone>(
        &self,
        cell: &OnceCell<C>,
        endpoint: Option<&str>,
        (service, endpoint_variable): (&str, &str),
        make: fn(&Connection, &aws_config::SdkConfig) -> C,
    ) -> anyhow::Result<C> {
        let sdk = self.sdk().await;
        self.needs_region(sdk, endpoint, service, endpoint_variable)?;
        Ok(cell
            .get_or_init(|| async { make(&self.connection, sdk) })
            .await
            .clone())
    }

    /// AWS itself (no endpoint given) needs a region: guessing `us-east-1` would send
    /// the copy to the wrong place or fail far from its cause.
    fn needs_region(
        &self,
        sdk: &aws_config::SdkConfig,
        endpoint: Option<&str>,
        service: &str,
        endpoint_variable: &str,
    ) -> anyhow::Result<()> {
        let custom_endpoint = endpoint.is_some()
            || sdk.endpoint_url().is_some()
            || std::env::var_os(endpoint_variable).is_some();
        if !custom_endpoint && sdk.region().is_none() {
            anyhow::bail!(
                "no AWS region for the {side} side's {service}: set stackmigrate:{side}.region, \
                 or AWS_REGION, or a region in the profile (stackmigrate:{side}.profile / AWS_PROFILE)",
                side = self.side
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_endpoint_needs_same_identity() {
        let a = Connection {
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key_id: Some("a".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        };
        let mut b = a.clone();
        assert!(a.same_s3_as(&b));
        b.access_key_id = Some("other".into());
        assert!(!a.same_s3_as(&b));
        let c = Connection {
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            access_key_id: Some("a".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        };
        assert!(a.same_s3_as(&c), "s3Endpoint wins over endpoint");
    }
}
