//! The one error type of every step, and the stable names Step Functions sees.
//!
//! A step's error reaches the state machine as the `errorType` of the Lambda function error, which
//! is the name `Retry` and `Catch` match in `ErrorEquals`
//! (<https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html>).
//! [`ERROR_NAMES`] is that vocabulary; a test checks that `statemachine.asl.json` uses exactly it.
//!
//! AWS failures are classified on the error *code* the service returns
//! (`ProvideErrorMetadata::code`), never on message text: throttling and server faults are
//! `Transient` (the state machine retries them), not-found and denied are final.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use lambda_runtime::Diagnostic;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every name a step can emit, in the order of [`StepError::name`]'s match.
pub const ERROR_NAMES: &[&str] = &[
    "InvalidInput",
    "InstanceNotFound",
    "AccessDenied",
    "Transient",
    "AwsRequestFailed",
    "EvidenceConflict",
    "NotSsmManaged",
    "ContainmentNotVerified",
    "NotImplemented",
    "Misconfigured",
    "ProfileReassociated",
    "CredentialsNotRevoked",
];

/// How an AWS error is routed by the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// Throttling, a 5xx, a timeout or a connection failure: worth retrying.
    Transient,
    /// The caller lacks a permission: retrying cannot help.
    AccessDenied,
    /// The instance named in the request does not exist (or is malformed in AWS's eyes).
    InstanceNotFound,
    /// Any other service error: deterministic, not retried.
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The request is malformed; nothing was called.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// DescribeInstances found no such instance.
    #[error("instance {0} not found")]
    InstanceNotFound(String),

    /// An AWS call failed; `code` is the service's error code, kept for the responder.
    #[error("{operation} failed ({code}): {message}")]
    Aws {
        kind: AwsErrorKind,
        operation: &'static str,
        code: String,
        message: String,
        #[source]
        source: BoxError,
    },

    /// An evidence object already exists under this key with a different SHA-256.
    #[error(
        "evidence conflict: {key} exists with sha256 {existing}, this run produced {attempted}"
    )]
    EvidenceConflict {
        key: String,
        existing: String,
        attempted: String,
    },

    /// SSM collection was asked for an instance that is not managed by SSM or not online.
    #[error("instance {instance_id} is not SSM-managed and online: {reason}")]
    NotSsmManaged { instance_id: String, reason: String },

    /// The instance was quarantined but describing it again did not show the isolation.
    #[error("containment not verified: {0}")]
    ContainmentNotVerified(String),

    /// The function's configuration (its environment) is incomplete.
    #[error("misconfigured: {0}")]
    Config(String),

    /// The step exists but its behaviour has not been built yet.
    #[error("the {0} step is not implemented yet")]
    NotImplemented(&'static str),

    /// An instance profile other than Cordon's forensic one was associated with the instance
    /// after "Remove instance profile" ran: someone (or something) re-attached credentials. A
    /// containment failure, never a collection gap; the message says what was removed and revoked.
    #[error("instance profile re-associated: {0}")]
    ProfileReassociated(String),

    /// The credentials already issued to the instance profile's role could not be revoked (the
    /// role's inline policies leave no room even for role-wide revocation): a containment failure.
    #[error("credentials not revoked: {0}")]
    CredentialsNotRevoked(String),
}

impl StepError {
    /// The stable Step Functions error name of this error (one of [`ERROR_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            StepError::InvalidInput(_) => "InvalidInput",
            StepError::InstanceNotFound(_) => "InstanceNotFound",
            StepError::Aws { kind, .. } => match kind {
                AwsErrorKind::AccessDenied => "AccessDenied",
                AwsErrorKind::Transient => "Transient",
                AwsErrorKind::InstanceNotFound => "InstanceNotFound",
                AwsErrorKind::Failed => "AwsRequestFailed",
            },
            StepError::EvidenceConflict { .. } => "EvidenceConflict",
            StepError::NotSsmManaged { .. } => "NotSsmManaged",
            StepError::ContainmentNotVerified(_) => "ContainmentNotVerified",
            StepError::NotImplemented(_) => "NotImplemented",
            StepError::Config(_) => "Misconfigured",
            StepError::ProfileReassociated(_) => "ProfileReassociated",
            StepError::CredentialsNotRevoked(_) => "CredentialsNotRevoked",
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        StepError::InvalidInput(message.into())
    }

    /// Classifies a failed SDK call on its error code and HTTP status.
    pub fn aws<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (kind, code, message) = match &err {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("Unknown").to_owned();
                let message = service.err().message().unwrap_or_default().to_owned();
                let status = service.raw().status().as_u16();
                (classify(&code, status), code, message)
            }
            SdkError::TimeoutError(_) => (AwsErrorKind::Transient, "Timeout".into(), String::new()),
            SdkError::DispatchFailure(f) => (
                AwsErrorKind::Transient,
                "DispatchFailure".into(),
                format!("{f:?}"),
            ),
            SdkError::ResponseError(_) => (
                AwsErrorKind::Transient,
                "ResponseError".into(),
                "the response could not be read".into(),
            ),
            _ => (
                AwsErrorKind::Failed,
                "ConstructionFailure".into(),
                "the request could not be built".into(),
            ),
        };
        StepError::Aws {
            kind,
            operation,
            code,
            message,
            source: Box::new(err),
        }
    }

    /// A response body that broke off while being read: transient, worth retrying.
    pub fn body_read(
        operation: &'static str,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StepError::Aws {
            kind: AwsErrorKind::Transient,
            operation,
            code: "ResponseError".into(),
            message: err.to_string(),
            source: Box::new(err),
        }
    }

    /// The service error code, when this is an AWS error.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            StepError::Aws { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Error codes that mean "try again later". Sources: EC2
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>, the common
/// AWS errors <https://docs.aws.amazon.com/general/latest/gr/api-retries.html>, S3
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>.
const TRANSIENT_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "IncorrectInstanceState",
    "ConditionalRequestConflict",
];

