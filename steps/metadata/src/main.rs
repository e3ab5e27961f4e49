//! Lambda entry point of the metadata step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_metadata::{handle, Clients, CollectionSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let bucket = aws::required_env("EVIDENCE_BUCKET")?;
    let collection = CollectionSettings {
        default_budget_seconds: aws::required_env("COLLECTION_BUDGET_SECONDS")?.parse()?,
        max_budget_seconds: aws::required_env("COLLECTION_MAX_BUDGET_SECONDS")?.parse()?,
    };
    let config = aws::load().await;
    let clients = Clients {
        ec2: aws_sdk_ec2::Client::new(&config),
        ssm: aws_sdk_ssm::Client::new(&config),
        autoscaling: aws_sdk_autoscaling::Client::new(&config),
        elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
        evidence: EvidenceWriter::new(aws::s3(&config), bucket),
        collection,
    };
    lambda::run(|event| handle(&clients, event)).await
}
