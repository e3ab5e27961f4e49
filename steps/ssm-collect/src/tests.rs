use super::*;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_ssm::operation::cancel_command::CancelCommandOutput;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types::{Command, CommandStatus, InstanceInformation, PingStatus, PlatformType};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::json_error;
use serde_json::json;

const ID: &str = "i-0123456789abcdef0";
const CMD: &str = "0b8f3c2e-1111-2222-3333-444455556666";

fn incident(memory: bool) -> Incident {
    Incident::from_value(
        json!({"incident_id": "IR-6", "instance_id": ID, "options": {"memory": memory}}),
    )
    .unwrap()
}

fn info(online: bool) -> Rule {
    mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(move || {
        DescribeInstanceInformationOutput::builder()
            .instance_information_list(
                InstanceInformation::builder()
                    .instance_id(ID)
                    .ping_status(if online {
                        PingStatus::Online
                    } else {
                        PingStatus::ConnectionLost
                    })
                    .platform_type(PlatformType::Linux)
                    .build(),
            )
            .build()
    })
}

fn clients(ssm: &[&Rule], s3: &[&Rule]) -> Clients {
    let s3c = mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3);
    Clients {
        ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, ssm, |c| c
            .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled())),
        s3: s3c.clone(),
        presigner: presigner(),
        evidence: EvidenceWriter::new(s3c, "evidence"),
    }
}

/// Clients whose SSM calls must come in exactly this order (status, cancel, status).
fn in_order(ssm: &[&Rule], s3: &[&Rule]) -> Clients {
    let s3c = mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3);
    Clients {
        ssm: mock_client!(aws_sdk_ssm, RuleMode::Sequential, ssm),
        s3: s3c.clone(),
        presigner: presigner(),
        evidence: EvidenceWriter::new(s3c, "evidence"),
    }
}

/// A client that only signs: test credentials, nothing is sent.
fn presigner() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .with_test_defaults()
            .region(aws_sdk_s3::config::Region::new("eu-west-1"))
            .build(),
    )
}

const CONFIG: Config = Config {
    default_budget_seconds: 1200,
};

fn input(memory: bool) -> ScriptInput {
    ScriptInput {
        memory,
        budget: Budget::new(1200),
        collection_url: "https://evidence.s3.amazonaws.com/IR-6/i-1/ssm/collection.txt.gz?X-Amz-Signature=ab%2Fc&X-Amz-Expires=1200".into(),
        memory_url: memory.then(|| "https://evidence.s3.amazonaws.com/IR-6/i-1/ssm/memory.lime?X-Amz-Signature=cd".into()),
    }
}

#[test]
fn the_linux_script_travels_unexpanded_and_its_inputs_are_quoted_constants() {
    assert!(
        !LINUX_SCRIPT.contains(SCRIPT_END),
        "the script must not end its own here-document"
    );
    let lines = linux_commands(&input(false));
    assert_eq!(
        lines[0],
        "CORDON_SCRIPT=$(cat <<'CORDON_COLLECTION_SCRIPT_END'"
    );
    let last = lines.last().unwrap();
    assert!(last.starts_with("CORDON_CAPTURE_MEMORY='0' CORDON_BUDGET_SECONDS='900' CORDON_MEMORY_BUDGET_SECONDS='540' CORDON_UPLOAD_COLLECTION_URL='https://"), "{last}");
    assert!(!last.contains("CORDON_UPLOAD_MEMORY_URL"));
    assert!(last.ends_with(" exec bash -c \"$CORDON_SCRIPT\" cordon-collection </dev/null"));
    assert!(
        linux_commands(&input(true))
            .last()
            .unwrap()
            .contains("CORDON_CAPTURE_MEMORY='1' ")
            && linux_commands(&input(true))
                .last()
                .unwrap()
                .contains("CORDON_UPLOAD_MEMORY_URL='https://")
    );
    assert_eq!(lines.len(), LINUX_SCRIPT.lines().count() + 4);
    assert!(windows_commands(&input(true))[0] == "$env:CORDON_CAPTURE_MEMORY = '1'");
}

#[test]
fn a_url_that_could_leave_its_quotes_is_refused() {
    let mut bad = input(false);
    bad.collection_url = "https://x/'; reboot; '".into();
    assert_eq!(bad.check().unwrap_err().name(), "InvalidInput");
    assert!(input(true).check().is_ok());
}