const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "OptInRequired",
];

/// EC2 answers these for an instance ID that does not exist in this account and region.
const INSTANCE_NOT_FOUND_CODES: &[&str] =
    &["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"];

pub fn classify(code: &str, status: u16) -> AwsErrorKind {
    if TRANSIENT_CODES.contains(&code) {
        AwsErrorKind::Transient
    } else if DENIED_CODES.contains(&code) {
        AwsErrorKind::AccessDenied
    } else if INSTANCE_NOT_FOUND_CODES.contains(&code) {
        AwsErrorKind::InstanceNotFound
    } else if status >= 500 || status == 429 {
        AwsErrorKind::Transient
    } else {
        AwsErrorKind::Failed
    }
}

impl From<StepError> for Diagnostic {
    fn from(err: StepError) -> Self {
        Diagnostic {
            error_type: err.name().to_owned(),
            error_message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_faults_are_transient() {
        assert_eq!(
            classify("RequestLimitExceeded", 503),
            AwsErrorKind::Transient
        );
        assert_eq!(
            classify("ThrottlingException", 400),
            AwsErrorKind::Transient
        );
        assert_eq!(classify("SlowDown", 503), AwsErrorKind::Transient);
        assert_eq!(classify("SomethingNew", 502), AwsErrorKind::Transient);
    }

    #[test]
    fn denied_and_not_found_are_final() {
        assert_eq!(
            classify("UnauthorizedOperation", 403),
            AwsErrorKind::AccessDenied
        );
        assert_eq!(classify("AccessDenied", 403), AwsErrorKind::AccessDenied);
        assert_eq!(
            classify("InvalidInstanceID.NotFound", 400),
            AwsErrorKind::InstanceNotFound
        );
        assert_eq!(classify("InvalidParameterValue", 400), AwsErrorKind::Failed);
    }

    #[test]
    fn every_error_name_is_in_the_vocabulary() {
        let errors = [
            StepError::invalid("x"),
            StepError::InstanceNotFound("i-1".into()),
            StepError::EvidenceConflict {
                key: "k".into(),
                existing: "a".into(),
                attempted: "b".into(),
            },
            StepError::NotSsmManaged {
                instance_id: "i".into(),
                reason: "r".into(),
            },
            StepError::ContainmentNotVerified("x".into()),
            StepError::NotImplemented("x"),
            StepError::Config("x".into()),
            StepError::ProfileReassociated("x".into()),
            StepError::CredentialsNotRevoked("x".into()),
        ];
        for e in errors {
            assert!(ERROR_NAMES.contains(&e.name()), "{} missing", e.name());
        }
        for kind in [
            AwsErrorKind::Transient,
            AwsErrorKind::AccessDenied,
            AwsErrorKind::InstanceNotFound,
            AwsErrorKind::Failed,
        ] {
            let e = StepError::Aws {
                kind,
                operation: "Op",
                code: "C".into(),
                message: String::new(),
                source: "x".into(),
            };
            assert!(ERROR_NAMES.contains(&e.name()));
        }
    }

    #[test]
    fn diagnostic_carries_the_stable_name() {
        let d: Diagnostic = StepError::invalid("instance_id is required").into();
        assert_eq!(d.error_type, "InvalidInput");
        assert_eq!(d.error_message, "invalid input: instance_id is required");
    }
}
