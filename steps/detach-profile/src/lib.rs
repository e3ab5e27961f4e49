//! Step 5, detach-profile, with an action chosen by the state machine:
//! - `remove`: disassociates the instance profile (recording its ARN), then revokes the
//!   credentials already issued to the instance, because removing a profile does not invalidate
//!   them: they stay valid until they expire
//!   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html>).
//!   `revoke_sessions = instance` (default) puts an inline deny-all policy on the profile's role,
//!   conditioned on `ec2:SourceInstanceARN` = this instance, so other instances sharing the role
//!   keep working (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-ec2-sourceinstancearn>);
//!   `role` denies every session of the role issued before now (`aws:TokenIssueTime`), what the
//!   console's "Revoke active sessions" does; `none` leaves them.
//! - `attach-forensic`: associates the reduced-privilege forensic instance profile and waits until
//!   the association is `associated`.
//! - `remove-forensic`: disassociates it again.
//!
//! Every action reads the current association first and changes only what differs, so reruns
//! converge. The role policy names are fixed per instance (or per incident for `role`), so a rerun
//! finds its own policy instead of adding another.

use std::time::Duration;

use aws_sdk_ec2::types::{IamInstanceProfileAssociation, IamInstanceProfileSpecification};
use cordon_common::incident::RevokeSessions;
use cordon_common::lookup::filter;
use cordon_common::timeline::{now, Timeline};
use cordon_common::{lambda, Action, Gap, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const STEP: &str = "detach-profile";

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
}

pub struct Config {
    pub forensic_profile_arn: String,
    /// The region of the instances (the function's own): part of the instance ARN.
    pub region: String,
    pub association_polls: u32,
    pub association_poll_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    Remove {
        incident: Value,
        /// The profile associated before the response (from "Record metadata"), so that a rerun
        /// after the profile is gone still revokes the right role's sessions.
        #[serde(default)]
        profile_arn: Option<String>,
    },
    AttachForensic {
        incident: Value,
    },
    RemoveForensic {
        incident: Value,
    },
}

