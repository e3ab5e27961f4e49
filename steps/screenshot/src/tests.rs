use super::*;
use aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput;
use aws_sdk_ec2::operation::get_console_screenshot::GetConsoleScreenshotOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use cordon_common::testing::ec2_error;
use serde_json::json;

const ID: &str = "i-0123456789abcdef0";

fn incident() -> Incident {
    Incident::from_value(json!({"incident_id": "IR-2", "instance_id": ID})).unwrap()
}

fn not_found() -> HttpResponse {
    HttpResponse::new(StatusCode::try_from(404).unwrap(), SdkBody::empty())
}

fn clients(ec2_rules: &[&Rule], s3_rules: &[&Rule]) -> Clients {
    Clients {
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, ec2_rules, |c| c
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())),
        evidence: EvidenceWriter::new(
            mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3_rules),
            "evidence",
        ),
    }
}

#[tokio::test]
async fn captures_screenshot_and_console_output_once() {
    let shot = mock!(aws_sdk_ec2::Client::get_console_screenshot)
        .match_requests(|r| r.instance_id() == Some(ID) && r.wake_up() == Some(true))
        .then_output(|| {
            GetConsoleScreenshotOutput::builder()
                .image_data(aws_smithy_types::base64::encode(b"\xff\xd8jpeg"))
                .build()
        });
    let output = mock!(aws_sdk_ec2::Client::get_console_output)
        .match_requests(|r| r.instance_id() == Some(ID) && r.latest() == Some(true))
        .then_output(|| {
            GetConsoleOutputOutput::builder()
                .output(aws_smithy_types::base64::encode("boot log"))
                .build()
        });
    let head = mock!(aws_sdk_s3::Client::head_object).then_http_response(not_found);
    let put_jpg = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| {
            r.key() == Some("IR-2/i-0123456789abcdef0/console-screenshot.jpg")
                && r.content_type() == Some("image/jpeg")
        })
        .then_output(|| PutObjectOutput::builder().build());
    let put_txt = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| r.key() == Some("IR-2/i-0123456789abcdef0/console-output.txt"))
        .then_output(|| PutObjectOutput::builder().build());
    let c = clients(&[&shot, &output], &[&head, &put_jpg, &put_txt]);

    let out = capture(&c, &incident()).await.unwrap();

    assert_eq!(out.artifacts.len(), 2);
    assert!(out.gaps.is_empty());
    assert_eq!(
        out.artifacts[1].sha256,
        cordon_common::evidence::sha256_hex(b"boot log")
    );
    assert_eq!((put_jpg.num_calls(), put_txt.num_calls()), (1, 1));
}

#[tokio::test]
async fn an_instance_that_cannot_give_a_screenshot_is_a_gap_not_an_error() {
    let shot = mock!(aws_sdk_ec2::Client::get_console_screenshot)
        .then_http_response(ec2_error(400, "UnsupportedOperation"));
    let output = mock!(aws_sdk_ec2::Client::get_console_output)
        .then_output(|| GetConsoleOutputOutput::builder().build());
    let head = mock!(aws_sdk_s3::Client::head_object).then_http_response(not_found);
    let c = clients(&[&shot, &output], &[&head]);

    let out = capture(&c, &incident()).await.unwrap();

    assert!(out.artifacts.is_empty());
    assert_eq!(out.gaps.len(), 2);
    assert!(
        out.gaps[0].reason.contains("UnsupportedOperation"),
        "{:?}",
        out.gaps[0]
    );
    assert!(out.gaps[1].reason.contains("no console output"));
}

#[tokio::test]
async fn throttling_is_retried_and_a_missing_instance_is_not_a_gap() {
    let head = mock!(aws_sdk_s3::Client::head_object).then_http_response(not_found);
    let throttled = mock!(aws_sdk_ec2::Client::get_console_screenshot)
        .then_http_response(ec2_error(503, "RequestLimitExceeded"));
    let err = capture(&clients(&[&throttled], &[&head]), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "Transient");

    let missing = mock!(aws_sdk_ec2::Client::get_console_screenshot)
        .then_http_response(ec2_error(400, "InvalidInstanceID.NotFound"));
    let err = capture(&clients(&[&missing], &[&head]), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "InstanceNotFound");
}

#[tokio::test]
async fn a_rerun_keeps_what_the_first_run_captured() {
    let head = mock!(aws_sdk_s3::Client::head_object).then_output(|| {
        HeadObjectOutput::builder()
            .metadata("sha256", "aa")
            .metadata("step", "screenshot")
            .content_length(3)
            .build()
    });
    let shot = mock!(aws_sdk_ec2::Client::get_console_screenshot)
        .then_output(|| GetConsoleScreenshotOutput::builder().build());
    let c = clients(&[&shot], &[&head]);

    let out = capture(&c, &incident()).await.unwrap();

    assert_eq!(out.artifacts.len(), 2);
    assert_eq!(shot.num_calls(), 0, "no new screenshot taken");
}
