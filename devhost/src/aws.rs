//! The AWS SDK configuration that reaches moto: fixed region, static test credentials
//! and the endpoint override — nothing read from the process environment that matters.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// The region of the local stack.
pub const REGION: &str = "us-east-1";
/// moto's default account id.
pub const ACCOUNT_ID: &str = "123456789012";

/// An SDK configuration for the moto server at `endpoint`; requests made inside an
/// invocation carry its trace header ([`crate::trace`]).
pub async fn moto_sdk_config(endpoint: &str) -> SdkConfig {
    // moto speaks plain HTTP: no TLS, no proxy.
    let http = aws_smithy_http_client::Builder::new().build_http();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "local"))
        .endpoint_url(endpoint)
        .http_client(crate::trace::traced_http_client(http))
        .load()
        .await
}

/// `config` with an HTTP client of its own. A pooled connection lives on the runtime
/// that opened it: a caller on another runtime (each test has its own) must not share
/// the environment's pool, or it meets connections whose runtime has ended.
pub fn with_own_http_client(config: &SdkConfig) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new().build_http();
    config
        .to_builder()
        .http_client(crate::trace::traced_http_client(http))
        .build()
}
