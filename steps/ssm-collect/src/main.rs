//! Lambda entry point of the ssm-collect step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_ssm_collect::{handle, Clients, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let bucket = aws::required_env("EVIDENCE_BUCKET")?;
    let execution_timeout_seconds = match std::env::var("COLLECTION_TIMEOUT_SECONDS") {
        Ok(v) => v.parse()?,
        Err(_) => 1800,
    };
    let sdk = aws::load().await;
    let clients = Clients {
        ssm: aws_sdk_ssm::Client::new(&sdk),
        s3: aws::s3(&sdk),
        evidence: EvidenceWriter::new(aws::s3(&sdk), bucket),
    };
    let config = Config {
        execution_timeout_seconds,
    };
    lambda::run(|event| handle(&clients, &config, event)).await
}
