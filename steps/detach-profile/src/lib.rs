//! Step 5, detach-profile, with an action chosen by the state machine:
//! - `remove`: disassociates the instance profile (recording its ARN), then revokes the
//!   credentials already issued to the instance, because removing a profile does not invalidate
//!   them: they stay valid until they expire
//!   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html>).
//!   The revocation is Cordon's one inline policy per role, `cordon-revoke` (see [`revoke`]):
//!   `revoke_sessions = instance` (default) lists this instance's ARN under
//!   `ec2:SourceInstanceARN`, so other instances sharing the role keep working; `role` denies every
//!   session of the role issued before now (`aws:TokenIssueTime`), what the console's "Revoke
//!   active sessions" does; `none` leaves them (a recorded gap). When the role's inline-policy
//!   quota cannot hold the instance list, the revocation becomes role-wide (a recorded gap); when
//!   it cannot hold even that, the step fails with `CredentialsNotRevoked`.
//! - `attach-forensic`: associates the reduced-privilege forensic instance profile and waits until
//!   the association is `associated`. Any other profile associated at that point was re-attached
//!   after "Remove instance profile": `ProfileReassociated`, nothing changed.
//! - `remove-reassociated`: removes a profile that is neither the forensic one nor absent and
//!   revokes its role's sessions for this instance, then fails with `ProfileReassociated` (a
//!   containment failure, saying what was removed; a redrive continues); succeeds when there is
//!   none.
//! - `remove-forensic`: disassociates the forensic profile again.
//! - `disable-metadata`: turns the instance metadata endpoint off
//!   (`ModifyInstanceMetadataOptions` `HttpEndpoint=disabled`, read back), so that no profile
//!   associated later can hand credentials to the host; then, if a re-associated profile is
//!   there, fails with `ProfileReassociated` (the state machine's `remove-reassociated` removes it).
//!
//! Every action reads the current state first and changes only what differs, so reruns converge.

use std::time::Duration;

use aws_smithy_types::DateTime;

use aws_sdk_ec2::types::{
    IamInstanceProfileAssociation, IamInstanceProfileSpecification, Instance,
    InstanceMetadataEndpointState,
};
use cordon_common::incident::RevokeSessions;
use cordon_common::lookup::{self, filter};
use cordon_common::timeline::actions;
use cordon_common::timeline::Timeline;
use cordon_common::{lambda, Action, Gap, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub mod forensic;
pub mod revoke;

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
    /// The inline-policy quota of a role ([`revoke::ROLE_POLICY_QUOTA`]).
    pub role_policy_quota: usize,
    /// When the revocation policy is read back a second time ([`revoke::CONFIRM_AFTER`]).
    pub revocation_confirm_after: Duration,
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
        /// The SSM agent was online at "Record metadata": with `options.collect`, its channel
        /// stays open in the revocation until the collection ends.
        #[serde(default)]
        agent_online: bool,
    },
    AttachForensic {
        incident: Value,
    },
    /// Ends the collection: removes the forensic profile, revokes the forensic role's sessions on
    /// this instance and closes the agent's channel on the pre-incident role.
    RemoveForensic {
        incident: Value,
        #[serde(default)]
        profile_arn: Option<String>,
    },
    RemoveReassociated {
        incident: Value,
    },
    /// Turns the metadata endpoint off and closes the agent's channel on the pre-incident role
    /// (again: this runs on every path to "contained").
    DisableMetadata {
        incident: Value,
        #[serde(default)]
        profile_arn: Option<String>,
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
    /// `instance`, or `role` when every older session of the role is denied (asked for, or the
    /// instance list did not fit the role's quota).
    pub scope: RevokeSessions,
    /// The `aws:TokenIssueTime` cut-off when sessions are revoked role-wide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_issued_before: Option<String>,
}

