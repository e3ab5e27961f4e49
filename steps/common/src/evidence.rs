//! The evidence writer: every artifact goes to `<incident_id>/<instance_id>/<name>` in the evidence
//! bucket, once, with its SHA-256.
//!
//! Writes are conditional on the key not existing (`If-None-Match: *`,
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>), so evidence is
//! never overwritten. A retry that finds the object already there with the same SHA-256 is a
//! success; a different hash is `EvidenceConflict`, because two different artifacts under one name
//! is something a responder must look at. S3 verifies the body against `x-amz-checksum-sha256`
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>), and a
//! bucket with Object Lock requires such a checksum on every put; a default retention of the
//! bucket applies to each new object without anything said here.
//!
//! "Same bytes" is decided only from the checksum S3 itself stores and verified at upload
//! (`ChecksumSHA256`, returned by HeadObject with `x-amz-checksum-mode: ENABLED`;
//! <https://docs.aws.amazon.com/AmazonS3/API/API_HeadObject.html>), never from the user metadata
//! `x-amz-meta-sha256`, which any writer sets to anything. An object without a SHA-256 checksum
//! (not written by this writer) is never "the same" as ours. The metadata is still written, for
//! people reading the bucket with a plain HeadObject.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StepError;
use crate::incident::Incident;
use crate::timeline::now;

/// The user metadata key that carries the hex SHA-256, readable with a plain HeadObject.
const SHA256_METADATA: &str = "sha256";

/// An artifact written to (or found in) the evidence bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub key: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the object's bytes.
    pub sha256: String,
    pub step: String,
    pub written_at: String,
}

#[derive(Debug, Clone)]
pub struct EvidenceWriter {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl EvidenceWriter {
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        EvidenceWriter {
            s3,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Writes `body` as `<incident_id>/<instance_id>/<name>` unless the same bytes are already there.
    #[tracing::instrument(skip(self, body), fields(bucket = %self.bucket, size = body.len()))]
    pub async fn put(
        &self,
        incident: &Incident,
        step: &str,
        name: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Artifact, StepError> {
        let key = format!("{}{}", incident.evidence_prefix(), name);
        let digest = Sha256::digest(&body);
        let sha256 = hex(&digest);
        let size = body.len() as u64;
        let result = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .if_none_match("*")
            // Names the algorithm as well as the value: S3 requires a checksum on every put to a
            // bucket with Object Lock.
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .checksum_sha256(aws_smithy_types::base64::encode(digest))
            .metadata(SHA256_METADATA, &sha256)
            .metadata("incident-id", &incident.incident_id)
            .metadata("instance-id", &incident.instance_id)
            .metadata("step", step)
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::info!(%key, %sha256, "evidence written");
                Ok(Artifact {
                    key,
                    size,
                    sha256,
                    step: step.to_owned(),
                    written_at: now(),
                })
            }
            // 412: the key exists. Same bytes: a retry of a write that succeeded. Else: conflict.
            Err(err) if err.code() == Some("PreconditionFailed") => {
                let existing = self.existing_sha256(&key).await?;
                if existing == sha256 {
                    tracing::info!(%key, %sha256, "evidence already written by an earlier attempt");
                    Ok(Artifact {
                        key,
                        size,
                        sha256,
                        step: step.to_owned(),
                        written_at: now(),
                    })
                } else {
                    Err(StepError::EvidenceConflict {
                        key,
                        existing,
                        attempted: sha256,
                    })
                }
            }
            Err(err) => Err(StepError::aws("PutObject", err)),
        }
    }

