//! The incident: what a responder asks Cordon to do, checked before any AWS call.
//!
//! The execution input is an [`IncidentRequest`]; "Validate input" turns it into an [`Incident`],
//! which every later step receives and checks again (a step can be invoked on its own, and a bad
//! request must never reach AWS). Unknown fields are rejected rather than ignored: a misspelt
//! option silently ignored is a response the responder did not ask for.

use serde::{Deserialize, Serialize};

use crate::error::StepError;

/// `reason` is free text for people; 1,024 characters is enough for a ticket summary.
pub const MAX_REASON_CHARS: usize = 1024;
/// `requested_by` is an identity (a user, a role ARN, "guardduty"); IAM ARNs stay under 2,048.
pub const MAX_REQUESTED_BY_CHARS: usize = 2048;

/// The execution input, as the responder (or the API) sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentRequest {
    pub instance_id: String,
    #[serde(default)]
    pub incident_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
    #[serde(default)]
    pub options: Options,
}

/// Choices a responder can make per incident; every field has the safe default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Run OS-level collection over SSM when the instance is SSM-managed.
    pub collect: bool,
    /// Capture memory with AVML during collection, when the tool is on the host.
    pub memory: bool,
    /// How credentials already issued to the instance profile are revoked.
    pub revoke_sessions: RevokeSessions,
    /// Which network controls isolate the instance: security groups only, or security groups
    /// plus network ACL deny rules for the instance's addresses (stateless, so they also cut
    /// flows that security groups track automatically whatever their rules say).
    pub network: NetworkIsolation,
    /// Stop the instance once the evidence and the collection are done (hibernate when the
    /// instance was launched with hibernation configured). Never terminate.
    pub stop_after_evidence: bool,
    /// How the SSM agent reaches Systems Manager and S3 while the instance is isolated
    /// ([`CollectionNetwork`]).
    pub collection_network: CollectionNetwork,
    /// The collection budget in seconds, from which every collection timeout is derived
    /// ([`crate::collection::Budget`]). Absent in a request: the deployment's default, which
    /// "Validate input" writes here, so every later step reads the same value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection_budget_seconds: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            collect: true,
            memory: false,
            revoke_sessions: RevokeSessions::Instance,
            network: NetworkIsolation::SgNacl,
            stop_after_evidence: false,
            collection_network: CollectionNetwork::Endpoints,
            collection_budget_seconds: None,
        }
    }
}

/// The network path the SSM agent gets while the collection runs inside containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollectionNetwork {
    /// TCP 443 to the VPC's interface endpoints for ssm, ssmmessages and ec2messages and to S3
    /// (gateway endpoint prefix list or interface endpoint), nothing else. Without those
    /// endpoints there is no collection (a gap) and containment stays complete.
    Endpoints,
    /// TCP 443 to anywhere while the collection runs: an explicit, recorded opt-in.
    #[serde(rename = "internet-443")]
    Internet443,
    /// The article's order, collection before containment. Not available in this version:
    /// refused by validation with a named error rather than silently run in another order.
    BeforeContainment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkIsolation {
    /// Security groups only: the isolation group on every interface.
    #[serde(rename = "sg")]
    Sg,
    /// Security groups plus network ACL deny rules for the instance's private addresses.
    #[serde(rename = "sg+nacl")]
    SgNacl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeSessions {
    /// Deny the role's actions when called with this instance's credentials only
    /// (`ec2:SourceInstanceARN`); other instances sharing the role keep working.
    Instance,
    /// Deny every session of the role issued before now (`aws:TokenIssueTime`).
    Role,
    /// Leave issued credentials alone.
    None,
}

/// A validated incident: what every step after "Validate input" receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    pub incident_id: String,
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(default)]
    pub options: Options,
}

impl Incident {
    /// Parses and validates the raw execution input; `execution_name` is the incident ID when the
    /// request names none.
    pub fn from_request(raw: serde_json::Value, execution_name: &str) -> Result<Self, StepError> {
        if !raw.is_object() {
            return Err(StepError::invalid(format!(
                "the request must be a JSON object, got {}",
                json_kind(&raw)
            )));
        }
        let request: IncidentRequest =
            serde_json::from_value(raw).map_err(|e| StepError::invalid(e.to_string()))?;
        let incident_id = match request.incident_id {
            Some(id) => id,
            None => execution_name.to_owned(),
        };
        let incident = Incident {
            incident_id,
            instance_id: request.instance_id,
            reason: request.reason,
            requested_by: request.requested_by,
            options: request.options,
        };
        incident.validate()?;
        Ok(incident)
    }

