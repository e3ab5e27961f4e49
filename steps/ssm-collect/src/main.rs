//! Lambda entry point of the ssm-collect step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_ssm_collect::{handle, Clients, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let bucket = aws::required_env("EVIDENCE_BUCKET")?;
    let default_budget_seconds = aws::required_env("COLLECTION_BUDGET_SECONDS")?.parse()?;
    let sdk = aws::load().await;
    let s3 = aws::s3(&sdk);
    let clients = Clients {
        ssm: aws_sdk_ssm::Client::new(&sdk),
        presigner: s3.clone(),
        evidence: EvidenceWriter::new(s3.clone(), bucket),
        s3,
    };
    let config = Config {
        default_budget_seconds,
    };
    lambda::run(|event| handle(&clients, &config, event)).await
}