#[tokio::test]
async fn sends_the_script_to_this_instance_only_with_timeouts_from_the_budget_and_no_s3_output() {
    let none = mock!(aws_sdk_ssm::Client::list_commands)
        .then_output(|| ListCommandsOutput::builder().build());
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| {
            let params = r.parameters().unwrap();
            let last = params["commands"].last().unwrap();
            r.instance_ids() == [ID]
                && r.targets().is_empty()
                && r.document_name() == Some("AWS-RunShellScript")
                && r.output_s3_bucket_name().is_none()
                && r.comment() == Some("cordon incident IR-6")
                // 1200 s: 240 s to deliver, 960 s to run, 900 s for the script.
                && r.timeout_seconds() == Some(240)
                && params["executionTimeout"] == ["960"]
                && last.starts_with("CORDON_CAPTURE_MEMORY='1' CORDON_BUDGET_SECONDS='900' ")
                && last.contains("/IR-6/i-0123456789abcdef0/ssm/collection.txt.gz?")
                && last.contains("/IR-6/i-0123456789abcdef0/ssm/memory.lime?")
                && last.contains("X-Amz-Expires=1200")
        })
        .then_output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id(CMD).build())
                .build()
        });
    let i = info(true);
    let out = super::send(&clients(&[&i, &none, &send], &[]), &CONFIG, &incident(true))
        .await
        .unwrap();
    assert_eq!(send.num_calls(), 1);
    assert_eq!(out.command_id, CMD);
    assert!(!out.reused);
    assert_eq!(out.next_wait_seconds, 15);
    assert_eq!(out.budget.delivery_timeout_seconds, 240);
    assert_eq!(
        out.keys,
        [
            "IR-6/i-0123456789abcdef0/ssm/collection.txt.gz",
            "IR-6/i-0123456789abcdef0/ssm/memory.lime"
        ]
    );
}

#[tokio::test]
async fn a_budget_in_the_request_overrides_the_default() {
    let none = mock!(aws_sdk_ssm::Client::list_commands)
        .then_output(|| ListCommandsOutput::builder().build());
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| {
            r.timeout_seconds() == Some(60)
                && r.parameters().unwrap()["executionTimeout"] == ["240"]
        })
        .then_output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id(CMD).build())
                .build()
        });
    let short = Incident::from_value(json!({"incident_id": "IR-6", "instance_id": ID,
        "options": {"collection_budget_seconds": 300}}))
    .unwrap();
    let i = info(true);
    super::send(&clients(&[&i, &none, &send], &[]), &CONFIG, &short)
        .await
        .unwrap();
    assert_eq!(send.num_calls(), 1);
}

#[tokio::test]
async fn a_resend_for_the_same_incident_reuses_the_command() {
    let earlier = mock!(aws_sdk_ssm::Client::list_commands).then_output(|| {
        ListCommandsOutput::builder()
            .commands(
                Command::builder()
                    .command_id(CMD)
                    .comment("cordon incident IR-6")
                    .status(CommandStatus::InProgress)
                    .requested_date_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
                    .build(),
            )
            .build()
    });
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .then_output(|| SendCommandOutput::builder().build());
    let i = info(true);
    let out = super::send(
        &clients(&[&i, &earlier, &send], &[]),
        &CONFIG,
        &incident(false),
    )
    .await
    .unwrap();
    assert_eq!(send.num_calls(), 0);
    assert!(out.reused);
    assert_eq!(out.sent_at, 1_700_000_000);
}

#[tokio::test]
async fn an_instance_ssm_cannot_reach_is_not_ssm_managed() {
    let offline = info(false);
    let err = send(&clients(&[&offline], &[]), &CONFIG, &incident(false))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "NotSsmManaged");
    let unknown = mock!(aws_sdk_ssm::Client::describe_instance_information)
        .then_output(|| DescribeInstanceInformationOutput::builder().build());
    let err = send(&clients(&[&unknown], &[]), &CONFIG, &incident(false))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "NotSsmManaged");
}

fn invocation(status: CommandInvocationStatus, details: &str, stdout: &'static str) -> Rule {
    let details = details.to_owned();
    mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(|r| r.command_id() == Some(CMD) && r.instance_id() == Some(ID))
        .then_output(move || {
            GetCommandInvocationOutput::builder()
                .status(status.clone())
                .status_details(details.clone())
                .response_code(-1)
                .standard_output_content(stdout)
                .build()
        })
}

