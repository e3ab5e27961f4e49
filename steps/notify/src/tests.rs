use super::*;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_sns::operation::publish::PublishOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::{query_error, s3_error};

const ID: &str = "i-0123456789abcdef0";
const EXEC: &str = "arn:aws:states:us-east-1:123456789012:execution:cordon:IR-8";

fn clients(s3: &[&Rule], sns: &[&Rule]) -> Clients {
    Clients {
        sns: mock_client!(aws_sdk_sns, RuleMode::MatchAny, sns, |c| c
            .retry_config(aws_sdk_sns::config::retry::RetryConfig::disabled())),
        evidence: EvidenceWriter::new(mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3), "evidence"),
        topic_arn: "arn:aws:sns:us-east-1:123456789012:cordon".into(),
    }
}

fn results() -> Value {
    json!({
        "incident": {"incident_id": "IR-8", "instance_id": ID},
        "metadata": {"result": {"artifacts": [{"key": "IR-8/i-0123456789abcdef0/metadata.json", "size": 10, "sha256": "aa", "step": "metadata", "written_at": "t"}]}},
        "evidence": {
            "console": {"gap": {"step": "screenshot", "what": "console screenshot and output",
                                "reason": "{\"errorType\":\"AccessDenied\",\"errorMessage\":\"GetConsoleScreenshot failed (UnauthorizedOperation): no\"}"}},
            "snapshots": {"result": {"snapshots": [{"volume_id": "vol-1", "snapshot_id": "snap-1", "state": "pending"}],
                                     "actions": [{"step": "snapshot", "action": "create crash-consistent snapshots", "target": ID, "before": null, "after": ["snap-1"], "outcome": "changed", "at": "t1"}]}}
        },
        "protection": {"result": {"actions": [{"step": "termprotect", "action": "enable termination protection", "target": ID, "before": true, "after": true, "outcome": "unchanged", "at": "t2"}]}},
        "collection_gap": {"step": "ssm-collect", "what": "OS-level collection", "reason": "not requested (options.collect = false)"}
    })
}

fn contained() -> Value {
    json!({
        "outcome": "contained",
        "execution_arn": EXEC,
        "execution_started_at": "2026-11-29T10:00:00Z",
        "incident": {"incident_id": "IR-8", "instance_id": ID, "requested_by": "alice", "reason": "GuardDuty finding"},
        "results": results(),
    })
}

#[test]
fn collects_artifacts_actions_gaps_and_snapshots_wherever_they_are() {
    let c = collect(&results());
    assert_eq!(c.artifacts.len(), 1);
    assert_eq!(c.actions.len(), 2);
    assert_eq!(c.snapshots.len(), 1);
    assert_eq!(c.gaps.len(), 2);
    assert!(
        c.gaps
            .iter()
            .any(|g| g.reason == "GetConsoleScreenshot failed (UnauthorizedOperation): no"),
        "{:?}",
        c.gaps
    );
}

#[test]
fn subjects_are_short_printable_ascii() {
    assert_eq!(
        subject(ID, Outcome::Contained),
        "[Cordon] i-0123456789abcdef0 CONTAINED"
    );
    assert_eq!(
        subject(ID, Outcome::ContainmentFailed),
        "[Cordon] i-0123456789abcdef0 CONTAINMENT FAILED"
    );
    assert!(subject(&"é\n".repeat(80), Outcome::Rejected).len() <= MAX_SUBJECT);
}

