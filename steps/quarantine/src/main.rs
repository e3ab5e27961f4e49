//! Lambda entry point of the quarantine step: clients once, then the handler.

use cordon_common::{aws, lambda};
use cordon_quarantine::{handle, Clients};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = aws::load().await;
    let clients = Clients {
        ec2: aws_sdk_ec2::Client::new(&config),
        elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
    };
    lambda::run(|event| handle(&clients, event)).await
}