pub async fn handle(clients: &Clients, config: &Config, event: Value) -> Result<Output, StepError> {
    match lambda::parse::<Event>(event)? {
        Event::Remove {
            incident,
            profile_arn,
            agent_online,
        } => {
            let (incident, profile_arn) = checked(incident, profile_arn)?;
            let channel = if incident.options.collect && agent_online {
                revoke::Channel::Open
            } else {
                revoke::Channel::Closed
            };
            remove(clients, config, &incident, profile_arn, channel).await
        }
        Event::AttachForensic { incident } => {
            attach_forensic(clients, config, &Incident::from_value(incident)?).await
        }
        Event::RemoveForensic {
            incident,
            profile_arn,
        } => {
            let (incident, profile_arn) = checked(incident, profile_arn)?;
            let mut out = remove_forensic(clients, config, &incident).await?;
            revoke_forensic(clients, config, &incident, &mut out).await?;
            close_channel(clients, config, &incident, profile_arn.as_deref(), &mut out).await?;
            Ok(out)
        }
        Event::RemoveReassociated { incident } => {
            remove_reassociated(clients, config, &Incident::from_value(incident)?).await
        }
        Event::DisableMetadata {
            incident,
            profile_arn,
        } => {
            let (incident, profile_arn) = checked(incident, profile_arn)?;
            // The channel first: a ProfileReassociated below must not leave it open.
            let mut closed = Output::default();
            close_channel(
                clients,
                config,
                &incident,
                profile_arn.as_deref(),
                &mut closed,
            )
            .await?;
            let mut out = disable_metadata(clients, config, &incident).await?;
            closed.actions.append(&mut out.actions);
            out.actions = closed.actions;
            Ok(out)
        }
    }
}

/// The incident and the pre-incident profile ARN of an event, both checked before any AWS call.
fn checked(
    incident: Value,
    profile_arn: Option<String>,
) -> Result<(Incident, Option<String>), StepError> {
    let incident = Incident::from_value(incident)?;
    if let Some(arn) = &profile_arn {
        profile_name(arn)?;
    }
    Ok((incident, profile_arn))
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
    channel: revoke::Channel,
) -> Result<Output, StepError> {
    const REMOVE: &str = actions::REMOVE_PROFILE;
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
    if let Some(profile_arn) = profile_arn {
        out.revoked = revoke_profile(
            clients,
            config,
            incident,
            &profile_arn,
            channel,
            &mut timeline,
            &mut out.gaps,
        )
        .await?;
    }
    out.actions = timeline.into_actions();
    Ok(out)
}

/// Revokes the credentials that `profile_arn`'s role issued to the instance, as the incident's
/// `revoke_sessions` asks; `None` when nothing was revoked (a gap says why).
async fn revoke_profile(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
    profile_arn: &str,
    channel: revoke::Channel,
    timeline: &mut Timeline,
    gaps: &mut Vec<Gap>,
) -> Result<Option<Revocation>, StepError> {
    const WHAT: &str = "revocation of issued credentials";
    if incident.options.revoke_sessions == RevokeSessions::None {
        gaps.push(Gap::new(
            STEP,
            WHAT,
            "skipped at the responder's request (revoke_sessions = none): credentials issued to the instance stay valid until they expire",
        ));
        return Ok(None);
    }
    let Some(role_name) = role_of(clients, profile_arn).await? else {
        // A profile without a role hands out no credentials: nothing was issued.
        gaps.push(Gap::new(
            STEP,
            WHAT,
            format!("{profile_arn} has no role, so it issued no credentials"),
        ));
        return Ok(None);
    };
    let id = incident.instance_id.as_str();
    let instance_arn = instance_arn(config, profile_arn, id)?;
    let cut_off = revoke::cut_off_now();
    let request = revoke::Request {
        role_name: &role_name,
        instance_id: id,
        instance_arn: &instance_arn,
        incident_id: &incident.incident_id,
        scope: incident.options.revoke_sessions,
        cut_off: &cut_off,
        channel,
        quota: config.role_policy_quota,
        confirm_after: config.revocation_confirm_after,
    };
    const REVOKE: &str = actions::REVOKE;
    let target = format!("role/{role_name}");
    timeline.intend(REVOKE, &target, &json!(null), &json!(revoke::POLICY_NAME));
    let outcome = revoke::revoke(&clients.iam, &request).await?;
    timeline.record(REVOKE, &target, outcome.before, outcome.after);
    if let Some(reason) = outcome.gap {
        gaps.push(Gap::new(STEP, "per-instance credential revocation", reason));
    }
    Ok(Some(Revocation {
        role_name,
        policy_name: outcome.policy_name,
        scope: outcome.scope,
        sessions_issued_before: outcome.sessions_issued_before,
    }))
}

