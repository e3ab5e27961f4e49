use super::*;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
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
        evidence: EvidenceWriter::new(s3c, "evidence"),
    }
}

const CONFIG: Config = Config {
    execution_timeout_seconds: 900,
};

#[test]
fn the_linux_script_travels_unexpanded_and_the_only_variable_is_a_constant() {
    assert!(
        !LINUX_SCRIPT.contains(SCRIPT_END),
        "the script must not end its own here-document"
    );
    let lines = linux_commands(false);
    assert_eq!(
        lines[0],
        "CORDON_SCRIPT=$(cat <<'CORDON_COLLECTION_SCRIPT_END'"
    );
    assert!(lines
        .last()
        .unwrap()
        .starts_with("CORDON_CAPTURE_MEMORY=0 exec bash -c"));
    assert!(linux_commands(true)
        .last()
        .unwrap()
        .starts_with("CORDON_CAPTURE_MEMORY=1 "));
    assert_eq!(lines.len(), LINUX_SCRIPT.lines().count() + 4);
}

#[tokio::test]
async fn sends_the_script_to_this_instance_only_with_output_to_the_bucket() {
    let none = mock!(aws_sdk_ssm::Client::list_commands)
        .then_output(|| ListCommandsOutput::builder().build());
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| {
            let params = r.parameters().unwrap();
            r.instance_ids() == [ID]
                && r.targets().is_empty()
                && r.document_name() == Some("AWS-RunShellScript")
                && r.output_s3_bucket_name() == Some("evidence")
                && r.output_s3_key_prefix() == Some("IR-6/i-0123456789abcdef0/ssm")
                && r.comment() == Some("cordon incident IR-6")
                && params["executionTimeout"] == ["900"]
                && params["commands"]
                    .last()
                    .unwrap()
                    .starts_with("CORDON_CAPTURE_MEMORY=1 ")
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
    assert_eq!(out.command_id, CMD);
    assert!(!out.reused);
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

#[tokio::test]
async fn polls_until_finished_then_hashes_the_output_objects() {
    let running = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .match_requests(|r| r.command_id() == Some(CMD) && r.instance_id() == Some(ID))
        .then_output(|| {
            GetCommandInvocationOutput::builder()
                .status(CommandInvocationStatus::InProgress)
                .response_code(-1)
                .build()
        });
    let out = poll(&clients(&[&running], &[]), &incident(false), CMD)
        .await
        .unwrap();
    assert!(!out.finished);
    assert_eq!(out.status, "InProgress");

    let done = mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(CommandInvocationStatus::Success)
            .response_code(0)
            .build()
    });
    let list = mock!(aws_sdk_s3::Client::list_objects_v2)
        .match_requests(|r| r.prefix() == Some("IR-6/i-0123456789abcdef0/ssm/0b8f3c2e-1111-2222-3333-444455556666/i-0123456789abcdef0/"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(aws_sdk_s3::types::Object::builder().key("p/awsrunShellScript/0.awsrunShellScript/stdout").build())
                .build()
        });
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(|| {
        GetObjectOutput::builder()
            .body(b"collected".to_vec().into())
            .build()
    });
    let out = poll(&clients(&[&done], &[&list, &get]), &incident(false), CMD)
        .await
        .unwrap();
    assert!(out.finished && out.succeeded);
    assert_eq!(out.response_code, Some(0));
    assert_eq!(
        out.artifacts[0].sha256,
        cordon_common::evidence::sha256_hex(b"collected")
    );
    assert_eq!(out.artifacts[0].size, 9);
}

#[tokio::test]
async fn an_invocation_not_yet_visible_is_pending_and_throttling_is_transient() {
    let missing = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .then_http_response(json_error(400, "InvocationDoesNotExist"));
    let out = poll(&clients(&[&missing], &[]), &incident(false), CMD)
        .await
        .unwrap();
    assert_eq!(out.status, "Pending");
    let throttled = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .then_http_response(json_error(400, "ThrottlingException"));
    let err = poll(&clients(&[&throttled], &[]), &incident(false), CMD)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "Transient");
    let bad = json!({"action": "poll", "incident": {"incident_id": "IR-6", "instance_id": ID}, "command_id": "$(reboot)"});
    assert_eq!(
        handle(&clients(&[], &[]), &CONFIG, bad)
            .await
            .unwrap_err()
            .name(),
        "InvalidInput"
    );
}