const T0: i64 = 1_700_000_000;

#[tokio::test]
async fn polls_with_a_growing_interval_until_the_deadline() {
    let running = invocation(CommandInvocationStatus::InProgress, "InProgress", "");
    let c = clients(&[&running], &[]);
    let out = poll(&c, &CONFIG, &incident(false), CMD, T0, 0, T0 + 16)
        .await
        .unwrap();
    assert!(!out.finished);
    assert_eq!((out.polls, out.next_wait_seconds), (1, 30));
    let out = poll(&c, &CONFIG, &incident(false), CMD, T0, 4, T0 + 465)
        .await
        .unwrap();
    assert_eq!((out.polls, out.next_wait_seconds), (5, 300));
    // Never past the deadline (30 s before SSM's own end at 1,200 s).
    let out = poll(&c, &CONFIG, &incident(false), CMD, T0, 6, T0 + 1065)
        .await
        .unwrap();
    assert_eq!(out.next_wait_seconds, 105);
}

#[tokio::test]
async fn at_the_deadline_the_command_is_cancelled_and_its_end_awaited() {
    let cancelled = invocation(CommandInvocationStatus::Cancelled, "Cancelled", "");
    let cancel = mock!(aws_sdk_ssm::Client::cancel_command)
        .match_requests(|r| r.command_id() == Some(CMD) && r.instance_ids() == [ID])
        .then_output(|| CancelCommandOutput::builder().build());
    let running = invocation(CommandInvocationStatus::InProgress, "InProgress", "");
    let missing = mock!(aws_sdk_s3::Client::get_object)
        .then_http_response(cordon_common::testing::s3_error(404, "NoSuchKey"));
    let c = in_order(&[&running, &cancel, &cancelled], &[&missing]);
    let out = poll(&c, &CONFIG, &incident(false), CMD, T0, 8, T0 + 1170)
        .await
        .unwrap();
    assert_eq!(cancel.num_calls(), 1);
    assert!(out.finished && out.cancelled && !out.succeeded);
    assert_eq!(out.status, "Cancelled");
    assert!(
        out.gaps[0]
            .reason
            .contains("budget of 1200 s and was cancelled"),
        "{:?}",
        out.gaps
    );
}

#[tokio::test]
async fn a_command_never_delivered_is_a_gap_naming_the_channel() {
    let timed_out = invocation(CommandInvocationStatus::TimedOut, "DeliveryTimedOut", "");
    let out = poll(
        &clients(&[&timed_out], &[]),
        &CONFIG,
        &incident(false),
        CMD,
        T0,
        3,
        T0 + 250,
    )
    .await
    .unwrap();
    assert!(out.finished && !out.succeeded);
    assert_eq!(out.gaps.len(), 1);
    assert!(out.gaps[0]
        .reason
        .contains("DeliveryTimedOut; delivery timeout 240 s"));
    assert!(out.artifacts.is_empty());
}

#[tokio::test]
async fn once_finished_the_uploads_are_hashed_and_checked_against_the_script() {
    let memory_sha = cordon_common::evidence::sha256_hex(b"image");
    let stdout: &'static str = Box::leak(
        format!(
            "CORDON_ARTIFACT name=memory.lime sha256={memory_sha} bytes=5\nCORDON_ARTIFACT name=collection.txt.gz sha256={} bytes=9\ncordon-collection: complete sections=12 failed=0\n",
            "0".repeat(64)
        )
        .into_boxed_str(),
    );
    let done = invocation(CommandInvocationStatus::Success, "Success", stdout);
    let get_memory = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.key() == Some("IR-6/i-0123456789abcdef0/ssm/memory.lime"))
        .then_output(|| {
            GetObjectOutput::builder()
                .body(b"image".to_vec().into())
                .build()
        });
    let get_collection = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.key() == Some("IR-6/i-0123456789abcdef0/ssm/collection.txt.gz"))
        .then_output(|| {
            GetObjectOutput::builder()
                .body(b"collected".to_vec().into())
                .build()
        });
    let out = poll(
        &clients(&[&done], &[&get_memory, &get_collection]),
        &CONFIG,
        &incident(true),
        CMD,
        T0,
        2,
        T0 + 100,
    )
    .await
    .unwrap();
    assert!(out.finished && out.succeeded);
    assert_eq!(out.artifacts.len(), 2);
    assert_eq!(
        out.artifacts[0].sha256,
        cordon_common::evidence::sha256_hex(b"collected")
    );
    assert_eq!(out.artifacts[1].sha256, memory_sha);
    // The collection's reported hash differs from what the bucket holds: a gap, both kept.
    assert_eq!(out.gaps.len(), 1, "{:?}", out.gaps);
    assert!(out.gaps[0]
        .reason
        .contains("changed between the host and the bucket"));
}

