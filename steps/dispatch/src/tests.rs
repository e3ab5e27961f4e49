use super::*;
use aws_sdk_sfn::operation::list_executions::ListExecutionsOutput;
use aws_sdk_sfn::operation::start_execution::StartExecutionOutput;
use aws_sdk_sfn::primitives::DateTime;
use aws_sdk_sfn::types::ExecutionListItem;
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::json_error;
use serde_json::json;

const SM: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:Cordon-response";
const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/guardduty.fifo";

fn config(max_running: i32) -> Config {
    Config {
        state_machine_arn: SM.into(),
        queue_url: QUEUE.into(),
        max_running,
        retry_delay_seconds: 20,
    }
}

fn finding(n: usize) -> SqsMessage {
    SqsMessage {
        message_id: format!("msg-{n}"),
        receipt_handle: format!("rh-{n}"),
        body: json!({
            "finding_id": format!("{n:032x}"),
            "instance_id": format!("i-{n:017x}"),
            "reason": "Backdoor:EC2/C&CActivity.B!DNS",
            "requested_by": "guardduty",
        })
        .to_string(),
    }
}

fn running(n: usize, more: bool) -> Rule {
    mock!(aws_sdk_sfn::Client::list_executions)
        .match_requests(|r| {
            r.state_machine_arn() == Some(SM)
                && r.status_filter() == Some(&ExecutionStatus::Running)
        })
        .then_output(move || {
            let items = (0..n).map(|i| {
                ExecutionListItem::builder()
                    .execution_arn(format!("{SM}:running-{i}").replace("stateMachine", "execution"))
                    .state_machine_arn(SM)
                    .name(format!("running-{i}"))
                    .status(ExecutionStatus::Running)
                    .start_date(DateTime::from_secs(0))
                    .build()
                    .unwrap()
            });
            let out = ListExecutionsOutput::builder().set_executions(Some(items.collect()));
            if more { out.next_token("page-2") } else { out }
                .build()
                .unwrap()
        })
}

fn starts() -> Rule {
    mock!(aws_sdk_sfn::Client::start_execution).then_output(|| {
        StartExecutionOutput::builder()
            .execution_arn("arn:aws:states:us-east-1:123456789012:execution:Cordon-response:x")
            .start_date(DateTime::from_secs(0))
            .build()
            .unwrap()
    })
}

fn visibility() -> Rule {
    mock!(aws_sdk_sqs::Client::change_message_visibility_batch).then_output(|| {
        ChangeMessageVisibilityBatchOutput::builder()
            .set_successful(Some(vec![]))
            .set_failed(Some(vec![]))
            .build()
            .unwrap()
    })
}

fn clients(sfn: &[&Rule], sqs: &[&Rule]) -> Clients {
    Clients {
        sfn: mock_client!(aws_sdk_sfn, RuleMode::MatchAny, sfn, |c| c
            .retry_config(aws_sdk_sfn::config::retry::RetryConfig::disabled())),
        sqs: mock_client!(aws_sdk_sqs, RuleMode::MatchAny, sqs, |c| c
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())),
    }
}

fn left(response: &BatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn starts_findings_in_order_while_slots_are_free_and_leaves_the_rest_queued() {
    let list = running(1, false);
    let start = mock!(aws_sdk_sfn::Client::start_execution)
        .match_requests(|r| {
            let input: Value = serde_json::from_str(r.input().unwrap()).unwrap();
            // The finding id is the name; the input is what the rule produced, without it.
            r.state_machine_arn() == Some(SM)
                && input.get("finding_id").is_none()
                && input["requested_by"] == "guardduty"
                && input["instance_id"]
                    .as_str()
                    .unwrap()
                    .ends_with(&r.name().unwrap()[31..])
        })
        .then_output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:x")
                .start_date(DateTime::from_secs(0))
                .build()
                .unwrap()
        });
    let vis = mock!(aws_sdk_sqs::Client::change_message_visibility_batch)
        .match_requests(|r| {
            r.queue_url() == Some(QUEUE)
                && r.entries()
                    .iter()
                    .map(|e| e.receipt_handle())
                    .collect::<Vec<_>>()
                    == ["rh-3", "rh-4"]
                && r.entries()
                    .iter()
                    .all(|e| e.visibility_timeout() == Some(20))
        })
        .then_output(|| {
            ChangeMessageVisibilityBatchOutput::builder()
                .set_successful(Some(vec![]))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        });
    let c = clients(&[&list, &start], &[&vis]);
    let batch: Vec<_> = (1..=4).map(finding).collect();

    let out = dispatch(&c, &config(3), &batch).await.unwrap();

    assert_eq!(start.num_calls(), 2, "3 allowed, 1 running: two start");
    assert_eq!(left(&out), ["msg-3", "msg-4"]);
    assert_eq!(vis.num_calls(), 1);
    assert_eq!(list.num_calls(), 1, "one bounded page");
}

