//! Lambda entry point of the snapshot step: clients once, then the handler.

use cordon_common::{aws, lambda};
use cordon_snapshot::{handle, LockPolicy};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = aws::load().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    // A deployment without a valid lock policy must not take unlockable evidence: fail at start.
    let policy = LockPolicy::from_env()?;
    lambda::run(|event| handle(&ec2, &policy, event)).await
}