#[derive(Debug, Default, Serialize)]
pub struct Output {
    /// The profile that was (or had been) removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_profile_arn: Option<String>,
    /// The role whose issued credentials were revoked, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
    pub actions: Vec<Action>,
    pub gaps: Vec<Gap>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Revocation {
    pub role_name: String,
    pub policy_name: String,
    pub scope: RevokeSessions,
}

pub async fn handle(clients: &Clients, config: &Config, event: Value) -> Result<Output, StepError> {
    match lambda::parse::<Event>(event)? {
        Event::Remove {
            incident,
            profile_arn,
        } => {
            let incident = Incident::from_value(incident)?;
            if let Some(arn) = &profile_arn {
                profile_name(arn)?;
            }
            remove(clients, config, &incident, profile_arn).await
        }
        Event::AttachForensic { incident } => {
            attach_forensic(clients, config, &Incident::from_value(incident)?).await
        }
        Event::RemoveForensic { incident } => {
            remove_forensic(clients, config, &Incident::from_value(incident)?).await
        }
    }
}

/// Associations of the instance that are in effect or becoming so.
async fn current_associations(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
) -> Result<Vec<IamInstanceProfileAssociation>, StepError> {
    let out = ec2
        .describe_iam_instance_profile_associations()
        .filters(filter("instance-id", instance_id))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeIamInstanceProfileAssociations", e))?;
    Ok(out
        .iam_instance_profile_associations()
        .iter()
        .filter(|a| {
            matches!(
                a.state().map(|s| s.as_str()),
                Some("associated") | Some("associating")
            )
        })
        .cloned()
        .collect())
}

fn association_arn(a: &IamInstanceProfileAssociation) -> Option<&str> {
    a.iam_instance_profile().and_then(|p| p.arn())
}

async fn disassociate(
    clients: &Clients,
    timeline: &mut Timeline,
    action: &str,
    instance_id: &str,
    association: &IamInstanceProfileAssociation,
) -> Result<(), StepError> {
    let arn = association_arn(association).unwrap_or_default().to_owned();
    let association_id = association.association_id().unwrap_or_default();
    timeline.intend(action, instance_id, &json!(arn), &json!(null));
    match clients
        .ec2
        .disassociate_iam_instance_profile()
        .association_id(association_id)
        .send()
        .await
    {
        Ok(_) => {}
        // Gone between the describe and the call (a concurrent attempt): the goal is reached.
        Err(e)
            if e.as_service_error().and_then(|s| s.meta().code())
                == Some("InvalidAssociationID.NotFound") => {}
        Err(e) => return Err(StepError::aws("DisassociateIamInstanceProfile", e)),
    }
    timeline.record(action, instance_id, json!(arn), json!(null));
    Ok(())
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn remove(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
    pre_incident_profile: Option<String>,
) -> Result<Output, StepError> {
    const REMOVE: &str = "remove instance profile";
    let id = incident.instance_id.as_str();
    let mut timeline = Timeline::new(STEP);
    let mut out = Output::default();

    let mut removed = None;
    for association in current_associations(&clients.ec2, id).await? {
        let arn = association_arn(&association).map(str::to_owned);
        if arn.as_deref() == Some(config.forensic_profile_arn.as_str()) {
            continue; // the forensic profile is removed by its own action
        }
        disassociate(clients, &mut timeline, REMOVE, id, &association).await?;
        removed = arn;
    }
    if removed.is_none() {
        // Nothing associated now: removed by an earlier attempt, or there never was one.
        timeline.record(REMOVE, id, json!(null), json!(null));
    }
    let profile_arn = removed.or(pre_incident_profile);
    out.removed_profile_arn = profile_arn.clone();

    let Some(profile_arn) = profile_arn else {
        out.actions = timeline.into_actions();
        return Ok(out); // no profile, no credentials to revoke
    };
    if incident.options.revoke_sessions == RevokeSessions::None {
        out.gaps.push(Gap::new(
            STEP,
            "revocation of issued credentials",
            "skipped at the responder's request (revoke_sessions = none): credentials issued to the instance stay valid until they expire",
        ));
        out.actions = timeline.into_actions();
        return Ok(out);
    }

    let roles = clients
        .iam
        .get_instance_profile()
        .instance_profile_name(profile_name(&profile_arn)?)
        .send()
        .await
        .map_err(|e| StepError::aws("GetInstanceProfile", e))?
        .instance_profile
        .map(|p| p.roles)
        .unwrap_or_default();
    let Some(role) = roles.first() else {
        out.gaps.push(Gap::new(
            STEP,
            "revocation of issued credentials",
            format!("{profile_arn} has no role"),
        ));
        out.actions = timeline.into_actions();
        return Ok(out);
    };
    let role_name = role.role_name().to_owned();
    let partition_account = arn_partition_account(&profile_arn)?;
    let (policy_name, document) = match incident.options.revoke_sessions {
        RevokeSessions::Role => (
            format!("cordon-revoke-sessions-{}", incident.incident_id),
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "CordonRevokeOlderSessions",
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"DateLessThan": {"aws:TokenIssueTime": now()}}
                }]
            }),
        ),
        _ => (
            format!("cordon-revoke-{id}"),
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "CordonRevokeInstanceCredentials",
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"ec2:SourceInstanceARN": format!(
                        "arn:{}:ec2:{}:{}:instance/{id}", partition_account.0, config.region, partition_account.1
                    )}}
                }]
            }),
        ),
    };

    const REVOKE: &str = "revoke issued credentials";
    let existing = match clients
        .iam
        .get_role_policy()
        .role_name(&role_name)
        .policy_name(&policy_name)
        .send()
        .await
    {
        Ok(p) => Some(p.policy_document().to_owned()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            None
        }
        Err(e) => return Err(StepError::aws("GetRolePolicy", e)),
    };
    let target = format!("role/{role_name}");
    if let Some(existing) = existing {
        // Already in place (an earlier attempt): keep it; for `role` its cut-off time stays the first one.
        timeline.record(REVOKE, &target, json!(policy_name), json!(policy_name));
        tracing::info!(%existing, "revocation policy already present");
    } else {
        timeline.intend(REVOKE, &target, &json!(null), &json!(policy_name));
        let put = clients
            .iam
            .put_role_policy()
            .role_name(&role_name)
            .policy_name(&policy_name)
            .policy_document(document.to_string())
            .send()
            .await;
        match put {
            Ok(_) => {}
            // A role's inline policies share 10,240 characters
            // (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html>): many
            // instances of one role under response fill them. Revoking too much is safe, too
            // little is not: fall back to denying every older session of the role.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_limit_exceeded_exception())
                    && incident.options.revoke_sessions == RevokeSessions::Instance =>
            {
                out.gaps.push(Gap::new(
                    STEP,
                    "per-instance credential revocation",
                    format!("the inline policy quota of role {role_name} is full; every session of the role issued before now was revoked instead"),
                ));
                let role_wide = Incident {
                    options: cordon_common::incident::Options {
                        revoke_sessions: RevokeSessions::Role,
                        ..incident.options.clone()
                    },
                    ..incident.clone()
                };
                let mut fallback =
                    Box::pin(remove(clients, config, &role_wide, Some(profile_arn))).await?;
                let mut actions = timeline.into_actions();
                actions.append(&mut fallback.actions);
                out.actions = actions;
                out.gaps.append(&mut fallback.gaps);
                out.revoked = fallback.revoked;
                return Ok(out);
            }
            Err(e) => return Err(StepError::aws("PutRolePolicy", e)),
        }
        timeline.record(
            REVOKE,
            &target,
            json!(null),
            json!({"policy_name": policy_name, "document": document}),
        );
    }
    out.revoked = Some(Revocation {
        role_name,
        policy_name,
        scope: incident.options.revoke_sessions,
    });
    out.actions = timeline.into_actions();
    Ok(out)
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn attach_forensic(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
) -> Result<Output, StepError> {
    const ATTACH: &str = "attach forensic instance profile";
    let id = incident.instance_id.as_str();
    let forensic = config.forensic_profile_arn.as_str();
    let mut timeline = Timeline::new(STEP);
    let current = current_associations(&clients.ec2, id).await?;
    if let Some(other) = current
        .iter()
        .find(|a| association_arn(a) != Some(forensic))
    {
        // "Remove instance profile" ran before this; another profile here means someone re-attached one.
        return Err(StepError::invalid(format!(
            "instance {id} has profile {} associated; refusing to attach the forensic profile beside it",
            association_arn(other).unwrap_or("?")
        )));
    }
    if current.is_empty() {
        timeline.intend(ATTACH, id, &json!(null), &json!(forensic));
        clients
            .ec2
            .associate_iam_instance_profile()
            .instance_id(id)
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .arn(forensic)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| StepError::aws("AssociateIamInstanceProfile", e))?;
    }
    // Association is asynchronous: `associating` until the instance can use it.
    let mut polls = 0;
    loop {
        let now = current_associations(&clients.ec2, id).await?;
        if now.iter().any(|a| {
            association_arn(a) == Some(forensic)
                && a.state().map(|s| s.as_str()) == Some("associated")
        }) {
            break;
        }
        polls += 1;
        if polls >= config.association_polls {
            return Err(StepError::Aws {
                kind: cordon_common::error::AwsErrorKind::Transient,
                operation: "AssociateIamInstanceProfile",
                code: "AssociationPending".into(),
                message: format!("the forensic profile is not associated after {polls} checks"),
                source: "association still pending".into(),
            });
        }
        tokio::time::sleep(config.association_poll_interval).await;
    }
    let before = if current.is_empty() {
        json!(null)
    } else {
        json!(forensic)
    };
    timeline.record(ATTACH, id, before, json!(forensic));
    Ok(Output {
        actions: timeline.into_actions(),
        ..Output::default()
    })
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn remove_forensic(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
) -> Result<Output, StepError> {
    const REMOVE: &str = "remove forensic instance profile";
    let id = incident.instance_id.as_str();
    let mut timeline = Timeline::new(STEP);
    let forensic: Vec<_> = current_associations(&clients.ec2, id)
        .await?
        .into_iter()
        .filter(|a| association_arn(a) == Some(config.forensic_profile_arn.as_str()))
        .collect();
    for association in &forensic {
        disassociate(clients, &mut timeline, REMOVE, id, association).await?;
    }
    if forensic.is_empty() {
        timeline.record(REMOVE, id, json!(null), json!(null));
    }
    Ok(Output {
        actions: timeline.into_actions(),
        ..Output::default()
    })
}

/// `arn:aws:iam::123456789012:instance-profile/path/name` → `name` (the API takes the bare name).
pub fn profile_name(arn: &str) -> Result<&str, StepError> {
    arn.split_once(":instance-profile/")
        .and_then(|(_, path)| path.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| StepError::invalid(format!("{arn:?} is not an instance profile ARN")))
}

/// `arn:<partition>:iam::<account>:...` → (partition, account).
fn arn_partition_account(arn: &str) -> Result<(&str, &str), StepError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, _] if !account.is_empty() => {
            Ok((partition, account))
        }
        _ => Err(StepError::invalid(format!("{arn:?} is not an IAM ARN"))),
    }
}

#[cfg(test)]
mod tests;
