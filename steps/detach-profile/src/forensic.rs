//! Revocation of the forensic role's sessions on one instance, once its collection has ended.
//!
//! The forensic role is shared by every incident, so its sessions cannot be revoked role-wide
//! while another collection may be running. Each instance gets its own inline policy,
//! `cordon-forensic-<instance-id>`, denying everything to sessions issued to that instance
//! (`ec2:SourceInstanceARN`) before the collection ended (`aws:TokenIssueTime`): a later incident
//! on the same instance gets new sessions, which the cut-off does not reach
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-ec2-sourceinstancearn>,
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-tokenissuetime>).
//! One policy name per instance means no read-modify-write race between incidents.
//!
//! **The quota.** The role's inline policies share 10,240 characters (IAM quotas page); one such
//! policy is about 300. A policy whose cut-off is more than [`EXPIRED_AFTER`] old denies only
//! sessions that have expired anyway (no role session lasts longer than 12 hours, "maximum
//! session duration ... up to 12 hours",
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_update-role-settings.html>; the
//! README lists the lifetime of instance-profile credentials as not verified), so each
//! revocation first deletes those. When the quota is still full, the revocation is a recorded gap:
//! the forensic role can only take Run Command for that instance, and its metadata endpoint is
//! off.

use aws_smithy_types::date_time::{DateTime, Format};
use cordon_common::StepError;
use serde_json::{json, Value};

use crate::revoke::url_decode;

pub const PREFIX: &str = "cordon-forensic-";
/// After this many seconds a cut-off denies only expired sessions.
pub const EXPIRED_AFTER: i64 = 12 * 3600 + 3600;

pub fn document(instance_arn: &str, cut_off: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "CordonRevokeForensicSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"ec2:SourceInstanceARN": instance_arn},
                "DateLessThan": {"aws:TokenIssueTime": cut_off}
            }
        }]
    })
}

fn cut_off_of(document: &str) -> Option<i64> {
    let doc: Value = serde_json::from_str(document).ok()?;
    let t = doc["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str()?;
    DateTime::from_str(t, Format::DateTime)
        .ok()
        .map(|d| d.secs())
}

/// What happened to the forensic sessions of this instance.
pub struct Outcome {
    pub policy_name: String,
    pub pruned: Vec<String>,
    /// Why they could not be revoked (quota), if so.
    pub gap: Option<String>,
}

pub async fn revoke(
    iam: &aws_sdk_iam::Client,
    role: &str,
    instance_id: &str,
    instance_arn: &str,
    cut_off: &str,
    now: i64,
) -> Result<Outcome, StepError> {
    let name = format!("{PREFIX}{instance_id}");
    let mut pruned = Vec::new();
    let names = iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(|e| StepError::aws("ListRolePolicies", e))?
        .policy_names;
    for other in names
        .iter()
        .filter(|n| n.starts_with(PREFIX) && **n != name)
    {
        let document = match iam
            .get_role_policy()
            .role_name(role)
            .policy_name(other)
            .send()
            .await
        {
            Ok(p) => url_decode(p.policy_document()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                continue
            }
            Err(e) => return Err(StepError::aws("GetRolePolicy", e)),
        };
        if cut_off_of(&document).is_some_and(|t| now - t > EXPIRED_AFTER) {
            match iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(other)
                .send()
                .await
            {
                Ok(_) => pruned.push(other.clone()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_no_such_entity_exception()) => {}
                Err(e) => return Err(StepError::aws("DeleteRolePolicy", e)),
            }
        }
    }
    match iam
        .put_role_policy()
        .role_name(role)
        .policy_name(&name)
        .policy_document(document(instance_arn, cut_off).to_string())
        .send()
        .await
    {
        Ok(_) => Ok(Outcome {
            policy_name: name,
            pruned,
            gap: None,
        }),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_limit_exceeded_exception()) =>
        {
            Ok(Outcome {
                gap: Some(format!(
                    "the forensic role {role}'s inline policies are full, so its sessions on {instance_id} were not revoked: they can still take Run Command for that instance until they expire (no S3, no parameters); the forensic profile is removed and the metadata endpoint is turned off"
                )),
                policy_name: name,
                pruned,
            })
        }
        Err(e) => Err(StepError::aws("PutRolePolicy", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_off_is_read_back_from_the_document() {
        let d = document(
            "arn:aws:ec2:eu-west-1:1:instance/i-1",
            "2030-01-01T00:00:00Z",
        );
        assert_eq!(
            cut_off_of(&d.to_string()),
            Some(
                DateTime::from_str("2030-01-01T00:00:00Z", Format::DateTime)
                    .unwrap()
                    .secs()
            )
        );
        assert_eq!(cut_off_of("{}"), None);
    }
}
