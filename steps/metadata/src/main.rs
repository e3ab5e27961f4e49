//! Lambda entry point of the metadata step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_metadata::{handle, Clients};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let bucket = aws::required_env("EVIDENCE_BUCKET")?;
    let config = aws::load().await;
    let clients = Clients {
        ec2: aws_sdk_ec2::Client::new(&config),
        ssm: aws_sdk_ssm::Client::new(&config),
        autoscaling: aws_sdk_autoscaling::Client::new(&config),
        elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
        evidence: EvidenceWriter::new(aws::s3(&config), bucket),
    };
    lambda::run(|event| handle(&clients, event)).await
}