    /// Parses an already validated incident (as later steps receive it) and checks it again.
    pub fn from_value(raw: serde_json::Value) -> Result<Self, StepError> {
        let incident: Incident = serde_json::from_value(raw)
            .map_err(|e| StepError::invalid(format!("incident: {e}")))?;
        incident.validate()?;
        Ok(incident)
    }

    pub fn validate(&self) -> Result<(), StepError> {
        if !is_instance_id(&self.instance_id) {
            return Err(StepError::invalid(format!(
                "instance_id {:?} is not an EC2 instance ID (i- and 8 or 17 lower-case hex digits)",
                truncate(&self.instance_id, 40)
            )));
        }
        if !is_incident_id(&self.incident_id) {
            return Err(StepError::invalid(format!(
                "incident_id {:?} must be 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit",
                truncate(&self.incident_id, 100)
            )));
        }
        check_text("reason", self.reason.as_deref(), MAX_REASON_CHARS)?;
        if self.options.collection_network == CollectionNetwork::BeforeContainment {
            return Err(StepError::invalid(
                "options.collection_network \"before-containment\" (collect first, contain after) is not available in this version; use \"endpoints\" (the default) or \"internet-443\"",
            ));
        }
        if let Some(b) = self.options.collection_budget_seconds {
            if !(crate::collection::MIN_BUDGET_SECONDS..=crate::collection::MAX_BUDGET_SECONDS)
                .contains(&b)
            {
                return Err(StepError::invalid(format!(
                    "options.collection_budget_seconds {b} is outside {}..={}",
                    crate::collection::MIN_BUDGET_SECONDS,
                    crate::collection::MAX_BUDGET_SECONDS
                )));
            }
        }
        check_text(
            "requested_by",
            self.requested_by.as_deref(),
            MAX_REQUESTED_BY_CHARS,
        )?;
        Ok(())
    }

    /// Where this incident's evidence lives in the bucket: `<incident_id>/<instance_id>/`.
    pub fn evidence_prefix(&self) -> String {
        format!("{}/{}/", self.incident_id, self.instance_id)
    }
}

