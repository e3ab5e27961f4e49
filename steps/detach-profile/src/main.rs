//! Lambda entry point of the detach-profile step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda};
use cordon_detach_profile::{handle, Clients, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let forensic_profile_arn = aws::required_env("FORENSIC_INSTANCE_PROFILE_ARN")?;
    let sdk = aws::load().await;
    let clients = Clients {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        iam: aws_sdk_iam::Client::new(&sdk),
    };
    let config = Config {
        forensic_profile_arn,
        region: sdk.region().map(|r| r.to_string()).unwrap_or_default(),
        association_polls: 20,
        association_poll_interval: std::time::Duration::from_millis(500),
        role_policy_quota: cordon_detach_profile::revoke::ROLE_POLICY_QUOTA,
        revocation_confirm_after: cordon_detach_profile::revoke::CONFIRM_AFTER,
    };
    lambda::run(|event| handle(&clients, &config, event)).await
}
