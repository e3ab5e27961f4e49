//! Lambda entry point of the GuardDuty dispatcher: configuration and clients once, then the handler.

use aws_smithy_types::retry::RetryConfig;
use cordon_common::{aws, lambda};
use cordon_dispatch::{handle, Clients, Config, SDK_MAX_ATTEMPTS};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = Config::from_env()?;
    let sdk = aws::load().await;
    // The queue is the dispatcher's retry (a finding not started comes back after the retry
    // delay), so its own calls keep the SDK's standard three attempts and stay well inside the
    // function's timeout instead of the steps' longer per-call budget.
    let retry = RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS);
    let clients = Clients {
        sfn: aws_sdk_sfn::Client::from_conf(
            aws_sdk_sfn::config::Builder::from(&sdk)
                .retry_config(retry.clone())
                .build(),
        ),
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .retry_config(retry)
                .build(),
        ),
    };
    lambda::run(|event| handle(&clients, &config, event)).await
}