#[tokio::test]
async fn the_running_count_is_one_page_of_at_most_n_running_executions() {
    let list = mock!(aws_sdk_sfn::Client::list_executions)
        .match_requests(|r| {
            r.status_filter() == Some(&ExecutionStatus::Running)
                && r.max_results() == Some(7)
                && r.next_token().is_none()
        })
        .then_output(|| {
            ListExecutionsOutput::builder()
                .set_executions(Some(vec![]))
                .build()
                .unwrap()
        });
    let (start, vis) = (starts(), visibility());
    let c = clients(&[&list, &start], &[&vis]);

    let out = dispatch(&c, &config(7), &[finding(1)]).await.unwrap();

    assert_eq!(list.num_calls(), 1);
    assert_eq!(start.num_calls(), 1);
    assert!(out.batch_item_failures.is_empty());
}

#[tokio::test]
async fn at_the_bound_nothing_starts_and_every_message_stays_queued() {
    let (list, start, vis) = (running(2, false), starts(), visibility());
    let c = clients(&[&list, &start], &[&vis]);
    let batch: Vec<_> = (1..=3).map(finding).collect();

    let out = dispatch(&c, &config(2), &batch).await.unwrap();

    assert_eq!(start.num_calls(), 0);
    assert_eq!(left(&out), ["msg-1", "msg-2", "msg-3"]);
    assert_eq!(vis.num_calls(), 1);
}

#[tokio::test]
async fn a_next_page_means_the_bound_is_reached() {
    // A full page with a nextToken: N or more run, whatever the page length says.
    let (list, start, vis) = (running(2, true), starts(), visibility());
    let c = clients(&[&list, &start], &[&vis]);

    let out = dispatch(&c, &config(5), &[finding(1)]).await.unwrap();

    assert_eq!(start.num_calls(), 0);
    assert_eq!(left(&out), ["msg-1"]);
}

#[tokio::test]
async fn a_repeated_finding_is_answered_by_its_existing_execution_and_takes_no_slot() {
    let list = running(0, false);
    let start = mock!(aws_sdk_sfn::Client::start_execution)
        .sequence()
        .http_response(json_error(400, "ExecutionAlreadyExists"))
        .output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:x")
                .start_date(DateTime::from_secs(0))
                .build()
                .unwrap()
        })
        .build();
    let vis = visibility();
    let c = clients(&[&list, &start], &[&vis]);

    let out = dispatch(&c, &config(1), &[finding(1), finding(2)])
        .await
        .unwrap();

    assert_eq!(
        start.num_calls(),
        2,
        "the repeat took no slot, so the next finding starts"
    );
    assert!(
        out.batch_item_failures.is_empty(),
        "the repeat is done, not queued again"
    );
    assert_eq!(vis.num_calls(), 0);
}

#[tokio::test]
async fn a_throttled_start_leaves_it_and_every_later_message_queued_in_order() {
    let list = running(0, false);
    let start = mock!(aws_sdk_sfn::Client::start_execution)
        .sequence()
        .output(|| {
            StartExecutionOutput::builder()
                .execution_arn("arn:x")
                .start_date(DateTime::from_secs(0))
                .build()
                .unwrap()
        })
        .http_response(json_error(400, "ThrottlingException"))
        .build();
    let vis = visibility();
    let c = clients(&[&list, &start], &[&vis]);
    let batch: Vec<_> = (1..=3).map(finding).collect();

    let out = dispatch(&c, &config(10), &batch).await.unwrap();

    assert_eq!(
        start.num_calls(),
        2,
        "nothing is tried after the first failure (FIFO order)"
    );
    assert_eq!(left(&out), ["msg-2", "msg-3"]);
}

#[tokio::test]
async fn a_denied_start_stays_queued_for_the_dead_letter_queue_to_catch() {
    let list = running(0, false);
    let start = mock!(aws_sdk_sfn::Client::start_execution)
        .then_http_response(json_error(400, "AccessDeniedException"));
    let vis = visibility();
    let c = clients(&[&list, &start], &[&vis]);

    let out = dispatch(&c, &config(10), &[finding(1)]).await.unwrap();

    assert_eq!(left(&out), ["msg-1"]);
}

#[tokio::test]
async fn without_the_running_count_nothing_starts_and_the_invocation_fails() {
    let list = mock!(aws_sdk_sfn::Client::list_executions)
        .then_http_response(json_error(400, "ThrottlingException"));
    let (start, vis) = (starts(), visibility());
    let c = clients(&[&list, &start], &[&vis]);

    let err = dispatch(&c, &config(10), &[finding(1)]).await.unwrap_err();

    assert_eq!(err.name(), "Transient");
    assert_eq!(err.aws_code(), Some("ThrottlingException"));
    assert_eq!(start.num_calls(), 0);
}

