//! Lambda entry point of the notify step: configuration and clients once, then the handler.

use cordon_common::{aws, lambda, EvidenceWriter};
use cordon_notify::{failure, handle, Clients};
use serde_json::Value;

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Announced {
    Outcome(cordon_notify::Output),
    Failure(failure::FailureOutput),
}

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
    let sfn = aws_sdk_sfn::Client::new(&config);
    // Two callers: the state machine (announce an outcome it reached) and the EventBridge rule on
    // the state machine's status changes (announce a failure from outside the execution).
    lambda::run(|event: Value| async {
        if event.get("detail-type").is_some() {
            failure::handle(&clients, &sfn, event)
                .await
                .map(Announced::Failure)
        } else {
            handle(&clients, event).await.map(Announced::Outcome)
        }
    })
    .await
}
