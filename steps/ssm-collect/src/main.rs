//! Lambda entry point of the ssm-collect step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_ssm_collect::{handle, Clients, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let bucket = aws::required_env("EVIDENCE_BUCKET")?;
    let default_budget_seconds = aws::required_env("COLLECTION_BUDGET_SECONDS")?.parse()?;
    let sdk = aws::load().await;
    let clients = Clients {
        ssm: aws_sdk_ssm::Client::new(&sdk),
        s3: aws::s3(&sdk),
        presigner: aws::s3(&sdk),
        evidence: EvidenceWriter::new(aws::s3(&sdk), bucket),
    };
    let config = Config {
        default_budget_seconds,
    };
    lambda::run(|event| handle(&clients, &config, event)).await
}