#[tokio::test]
async fn a_failed_visibility_change_still_leaves_the_messages_queued() {
    let (list, start) = (running(1, false), starts());
    let vis = mock!(aws_sdk_sqs::Client::change_message_visibility_batch).then_http_response(
        json_error(400, "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
    );
    let c = clients(&[&list, &start], &[&vis]);

    let out = dispatch(&c, &config(1), &[finding(1)]).await.unwrap();

    assert_eq!(vis.num_calls(), 1);
    assert_eq!(left(&out), ["msg-1"]);
}

#[tokio::test]
async fn an_empty_batch_calls_nothing() {
    let (list, start, vis) = (running(0, false), starts(), visibility());
    let c = clients(&[&list, &start], &[&vis]);

    let out = dispatch(&c, &config(1), &[]).await.unwrap();

    assert_eq!(out, BatchResponse::default());
    assert_eq!(list.num_calls(), 0);
}

#[tokio::test]
async fn the_lambda_event_is_lambdas_sqs_event_and_the_answer_a_partial_batch_response() {
    let (list, start, vis) = (running(1, false), starts(), visibility());
    let c = clients(&[&list, &start], &[&vis]);
    let event = json!({"Records": [{
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": finding(1).body,
        "attributes": {"ApproximateReceiveCount": "3", "MessageGroupId": "guardduty"},
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:guardduty.fifo",
        "awsRegion": "us-east-1"
    }]});

    let out = handle(&c, &config(1), event).await.unwrap();

    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({"batchItemFailures": [{"itemIdentifier": "059f36b4-87a3-44ab-83d2-661975830a7d"}]})
    );
    let err = handle(&c, &config(1), json!({"records": []}))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
}

#[test]
fn the_finding_id_names_the_execution_and_leaves_the_input() {
    let r = StartRequest::from_body(&finding(7).body);
    assert_eq!(r.name, format!("{:032x}", 7));
    assert_eq!(
        serde_json::from_str::<Value>(&r.input).unwrap(),
        json!({"instance_id": format!("i-{:017x}", 7), "reason": "Backdoor:EC2/C&CActivity.B!DNS", "requested_by": "guardduty"})
    );
}

#[test]
fn a_finding_id_that_cannot_be_a_name_gets_a_stable_derived_one() {
    let body = json!({"finding_id": "arn:aws:guardduty:finding/1", "instance_id": "i-0123abcd"})
        .to_string();
    let a = StartRequest::from_body(&body);
    let b = StartRequest::from_body(&body);
    assert_eq!(a, b);
    assert!(
        a.name.starts_with("gd-") && a.name.len() == 43 && is_incident_id(&a.name),
        "{}",
        a.name
    );
    let long = json!({"finding_id": "x".repeat(81)}).to_string();
    assert!(StartRequest::from_body(&long).name.starts_with("gd-"));
}

#[test]
fn anything_else_is_passed_on_for_the_state_machine_to_reject_and_announce() {
    let no_id = StartRequest::from_body(r#"{"instance_id":"i-0123abcd"}"#);
    assert!(no_id.name.starts_with("gd-"));
    assert_eq!(no_id.input, r#"{"instance_id":"i-0123abcd"}"#);
    let array = StartRequest::from_body("[1,2]");
    assert_eq!(array.input, "[1,2]");
    let text = StartRequest::from_body("not json");
    assert_eq!(text.input, r#""not json""#);
    assert!(is_incident_id(&text.name));
}

#[test]
fn incident_ids_follow_the_readme_rule() {
    for ok in [
        "a",
        "IR-1",
        "2024.10_01-a",
        &"x".repeat(80),
        "60baffd3f9042e38640f2300d5c5a631",
    ] {
        assert!(is_incident_id(ok), "{ok}");
    }
    for bad in ["", "-x", ".x", &"x".repeat(81), "a b", "a:b", "a/b", "é"] {
        assert!(!is_incident_id(bad), "{bad}");
    }
}

#[test]
fn configuration_is_checked_once_at_start_up() {
    let ok = Config::from_values(SM.into(), QUEUE.into(), "10", "30").unwrap();
    assert_eq!((ok.max_running, ok.retry_delay_seconds), (10, 30));
    for (max, delay) in [
        ("0", "30"),
        ("1001", "30"),
        ("x", "30"),
        ("10", "-1"),
        ("10", "43201"),
    ] {
        let err = Config::from_values(SM.into(), QUEUE.into(), max, delay).unwrap_err();
        assert_eq!(err.name(), "Misconfigured", "{max} {delay}");
    }
}
