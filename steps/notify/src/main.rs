//! Lambda entry point of the notify step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_notify::{handle, Clients};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let bucket = aws::required_env("EVIDENCE_BUCKET")?;
    let topic_arn = aws::required_env("TOPIC_ARN")?;
    let config = aws::load().await;
    let clients = Clients {
        sns: aws_sdk_sns::Client::new(&config),
        evidence: EvidenceWriter::new(aws::s3(&config), bucket),
        topic_arn,
    };
    lambda::run(|event| handle(&clients, event)).await
}
