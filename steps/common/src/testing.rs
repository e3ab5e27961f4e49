//! Canned AWS error responses for unit tests, in each protocol's wire format, so that tests go
//! through the SDK's real error parsing (and so our classification sees real error codes).

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

fn response(status: u16, body: String) -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(status).expect("valid status"),
        SdkBody::from(body),
    )
}

/// EC2 (query protocol, EC2 flavour): `<Response><Errors><Error>`.
pub fn ec2_error(
    status: u16,
    code: &'static str,
) -> impl Fn() -> HttpResponse + Send + Sync + 'static {
    move || {
        response(
            status,
            format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>{code} (test)</Message></Error></Errors><RequestID>r</RequestID></Response>"
            ),
        )
    }
}

/// IAM, SNS, Auto Scaling, ELBv2 (AWS query protocol): `<ErrorResponse><Error>`.
pub fn query_error(
    status: u16,
    code: &'static str,
) -> impl Fn() -> HttpResponse + Send + Sync + 'static {
    move || {
        response(
            status,
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{code} (test)</Message></Error><RequestId>r</RequestId></ErrorResponse>"
            ),
        )
    }
}

/// SSM (AWS JSON 1.1): `{"__type": code}`.
pub fn json_error(
    status: u16,
    code: &'static str,
) -> impl Fn() -> HttpResponse + Send + Sync + 'static {
    move || {
        response(
            status,
            format!("{{\"__type\":\"{code}\",\"message\":\"{code} (test)\"}}"),
        )
    }
}

/// S3 (REST XML): `<Error><Code>`.
pub fn s3_error(
    status: u16,
    code: &'static str,
) -> impl Fn() -> HttpResponse + Send + Sync + 'static {
    move || {
        response(
            status,
            format!("<Error><Code>{code}</Code><Message>{code} (test)</Message></Error>"),
        )
    }
}