/// Associations of a profile other than the forensic one: a profile associated after "Remove
/// instance profile" ran.
async fn foreign_associations(
    clients: &Clients,
    config: &Config,
    instance_id: &str,
) -> Result<Vec<IamInstanceProfileAssociation>, StepError> {
    Ok(current_associations(&clients.ec2, instance_id)
        .await?
        .into_iter()
        .filter(|a| association_arn(a) != Some(config.forensic_profile_arn.as_str()))
        .collect())
}

/// Removes every re-associated profile and revokes its role's sessions for this instance;
/// returns what was done, for the `ProfileReassociated` message, or `None` if there was none.
async fn remove_foreign(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
    out: &mut Output,
) -> Result<Option<String>, StepError> {
    const REMOVE: &str = "remove re-associated instance profile";
    let id = incident.instance_id.as_str();
    let foreign = foreign_associations(clients, config, id).await?;
    if foreign.is_empty() {
        return Ok(None);
    }
    let mut timeline = Timeline::new(STEP);
    let mut done = Vec::new();
    for association in &foreign {
        let arn = association_arn(association).unwrap_or("?").to_owned();
        disassociate(clients, &mut timeline, REMOVE, id, association).await?;
        let revoked = revoke_profile(
            clients,
            config,
            incident,
            &arn,
            // Before the collection the agent's channel stays as it is; after it, it is closed.
            revoke::Channel::Keep,
            &mut timeline,
            &mut out.gaps,
        )
        .await?;
        done.push(match &revoked {
            Some(r) => format!(
                "disassociated {arn} and revoked role {}'s credentials for this instance ({} scope, policy {})",
                r.role_name,
                serde_json::to_value(r.scope).unwrap_or_default().as_str().unwrap_or("?"),
                r.policy_name
            ),
            None => format!("disassociated {arn}; its credentials were not revoked (see the gaps)"),
        });
        out.removed_profile_arn = Some(arn);
        out.revoked = revoked;
    }
    out.actions.append(&mut timeline.into_actions());
    Ok(Some(done.join("; ")))
}

