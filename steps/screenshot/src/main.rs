//! Lambda entry point of the screenshot step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_screenshot::{handle, Clients};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let bucket = aws::required_env("EVIDENCE_BUCKET")?;
    let config = aws::load().await;
    let clients = Clients {
        ec2: aws_sdk_ec2::Client::new(&config),
        evidence: EvidenceWriter::new(aws::s3(&config), bucket),
    };
    lambda::run(|event| handle(&clients, event)).await
}