    /// The artifact already stored under `name` for this incident, if any: an earlier attempt or
    /// execution captured it, and evidence is never replaced.
    pub async fn existing(
        &self,
        incident: &Incident,
        name: &str,
    ) -> Result<Option<Artifact>, StepError> {
        let key = format!("{}{}", incident.evidence_prefix(), name);
        let head = match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(head) => head,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
                return Ok(None)
            }
            Err(err) => return Err(StepError::aws("HeadObject", err)),
        };
        let sha256 = s3_sha256(head.checksum_sha256());
        Ok(Some(Artifact {
            key,
            size: head.content_length().unwrap_or_default().max(0) as u64,
            sha256,
            step: head
                .metadata()
                .and_then(|m| m.get("step"))
                .cloned()
                .unwrap_or_default(),
            written_at: head
                .last_modified()
                .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                .unwrap_or_default(),
        }))
    }

    /// The bytes stored under `name` for this incident, if any.
    pub async fn get(&self, incident: &Incident, name: &str) -> Result<Option<Vec<u8>>, StepError> {
        let key = format!("{}{}", incident.evidence_prefix(), name);
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StepError::body_read("GetObject", e))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(err) => Err(StepError::aws("GetObject", err)),
        }
    }

    /// The SHA-256 S3 stores for an existing object (never the user metadata).
    async fn existing_sha256(&self, key: &str) -> Result<String, StepError> {
        let head = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| StepError::aws("HeadObject", e))?;
        Ok(s3_sha256(head.checksum_sha256()))
    }
}