#[test]
fn the_script_lines_are_parsed() {
    let (reported, gaps) = parse_stdout(
        "noise\nCORDON_ARTIFACT name=memory.lime sha256=AB bytes=12\nCORDON_GAP what=memory reason=avml is not on PATH\nCORDON_ARTIFACT name=x sha256=1 bytes=not-a-number\n",
    );
    assert_eq!(
        reported,
        [Reported {
            name: "memory.lime".into(),
            sha256: "ab".into(),
            bytes: 12
        }]
    );
    assert_eq!(
        gaps,
        [("memory".to_owned(), "avml is not on PATH".to_owned())]
    );
}

#[tokio::test]
async fn an_invocation_not_yet_visible_is_pending_and_throttling_is_transient() {
    let missing = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .then_http_response(json_error(400, "InvocationDoesNotExist"));
    let out = poll(
        &clients(&[&missing], &[]),
        &CONFIG,
        &incident(false),
        CMD,
        T0,
        0,
        T0 + 15,
    )
    .await
    .unwrap();
    assert_eq!(out.status, "Pending");
    let throttled = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .then_http_response(json_error(400, "ThrottlingException"));
    let err = poll(
        &clients(&[&throttled], &[]),
        &CONFIG,
        &incident(false),
        CMD,
        T0,
        0,
        T0 + 15,
    )
    .await
    .unwrap_err();
    assert_eq!(err.name(), "Transient");
    for bad in [
        json!({"action": "poll", "incident": {"incident_id": "IR-6", "instance_id": ID}, "command_id": "$(reboot)", "sent_at": T0}),
        json!({"action": "poll", "incident": {"incident_id": "IR-6", "instance_id": ID}, "command_id": CMD, "sent_at": -1}),
        json!({"action": "poll", "incident": {"incident_id": "IR-6", "instance_id": ID}, "command_id": CMD}),
    ] {
        assert_eq!(
            handle(&clients(&[], &[]), &CONFIG, bad)
                .await
                .unwrap_err()
                .name(),
            "InvalidInput"
        );
    }
}

#[tokio::test]
async fn a_command_the_agent_never_took_is_cancelled_at_the_deadline_and_named_as_such() {
    let pending = invocation(CommandInvocationStatus::Pending, "Pending", "");
    let cancel = mock!(aws_sdk_ssm::Client::cancel_command)
        .then_output(|| CancelCommandOutput::builder().build());
    let cancelled = invocation(CommandInvocationStatus::Cancelled, "Cancelled", "");
    let missing = mock!(aws_sdk_s3::Client::get_object)
        .then_http_response(cordon_common::testing::s3_error(404, "NoSuchKey"));
    let c = in_order(&[&pending, &cancel, &cancelled], &[&missing]);
    let out = poll(&c, &CONFIG, &incident(false), CMD, T0, 7, T0 + 1171)
        .await
        .unwrap();
    assert!(out.finished && out.cancelled);
    assert!(
        out.gaps[0]
            .reason
            .contains("never took the command (Pending after 1171 s)"),
        "{:?}",
        out.gaps
    );
}

#[tokio::test]
async fn memory_not_asked_for_is_not_a_gap() {
    let stdout: &'static str =
        "CORDON_GAP what=memory reason=memory capture not requested (CORDON_CAPTURE_MEMORY=0)\n";
    let done = invocation(CommandInvocationStatus::Success, "Success", stdout);
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(|| {
        GetObjectOutput::builder()
            .body(b"c".to_vec().into())
            .build()
    });
    let out = poll(
        &clients(&[&done], &[&get]),
        &CONFIG,
        &incident(false),
        CMD,
        T0,
        1,
        T0 + 30,
    )
    .await
    .unwrap();
    assert!(
        out.gaps.iter().all(|g| g.what != "memory image"),
        "{:?}",
        out.gaps
    );
}