fn reassociated(instance_id: &str, what: &str) -> StepError {
    StepError::ProfileReassociated(format!(
        "instance {instance_id} had an instance profile associated again after Cordon removed it: {what}. Someone can re-associate profiles to this instance; find out who (CloudTrail AssociateIamInstanceProfile / ReplaceIamInstanceProfileAssociation). A redrive continues the response"
    ))
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn remove_reassociated(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
) -> Result<Output, StepError> {
    let mut out = Output::default();
    match remove_foreign(clients, config, incident, &mut out).await? {
        Some(what) => Err(reassociated(&incident.instance_id, &what)),
        None => {
            let mut timeline = Timeline::new(STEP);
            timeline.record(
                "remove re-associated instance profile",
                &incident.instance_id,
                json!(null),
                json!(null),
            );
            out.actions = timeline.into_actions();
            Ok(out)
        }
    }
}

/// The metadata options a responder (and the release) needs, as JSON.
fn metadata_options(instance: &Instance) -> Value {
    instance
        .metadata_options()
        .map(|m| {
            json!({
                "http_endpoint": m.http_endpoint().map(|v| v.as_str()),
                "http_tokens": m.http_tokens().map(|v| v.as_str()),
                "http_put_response_hop_limit": m.http_put_response_hop_limit(),
                "http_protocol_ipv6": m.http_protocol_ipv6().map(|v| v.as_str()),
                "instance_metadata_tags": m.instance_metadata_tags().map(|v| v.as_str()),
                "state": m.state().map(|v| v.as_str()),
            })
        })
        .unwrap_or(Value::Null)
}

fn endpoint_disabled(instance: &Instance) -> bool {
    instance.metadata_options().and_then(|m| m.http_endpoint())
        == Some(&InstanceMetadataEndpointState::Disabled)
}

/// Turns the instance metadata endpoint off: "If you specify a value of disabled, you cannot
/// access your instance metadata"
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyInstanceMetadataOptions.html>),
/// and with it the instance profile's credentials, which the host reads from IMDS
/// (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-metadata-security-credentials.html>).
/// The change is asynchronous (`State` `pending` until `applied`); the read-back checks the
/// configuration, which is what can be verified from outside the host.
///
/// Then, if a profile other than the forensic one is associated, fails with
/// `ProfileReassociated` without touching it: the endpoint is already off (so the host cannot
/// fetch that profile's credentials any more), and the state machine's "Remove re-associated
/// profile" (`remove-reassociated`) removes it, revokes what it issued and fails the execution.
/// Removing it here as well would let that next state find nothing and succeed, and the
/// containment failure would be lost.
#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn disable_metadata(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
) -> Result<Output, StepError> {
    const DISABLE: &str = actions::DISABLE_METADATA;
    let id = incident.instance_id.as_str();
    let mut timeline = Timeline::new(STEP);
    let instance = lookup::describe_instance(&clients.ec2, id).await?;
    let before = metadata_options(&instance);
    if !endpoint_disabled(&instance) {
        timeline.intend(DISABLE, id, &before, &json!({"http_endpoint": "disabled"}));
        // Only the endpoint changes: an omitted HttpEndpoint or hop limit keeps "the existing
        // state", but an omitted HttpTokens takes a default that depends on the AMI and the
        // account (API_ModifyInstanceMetadataOptions), so the current token, IPv6 and tag
        // settings are sent back as they are.
        let current = instance.metadata_options();
        clients
            .ec2
            .modify_instance_metadata_options()
            .instance_id(id)
            .http_endpoint(InstanceMetadataEndpointState::Disabled)
            .set_http_tokens(current.and_then(|m| m.http_tokens()).cloned())
            .set_http_protocol_ipv6(current.and_then(|m| m.http_protocol_ipv6()).cloned())
            .set_instance_metadata_tags(current.and_then(|m| m.instance_metadata_tags()).cloned())
            .send()
            .await
            .map_err(|e| StepError::aws("ModifyInstanceMetadataOptions", e))?;
    }
    let now = lookup::describe_instance(&clients.ec2, id).await?;
    if !endpoint_disabled(&now) {
        return Err(StepError::ContainmentNotVerified(format!(
            "the instance metadata endpoint of {id} reads {} after ModifyInstanceMetadataOptions HttpEndpoint=disabled",
            metadata_options(&now)["http_endpoint"]
        )));
    }
    // Unchanged when it was already off (the read-back's `state` may have gone pending → applied).
    let after = if endpoint_disabled(&instance) {
        before.clone()
    } else {
        metadata_options(&now)
    };
    timeline.record(DISABLE, id, before, after);

    if let Some(other) = foreign_associations(clients, config, id).await?.first() {
        return Err(StepError::ProfileReassociated(format!(
            "instance {id} has profile {} associated, which is not the forensic profile: someone re-associated a profile after Cordon removed it. The instance metadata endpoint is now disabled, so the host cannot fetch its credentials; the state machine removes the profile and revokes its credentials next",
            association_arn(other).unwrap_or("?")
        )));
    }
    Ok(Output {
        actions: timeline.into_actions(),
        ..Output::default()
    })
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn attach_forensic(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
) -> Result<Output, StepError> {
    const ATTACH: &str = actions::ATTACH_FORENSIC;
    let id = incident.instance_id.as_str();
    let forensic = config.forensic_profile_arn.as_str();
    let mut timeline = Timeline::new(STEP);
    let current = current_associations(&clients.ec2, id).await?;
    if let Some(other) = current
        .iter()
        .find(|a| association_arn(a) != Some(forensic))
    {
        // "Remove instance profile" ran before this; another profile here means someone
        // re-attached one: a containment failure, which "Remove re-associated profile" handles.
        return Err(StepError::ProfileReassociated(format!(
            "instance {id} has profile {} associated, which is not the forensic profile; nothing was changed (the state machine removes it and revokes its credentials next)",
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

/// The role of an instance profile (GetInstanceProfile); `None` for a profile without one.
async fn role_of(clients: &Clients, profile_arn: &str) -> Result<Option<String>, StepError> {
    Ok(clients
        .iam
        .get_instance_profile()
        .instance_profile_name(profile_name(profile_arn)?)
        .send()
        .await
        .map_err(|e| StepError::aws("GetInstanceProfile", e))?
        .instance_profile
        .and_then(|p| p.roles.into_iter().next())
        .map(|r| r.role_name))
}

fn instance_arn(config: &Config, any_arn: &str, instance_id: &str) -> Result<String, StepError> {
    let (partition, account) = arn_partition_account(any_arn)?;
    Ok(format!(
        "arn:{partition}:ec2:{}:{account}:instance/{instance_id}",
        config.region
    ))
}

/// Ends the agent's channel exemption on the pre-incident role's revocation, when there is one
/// (see [`revoke::close_channel`]); records the change.
async fn close_channel(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
    profile_arn: Option<&str>,
    out: &mut Output,
) -> Result<(), StepError> {
    let Some(profile_arn) = profile_arn else {
        return Ok(()); // no profile before the incident: no revocation, no exemption
    };
    if incident.options.revoke_sessions == RevokeSessions::None {
        return Ok(());
    }
    let Some(role_name) = role_of(clients, profile_arn).await? else {
        return Ok(());
    };
    let id = incident.instance_id.as_str();
    let arn = instance_arn(config, profile_arn, id)?;
    let cut_off = revoke::cut_off_now();
    let request = revoke::Request {
        role_name: &role_name,
        instance_id: id,
        instance_arn: &arn,
        incident_id: &incident.incident_id,
        scope: RevokeSessions::Instance,
        cut_off: &cut_off,
        channel: revoke::Channel::Closed,
        quota: config.role_policy_quota,
        confirm_after: config.revocation_confirm_after,
    };
    let mut timeline = Timeline::new(STEP);
    let target = format!("role/{role_name}");
    if let Some(outcome) = revoke::close_channel(&clients.iam, &request).await? {
        timeline.intend(
            actions::CLOSE_CHANNEL,
            &target,
            &outcome.before,
            &json!("closed"),
        );
        timeline.record(
            actions::CLOSE_CHANNEL,
            &target,
            outcome.before,
            outcome.after,
        );
        if let Some(reason) = outcome.gap {
            out.gaps
                .push(Gap::new(STEP, "per-instance credential revocation", reason));
        }
    }
    out.actions.extend(timeline.into_actions());
    Ok(())
}

/// Denies the forensic role's sessions issued to this instance so far ([`forensic`]).
async fn revoke_forensic(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
    out: &mut Output,
) -> Result<(), StepError> {
    let Some(role_name) = role_of(clients, &config.forensic_profile_arn).await? else {
        return Ok(());
    };
    let id = incident.instance_id.as_str();
    let arn = instance_arn(config, &config.forensic_profile_arn, id)?;
    let cut_off = revoke::cut_off_now();
    let now = DateTime::from(std::time::SystemTime::now()).secs();
    let target = format!("role/{role_name}");
    let mut timeline = Timeline::new(STEP);
    timeline.intend(
        actions::REVOKE_FORENSIC,
        &target,
        &json!(null),
        &json!({"sessions_issued_before": cut_off}),
    );
    let outcome = forensic::revoke(&clients.iam, &role_name, id, &arn, &cut_off, now).await?;
    match outcome.gap {
        Some(reason) => {
            timeline.record(actions::REVOKE_FORENSIC, &target, json!(null), json!(null));
            out.gaps.push(Gap::new(STEP, "revocation of the forensic sessions", reason));
        }
        None => timeline.record(
            actions::REVOKE_FORENSIC,
            &target,
            json!(null),
            json!({"policy_name": outcome.policy_name, "sessions_issued_before": cut_off, "expired_policies_removed": outcome.pruned}),
        ),
    }
    out.actions.extend(timeline.into_actions());
    Ok(())
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