/// Hex of S3's base64 `ChecksumSHA256`. A full-object SHA-256 of a single-part upload is the
/// digest of the bytes; a multipart upload's composite checksum carries a `-<parts>` suffix
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>), which
/// does not decode and so never equals a digest: such an object, or one with no SHA-256 checksum,
/// is `unknown`, never "the same bytes".
fn s3_sha256(checksum: Option<&str>) -> String {
    checksum
        .and_then(|b64| aws_smithy_types::base64::decode(b64).ok())
        .filter(|raw| raw.len() == 32)
        .map(|raw| hex(&raw))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::head_object::HeadObjectOutput;
    use aws_sdk_s3::operation::put_object::PutObjectOutput;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    fn incident() -> Incident {
        Incident::from_value(
            serde_json::json!({"incident_id": "IR-7", "instance_id": "i-01234567"}),
        )
        .unwrap()
    }

    const HELLO_SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_B64: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

    fn precondition_failed() -> HttpResponse {
        HttpResponse::new(
            StatusCode::try_from(412).unwrap(),
            SdkBody::from(
                "<?xml version=\"1.0\"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>",
            ),
        )
    }

    #[tokio::test]
    async fn writes_once_under_the_incident_prefix_with_its_hash() {
        let put = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|r| {
                r.bucket() == Some("evidence")
                    && r.key() == Some("IR-7/i-01234567/metadata.json")
                    && r.if_none_match() == Some("*")
                    && r.checksum_sha256() == Some("LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=")
                    && r.metadata()
                        .and_then(|m| m.get("sha256"))
                        .map(String::as_str)
                        == Some(HELLO_SHA)
            })
            .then_output(|| PutObjectOutput::builder().build());
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put]);
        let w = EvidenceWriter::new(s3, "evidence");
        let a = w
            .put(
                &incident(),
                "metadata",
                "metadata.json",
                "application/json",
                b"hello".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(put.num_calls(), 1);
        assert_eq!(a.key, "IR-7/i-01234567/metadata.json");
        assert_eq!(a.sha256, HELLO_SHA);
        assert_eq!(a.size, 5);
        assert_eq!(a.step, "metadata");
    }

    #[tokio::test]
    async fn a_retry_that_finds_the_same_bytes_succeeds() {
        let put = mock!(aws_sdk_s3::Client::put_object).then_http_response(precondition_failed);
        let head = mock!(aws_sdk_s3::Client::head_object)
            .match_requests(|r| {
                r.key() == Some("IR-7/i-01234567/metadata.json")
                    && r.checksum_mode() == Some(&ChecksumMode::Enabled)
            })
            .then_output(|| {
                HeadObjectOutput::builder()
                    .checksum_sha256(HELLO_B64)
                    .build()
            });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put, &head]);
        let w = EvidenceWriter::new(s3, "evidence");
        let a = w
            .put(
                &incident(),
                "metadata",
                "metadata.json",
                "application/json",
                b"hello".to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(a.sha256, HELLO_SHA);
        assert_eq!(head.num_calls(), 1);
    }

    #[tokio::test]
    async fn different_bytes_under_the_same_name_are_a_conflict() {
        let put = mock!(aws_sdk_s3::Client::put_object).then_http_response(precondition_failed);
        let head = mock!(aws_sdk_s3::Client::head_object).then_output(|| {
            HeadObjectOutput::builder()
                .checksum_sha256(aws_smithy_types::base64::encode([0u8; 32]))
                .build()
        });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put, &head]);
        let w = EvidenceWriter::new(s3, "evidence");
        let err = w
            .put(
                &incident(),
                "metadata",
                "metadata.json",
                "application/json",
                b"hello".to_vec(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.name(), "EvidenceConflict");
        assert!(err.to_string().contains(&"00".repeat(32)));
    }

    #[tokio::test]
    async fn a_forged_metadata_sha256_over_different_bytes_is_a_conflict() {
        // Someone else wrote other bytes and set x-amz-meta-sha256 to our digest: S3's own
        // checksum is what counts.
        let put = mock!(aws_sdk_s3::Client::put_object).then_http_response(precondition_failed);
        let head = mock!(aws_sdk_s3::Client::head_object)
            .match_requests(|r| r.checksum_mode() == Some(&ChecksumMode::Enabled))
            .then_output(|| {
                HeadObjectOutput::builder()
                    .metadata("sha256", HELLO_SHA)
                    .checksum_sha256(aws_smithy_types::base64::encode(Sha256::digest(b"evil")))
                    .build()
            });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put, &head]);
        let err = EvidenceWriter::new(s3, "evidence")
            .put(
                &incident(),
                "metadata",
                "metadata.json",
                "application/json",
                b"hello".to_vec(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.name(), "EvidenceConflict");
        assert!(err.to_string().contains(&sha256_hex(b"evil")));
    }

    #[tokio::test]
    async fn no_s3_checksum_is_never_the_same_bytes_whatever_the_metadata_says() {
        let put = mock!(aws_sdk_s3::Client::put_object).then_http_response(precondition_failed);
        let head = mock!(aws_sdk_s3::Client::head_object).then_output(|| {
            HeadObjectOutput::builder()
                .metadata("sha256", HELLO_SHA)
                .build()
        });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put, &head]);
        let err = EvidenceWriter::new(s3, "evidence")
            .put(
                &incident(),
                "metadata",
                "metadata.json",
                "application/json",
                b"hello".to_vec(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.name(), "EvidenceConflict");
        assert!(err.to_string().contains("unknown"));
    }

    #[tokio::test]
    async fn an_existing_artifact_reports_s3s_checksum_not_the_metadata() {
        let head = mock!(aws_sdk_s3::Client::head_object)
            .match_requests(|r| r.checksum_mode() == Some(&ChecksumMode::Enabled))
            .then_output(|| {
                HeadObjectOutput::builder()
                    .metadata("sha256", "forged")
                    .metadata("step", "metadata")
                    .checksum_sha256(HELLO_B64)
                    .content_length(5)
                    .build()
            });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&head]);
        let a = EvidenceWriter::new(s3, "evidence")
            .existing(&incident(), "metadata.json")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.sha256, HELLO_SHA);
        assert_eq!(a.size, 5);
    }

    #[tokio::test]
    async fn throttling_is_transient_and_denial_is_final() {
        let slow = mock!(aws_sdk_s3::Client::put_object).then_http_response(|| {
            HttpResponse::new(
                StatusCode::try_from(503).unwrap(),
                SdkBody::from("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
            )
        });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&slow], |c| c
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
        let err = EvidenceWriter::new(s3, "evidence")
            .put(
                &incident(),
                "metadata",
                "m.json",
                "application/json",
                b"x".to_vec(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.name(), "Transient");
        assert_eq!(err.aws_code(), Some("SlowDown"));

        let denied = mock!(aws_sdk_s3::Client::put_object).then_http_response(|| {
            HttpResponse::new(
                StatusCode::try_from(403).unwrap(),
                SdkBody::from(
                    "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
                ),
            )
        });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&denied]);
        let err = EvidenceWriter::new(s3, "evidence")
            .put(
                &incident(),
                "metadata",
                "m.json",
                "application/json",
                b"x".to_vec(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.name(), "AccessDenied");
    }
}