/// `^i-[0-9a-f]{8}([0-9a-f]{9})?$`: EC2 instance IDs are 8 (older) or 17 hex digits.
pub fn is_instance_id(s: &str) -> bool {
    match s.strip_prefix("i-") {
        Some(hex) => {
            (hex.len() == 8 || hex.len() == 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$`: safe as an S3 key segment, an execution name and a tag.
pub fn is_incident_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    s.len() <= 80 && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Free text goes into notifications and tags: bounded, and no control characters but line
/// breaks and tabs (a terminal escape in a notification is an attack on the responder).
fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<(), StepError> {
    let Some(value) = value else { return Ok(()) };
    let chars = value.chars().count();
    if chars > max {
        return Err(StepError::invalid(format!(
            "{field} has {chars} characters; at most {max} are allowed"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(StepError::invalid(format!(
            "{field} contains the control character U+{:04X}",
            c as u32
        )));
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Incident, StepError> {
        Incident::from_request(v, "exec-1")
    }

    fn assert_invalid(v: serde_json::Value, needle: &str) {
        match parse(v.clone()) {
            Err(StepError::InvalidInput(msg)) => {
                assert!(msg.contains(needle), "{v}: {msg:?} lacks {needle:?}")
            }
            other => panic!("{v}: expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_minimal_request_and_names_the_incident_after_the_execution() {
        let i = parse(json!({"instance_id": "i-0123456789abcdef0"})).unwrap();
        assert_eq!(i.incident_id, "exec-1");
        assert_eq!(i.instance_id, "i-0123456789abcdef0");
        assert_eq!(i.options, Options::default());
        assert_eq!(i.evidence_prefix(), "exec-1/i-0123456789abcdef0/");
    }

    #[test]
    fn accepts_every_documented_field() {
        let i = parse(json!({
            "instance_id": "i-01234567",
            "incident_id": "IR-2026.11_29",
            "reason": "GuardDuty: CryptoCurrency:EC2/BitcoinTool.B!DNS\nsee ticket",
            "requested_by": "arn:aws:iam::123456789012:user/alice",
            "options": {"collect": false, "memory": true, "revoke_sessions": "role",
                        "network": "sg", "stop_after_evidence": true}
        }))
        .unwrap();
        assert_eq!(i.incident_id, "IR-2026.11_29");
        assert_eq!(i.options.network, NetworkIsolation::Sg);
        assert!(i.options.stop_after_evidence);
        assert!(!i.options.collect);
        assert!(i.options.memory);
        assert_eq!(i.options.revoke_sessions, RevokeSessions::Role);
    }

    #[test]
    fn rejects_a_missing_or_malformed_instance_id() {
        assert_invalid(json!({}), "missing field `instance_id`");
        assert_invalid(json!({"instance_id": ""}), "not an EC2 instance ID");
        assert_invalid(json!({"instance_id": "i-0123"}), "not an EC2 instance ID");
        assert_invalid(
            json!({"instance_id": "i-0123456789ABCDEF0"}),
            "not an EC2 instance ID",
        );
        assert_invalid(
            json!({"instance_id": "vol-0123456789abcdef0"}),
            "not an EC2 instance ID",
        );
        assert_invalid(
            json!({"instance_id": "i-0123456789abcdef0 "}),
            "not an EC2 instance ID",
        );
        assert_invalid(
            json!({"instance_id": "i-012345678"}),
            "not an EC2 instance ID",
        );
    }

    #[test]
    fn rejects_wrong_types_and_unknown_fields() {
        assert_invalid(json!({"instance_id": 42}), "invalid type");
        assert_invalid(
            json!({"instance_id": "i-01234567", "reason": ["x"]}),
            "invalid type",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "instanceId": "x"}),
            "unknown field",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "options": {"memroy": true}}),
            "unknown field",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "options": {"revoke_sessions": "all"}}),
            "unknown variant",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "options": {"network": "nacl"}}),
            "unknown variant",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "options": {"stop_after_evidence": "yes"}}),
            "invalid type",
        );
        assert_invalid(json!("i-01234567"), "must be a JSON object");
        assert_invalid(json!(null), "must be a JSON object");
    }

    #[test]
    fn rejects_a_malformed_incident_id() {
        assert_invalid(
            json!({"instance_id": "i-01234567", "incident_id": ""}),
            "incident_id",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "incident_id": "-x"}),
            "incident_id",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "incident_id": "a/b"}),
            "incident_id",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "incident_id": "a".repeat(81)}),
            "incident_id",
        );
        assert!(parse(json!({"instance_id": "i-01234567", "incident_id": "a".repeat(80)})).is_ok());
        // An execution name that is not a valid incident ID is refused too.
        assert!(matches!(
            Incident::from_request(json!({"instance_id": "i-01234567"}), "bad name!"),
            Err(StepError::InvalidInput(_))
        ));
    }

    #[test]
    fn bounds_free_text() {
        assert!(parse(json!({"instance_id": "i-01234567", "reason": "é".repeat(1024)})).is_ok());
        assert_invalid(
            json!({"instance_id": "i-01234567", "reason": "x".repeat(1025)}),
            "at most 1024",
        );
        assert_invalid(
            json!({"instance_id": "i-01234567", "requested_by": "bob\u{1b}[2J"}),
            "control character U+001B",
        );
    }

    #[test]
    fn later_steps_revalidate_the_incident() {
        let ok = json!({"incident_id": "IR-1", "instance_id": "i-01234567"});
        assert!(Incident::from_value(ok).is_ok());
        let bad = json!({"incident_id": "IR-1", "instance_id": "i-xyz"});
        assert!(matches!(
            Incident::from_value(bad),
            Err(StepError::InvalidInput(_))
        ));
        let missing = json!({"instance_id": "i-01234567"});
        assert!(matches!(
            Incident::from_value(missing),
            Err(StepError::InvalidInput(_))
        ));
    }
}