#[tokio::test]
async fn writes_the_manifest_and_publishes_one_message_that_says_it_all() {
    let none = mock!(aws_sdk_s3::Client::get_object).then_http_response(s3_error(404, "NoSuchKey"));
    let manifest = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| {
            let m: Value = serde_json::from_slice(r.body().bytes().unwrap()).unwrap();
            r.key() == Some("IR-8/i-0123456789abcdef0/manifest.json")
                && m["requested_by"] == "alice"
                && m["execution_arn"] == EXEC
                && m["artifacts"].as_array().unwrap().len() == 1
                && m["actions"].as_array().unwrap().len() == 2
                && m["gaps"].as_array().unwrap().len() == 2
                // No quarantine output in these results: nothing may be claimed cut.
                && m["containment"].as_array().is_some_and(|rows| {
                    rows.len() > 10
                        && rows.iter().all(|r| r["status"] != "cut")
                        && rows.iter().any(|r| r["path"] == "new inbound connections")
                })
        })
        .then_output(|| PutObjectOutput::builder().build());
    let record = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| r.key() == Some("IR-8/i-0123456789abcdef0/notifications/IR-8.json"))
        .then_output(|| PutObjectOutput::builder().build());
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|r| {
            let body = r.message().unwrap();
            let attrs = r.message_attributes().unwrap();
            r.subject() == Some("[Cordon] i-0123456789abcdef0 CONTAINED")
                && body.contains("create crash-consistent snapshots on i-0123456789abcdef0")
                && body.contains("Already in place, left as found (1)")
                && body.contains("OS-level collection (ssm-collect): not requested")
                && body.contains("snap-1 of vol-1 (pending)")
                && body.contains("s3://evidence/IR-8/i-0123456789abcdef0/")
                && body.contains("Requested by: alice")
                && body.contains("What containment guarantees, path by path")
                && body.contains("- STILL POSSIBLE: new inbound connections")
                && !body.contains("(verified)")
                && attrs["status"].string_value() == Some("contained")
                && attrs["severity"].string_value() == Some("high")
                && attrs["incident_id"].string_value() == Some("IR-8")
                && attrs["instance_id"].string_value() == Some(ID)
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let c = clients(&[&none, &manifest, &record], &[&publish]);

    let out = handle(&c, contained()).await.unwrap();

    assert_eq!(
        (
            manifest.num_calls(),
            publish.num_calls(),
            record.num_calls()
        ),
        (1, 1, 1)
    );
    assert_eq!(out.message_id.as_deref(), Some("m-1"));
    assert_eq!(out.snapshot_ids, ["snap-1"]);
    assert_eq!(
        out.actions,
        ["create crash-consistent snapshots on i-0123456789abcdef0"]
    );
}

#[tokio::test]
async fn a_retry_after_publishing_does_not_publish_again() {
    let done = mock!(aws_sdk_s3::Client::get_object).then_output(|| {
        aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
            .body(br#"{"message_id": "m-1", "manifest_key": "IR-8/i-0123456789abcdef0/manifest.json"}"#.to_vec().into())
            .build()
    });
    let publish =
        mock!(aws_sdk_sns::Client::publish).then_output(|| PublishOutput::builder().build());
    let c = clients(&[&done], &[&publish]);
    let out = handle(&c, contained()).await.unwrap();
    assert_eq!(publish.num_calls(), 0);
    assert!(!out.published);
    assert_eq!(out.message_id.as_deref(), Some("m-1"));
}

#[tokio::test]
async fn a_rejected_request_is_announced_and_writes_nothing() {
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|r| {
            r.subject() == Some("[Cordon] (invalid request) REQUEST REJECTED")
                && r.message().unwrap().contains("Failure: InvalidInput")
                && r.message().unwrap().contains("instance_id \"i-nope\"")
        })
        .then_output(|| PublishOutput::builder().build());
    let c = clients(&[&put], &[&publish]);
    let event = json!({
        "outcome": "rejected", "execution_arn": EXEC, "execution_started_at": "t",
        "request": {"instance_id": "i-nope"},
        "failure": {"Error": "InvalidInput", "Cause": "{\"errorType\":\"InvalidInput\",\"errorMessage\":\"invalid input: instance_id \\\"i-nope\\\" is not an EC2 instance ID\"}"}
    });
    let out = handle(&c, event).await.unwrap();
    assert_eq!(publish.num_calls(), 1);
    assert_eq!(put.num_calls(), 0);
    assert!(out.manifest_key.is_none());
}

#[tokio::test]
async fn containment_failure_is_loud_and_critical() {
    let none = mock!(aws_sdk_s3::Client::get_object).then_http_response(s3_error(404, "NoSuchKey"));
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|r| {
            r.subject() == Some("[Cordon] i-0123456789abcdef0 CONTAINMENT FAILED")
                && r.message().unwrap().contains("may still be reachable")
                && r.message()
                    .unwrap()
                    .contains("Failure: ContainmentNotVerified")
                && r.message_attributes().unwrap()["severity"].string_value() == Some("critical")
        })
        .then_output(|| PublishOutput::builder().build());
    let c = clients(&[&none, &put], &[&publish]);
    let mut event = contained();
    event["outcome"] = json!("containment-failed");
    event["failure"] = json!({"Error": "ContainmentNotVerified", "Cause": "eni-a has groups"});
    handle(&c, event).await.unwrap();
    assert_eq!(publish.num_calls(), 1);
}

#[tokio::test]
async fn sns_throttling_is_transient() {
    let none = mock!(aws_sdk_s3::Client::get_object).then_http_response(s3_error(404, "NoSuchKey"));
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let publish =
        mock!(aws_sdk_sns::Client::publish).then_http_response(query_error(400, "Throttling"));
    let err = handle(&clients(&[&none, &put], &[&publish]), contained())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "Transient");
}
