//! AWS configuration, loaded once per Lambda environment at start-up.
//!
//! `aws_config::load_defaults` reads region, credentials and endpoints from the environment and
//! makes no network call until the first request (credentials are resolved lazily), so start-up
//! stays fast. `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` point every client at another
//! endpoint without code (<https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html>):
//! that is how the local stack is reached.

use aws_config::{BehaviorVersion, SdkConfig};

use crate::error::StepError;

pub async fn load() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// S3 client. `S3_FORCE_PATH_STYLE=true` selects path-style addressing, which an emulator on
/// 127.0.0.1 needs (no per-bucket host names resolve there); AWS itself takes virtual-hosted style.
pub fn s3(config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = std::env::var("S3_FORCE_PATH_STYLE").is_ok_and(|v| v == "true");
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A required setting from the function's environment, read once at start-up.
pub fn required_env(name: &str) -> Result<String, StepError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(StepError::Config(format!(
            "the environment variable {name} is not set"
        ))),
    }
}
