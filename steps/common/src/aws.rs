//! AWS configuration, loaded once per Lambda environment at start-up.
//!
//! `aws_config::load_defaults` reads region, credentials and endpoints from the environment and
//! makes no network call until the first request (credentials are resolved lazily), so start-up
//! stays fast. `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` point every client at another
//! endpoint without code (<https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html>):
//! that is how the local stack is reached.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_types::retry::RetryConfig;

use crate::error::StepError;

/// Attempts per AWS call (the SDK's standard mode makes 3).
///
/// What a burst of incidents meets first is EC2's request throttling: per account, Region and API
/// action, a token bucket that refills at a fixed rate
/// (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>). The deepest queue
/// Cordon builds is in a mutating bucket (50 requests, 5 per second): 50 simultaneous incidents
/// in one subnet make about 270 `CreateNetworkAclEntry` calls (measured on the local stack,
/// `make bench`), about 45 s of refill beyond the burst; their ~250 `DescribeInstances` by ID
/// take the unfiltered bucket (50, 10 per second), 20 s. A throttled call is best retried where
/// it failed, without redoing the rest of the step, so the SDK gets more attempts than its
/// default. Standard mode waits `rand(0..1) * min(2^i s, MAX_BACKOFF)` before retry `i`
/// (<https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html>): 6 attempts
/// wait at most 1 + 2 + 4 + 8 + 8 = 23 s (11.5 s on average) per call, so two throttled calls in
/// one step still end inside the functions' 60 s timeout (a timeout, `Sandbox.Timedout`, is not
/// retried by the state machine). Longer queues are outlasted by the state machine's Retry on
/// `Transient` (`statemachine.asl.json`), which reruns the step after the SDK gives up.
///
/// Adaptive mode is not used: it rate-limits the whole client after a throttle, and the same page
/// recommends it only where clients are pooled by the scope the service throttles at, while EC2
/// throttles each action separately and a step's one EC2 client calls several.
pub const MAX_ATTEMPTS: u32 = 6;
/// The cap on one backoff (standard mode's default is 20 s); see [`MAX_ATTEMPTS`].
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The retry configuration of every client: standard mode, [`MAX_ATTEMPTS`], [`MAX_BACKOFF`].
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_max_backoff(MAX_BACKOFF)
}

pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .load()
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The functions' timeout (`cdk/lib/cordon-stack.ts`).
    const FUNCTION_TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn clients_retry_throttling_in_standard_mode_with_bounded_backoff() {
        let c = retry_config();
        assert_eq!(c.mode(), aws_smithy_types::retry::RetryMode::Standard);
        assert_eq!(c.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(c.max_backoff(), MAX_BACKOFF);
        assert_eq!(c.initial_backoff(), Duration::from_secs(1));
    }

    #[test]
    fn two_fully_throttled_calls_fit_in_the_function_timeout() {
        // Worst case of standard mode's backoff: the random factor at 1 for every retry.
        let worst: Duration = (0..MAX_ATTEMPTS - 1)
            .map(|i| Duration::from_secs(1 << i).min(MAX_BACKOFF))
            .sum();
        assert_eq!(worst, Duration::from_secs(23));
        assert!(worst * 2 < FUNCTION_TIMEOUT, "{worst:?}");
    }
}
