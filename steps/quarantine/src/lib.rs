//! Step 7, quarantine. Takes the incident; cuts the instance off the network and proves it:
//! 1. finds or creates, in the instance's VPC, the isolation group (no rules at all: its default
//!    allow-all egress rule is revoked) and the flush group (all traffic in and out);
//! 2. moves **every** network interface first into the flush group, then into the isolation group.
//!    Changing an interface's groups does not end connections that security groups already track;
//!    flows allowed by all-traffic rules both ways are *untracked*, and untracked flows are cut as
//!    soon as a group without rules applies
//!    (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html>,
//!    and the AWS Security Incident Response Guide's isolation technique). The flush group is
//!    applied for the time of one API call;
//! 3. deregisters the instance from every ELBv2 target group that has it;
//! 4. tags it `cordon:status=quarantined` with the incident ID;
//! 5. verifies by describing again: every interface has exactly the isolation group, that group has
//!    no rules, no target group has the instance; otherwise `ContainmentNotVerified`.
//!
//! Groups are found by name and tag per VPC, so reruns and other incidents reuse them; an interface
//! already isolated is left alone.

use aws_sdk_ec2::types::{
    IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroup, Tag, TagSpecification,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use cordon_common::lookup::{self, filter, TargetRegistration};
use cordon_common::timeline::Timeline;
use cordon_common::{lambda, Action, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const STEP: &str = "quarantine";
pub const ISOLATION_GROUP: &str = "cordon-isolation";
pub const FLUSH_GROUP: &str = "cordon-flush";
pub const TAG_ROLE: &str = "cordon:role";
pub const TAG_STATUS: &str = "cordon:status";
pub const TAG_INCIDENT: &str = "cordon:incident-id";

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub incident: Value,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub isolation_group_id: String,
    pub flush_group_id: String,
    pub network_interface_ids: Vec<String>,
    pub deregistered: Vec<TargetRegistration>,
    pub verified: bool,
    pub actions: Vec<Action>,
}

pub async fn handle(clients: &Clients, event: Value) -> Result<Output, StepError> {
    let event: Event = lambda::parse(event)?;
    let incident = Incident::from_value(event.incident)?;
    quarantine(clients, &incident).await
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Isolation,
    Flush,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Isolation => ISOLATION_GROUP,
            Role::Flush => FLUSH_GROUP,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Role::Isolation => "isolation",
            Role::Flush => "flush",
        }
    }
}

#[tracing::instrument(skip(clients), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn quarantine(clients: &Clients, incident: &Incident) -> Result<Output, StepError> {
    let ec2 = &clients.ec2;
    let id = incident.instance_id.as_str();
    let mut timeline = Timeline::new(STEP);
    let instance = lookup::describe_instance(ec2, id).await?;
    let vpc_id = instance
        .vpc_id()
        .ok_or_else(|| {
            StepError::ContainmentNotVerified(format!(
                "{id} is not in a VPC: security groups cannot isolate it"
            ))
        })?
        .to_owned();

    let isolation = ensure_group(ec2, &vpc_id, Role::Isolation, &mut timeline).await?;
    let flush = ensure_group(ec2, &vpc_id, Role::Flush, &mut timeline).await?;

    const MOVE: &str = "isolate network interface";
    let mut interface_ids = Vec::new();
    for eni in instance.network_interfaces() {
        let Some(eni_id) = eni.network_interface_id() else {
            continue;
        };
        interface_ids.push(eni_id.to_owned());
        let before: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
        if before != [isolation.as_str()] {
            timeline.intend(MOVE, eni_id, &json!(before), &json!([isolation]));
            for group in [&flush, &isolation] {
                ec2.modify_network_interface_attribute()
                    .network_interface_id(eni_id)
                    .groups(group.as_str())
                    .send()
                    .await
                    .map_err(|e| StepError::aws("ModifyNetworkInterfaceAttribute", e))?;
            }
        }
        timeline.record(MOVE, eni_id, json!(before), json!([isolation]));
    }

    const DEREGISTER: &str = "deregister from target group";
    let registrations = lookup::target_registrations(&clients.elbv2, Some(&vpc_id), id).await?;
    // A target already `draining` was deregistered by an earlier attempt: nothing left to do.
    let registrations: Vec<TargetRegistration> = registrations
        .into_iter()
        .filter(|r| !r.is_deregistering())
        .collect();
    for r in &registrations {
        timeline.intend(
            DEREGISTER,
            &r.target_group_arn,
            &json!({"id": id, "port": r.port}),
            &json!(null),
        );
        clients
            .elbv2
            .deregister_targets()
            .target_group_arn(&r.target_group_arn)
            .targets(
                aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                    .id(id)
                    .set_port(r.port)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| StepError::aws("DeregisterTargets", e))?;
        timeline.record(
            DEREGISTER,
            &r.target_group_arn,
            json!({"id": id, "port": r.port}),
            json!(null),
        );
    }

    const TAG: &str = "tag instance quarantined";
    let tag_value = |key: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    let before = json!({TAG_STATUS: tag_value(TAG_STATUS), TAG_INCIDENT: tag_value(TAG_INCIDENT)});
    let after = json!({TAG_STATUS: "quarantined", TAG_INCIDENT: incident.incident_id});
    if before != after {
        timeline.intend(TAG, id, &before, &after);
        ec2.create_tags()
            .resources(id)
            .tags(Tag::builder().key(TAG_STATUS).value("quarantined").build())
            .tags(
                Tag::builder()
                    .key(TAG_INCIDENT)
                    .value(&incident.incident_id)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| StepError::aws("CreateTags", e))?;
    }
    timeline.record(TAG, id, before, after);

    verify(clients, id, &vpc_id, &isolation).await?;
    Ok(Output {
        isolation_group_id: isolation,
        flush_group_id: flush,
        network_interface_ids: interface_ids,
        deregistered: registrations,
        verified: true,
        actions: timeline.into_actions(),
    })
}

/// Describes everything again, from AWS, after the changes: the proof that containment holds.
async fn verify(
    clients: &Clients,
    instance_id: &str,
    vpc_id: &str,
    isolation: &str,
) -> Result<(), StepError> {
    let mut problems = Vec::new();
    let interfaces = clients
        .ec2
        .describe_network_interfaces()
        .filters(filter("attachment.instance-id", instance_id))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeNetworkInterfaces", e))?;
    if interfaces.network_interfaces().is_empty() {
        problems.push("no network interface found to verify".to_owned());
    }
    for eni in interfaces.network_interfaces() {
        let groups: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
        if groups != [isolation] {
            problems.push(format!(
                "{} has groups {groups:?}, expected only {isolation}",
                eni.network_interface_id().unwrap_or("?")
            ));
        }
    }
    let group = describe_group(&clients.ec2, vpc_id, Role::Isolation).await?;
    match group {
        Some(g) if g.ip_permissions().is_empty() && g.ip_permissions_egress().is_empty() => {}
        Some(g) => problems.push(format!(
            "isolation group {isolation} has {} ingress and {} egress rules",
            g.ip_permissions().len(),
            g.ip_permissions_egress().len()
        )),
        None => problems.push(format!("isolation group {isolation} not found")),
    }
    // A deregistered target stays listed as `draining` (Target.DeregistrationInProgress) for the
    // group's deregistration delay, 300 s by default, and gets no new requests meanwhile; `unused`
    // gets none either (TargetRegistration::is_out_of_service, with the ELBv2 docs).
    let still = lookup::target_registrations(&clients.elbv2, Some(vpc_id), instance_id).await?;
    for r in still.iter().filter(|r| !r.is_out_of_service()) {
        problems.push(format!(
            "still registered in {} ({})",
            r.target_group_arn,
            r.state.as_deref().unwrap_or("state unknown")
        ));
    }
    if problems.is_empty() {
        tracing::info!("containment verified");
        Ok(())
    } else {
        Err(StepError::ContainmentNotVerified(problems.join("; ")))
    }
}

async fn describe_group(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    role: Role,
) -> Result<Option<SecurityGroup>, StepError> {
    let out = ec2
        .describe_security_groups()
        .filters(filter("vpc-id", vpc_id))
        .filters(filter("group-name", role.name()))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeSecurityGroups", e))?;
    Ok(out.security_groups().first().cloned())
}

/// The part of "all traffic from/to everywhere, IPv4 and IPv6" that a rule list lacks, if any.
/// Only the missing ranges are authorized: AWS fails a whole call that repeats an existing rule.
fn missing_all_traffic(perms: &[IpPermission]) -> Option<IpPermission> {
    let all = || perms.iter().filter(|p| p.ip_protocol() == Some("-1"));
    let v4 = all().any(|p| {
        p.ip_ranges()
            .iter()
            .any(|r| r.cidr_ip() == Some("0.0.0.0/0"))
    });
    let v6 = all().any(|p| {
        p.ipv6_ranges()
            .iter()
            .any(|r| r.cidr_ipv6() == Some("::/0"))
    });
    if v4 && v6 {
        return None;
    }
    let mut p = IpPermission::builder().ip_protocol("-1");
    if !v4 {
        p = p.ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build());
    }
    if !v6 {
        p = p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build());
    }
    Some(p.build())
}

/// `Ok` when the error's code only says the change is already made, else the error.
fn already(err: StepError, code: &str) -> Result<(), StepError> {
    if err.aws_code() == Some(code) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Authorizes `missing` on the flush group in one direction; a rule that appeared meanwhile is fine.
async fn allow(
    ec2: &aws_sdk_ec2::Client,
    group_id: &str,
    egress: bool,
    missing: IpPermission,
    timeline: &mut Timeline,
) -> Result<(), StepError> {
    let (action, operation) = if egress {
        (
            "allow all egress in flush group",
            "AuthorizeSecurityGroupEgress",
        )
    } else {
        (
            "allow all ingress in flush group",
            "AuthorizeSecurityGroupIngress",
        )
    };
    timeline.intend(action, group_id, &json!("partial"), &json!("all"));
    let sent = if egress {
        ec2.authorize_security_group_egress()
            .group_id(group_id)
            .ip_permissions(missing)
            .send()
            .await
            .map(drop)
            .map_err(|e| StepError::aws(operation, e))
    } else {
        ec2.authorize_security_group_ingress()
            .group_id(group_id)
            .ip_permissions(missing)
            .send()
            .await
            .map(drop)
            .map_err(|e| StepError::aws(operation, e))
    };
    sent.or_else(|e| already(e, "InvalidPermission.Duplicate"))?;
    timeline.record(action, group_id, json!("partial"), json!("all"));
    Ok(())
}

/// Finds the group of this role in the VPC, or creates it; then makes its rules what the role
/// needs: none for isolation, all traffic both ways for flush.
async fn ensure_group(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    role: Role,
    timeline: &mut Timeline,
) -> Result<String, StepError> {
    let group = match describe_group(ec2, vpc_id, role).await? {
        Some(g) => g,
        None => {
            let action = format!("create {} security group", role.tag());
            timeline.intend(&action, vpc_id, &json!(null), &json!(role.name()));
            let created = ec2
                .create_security_group()
                .group_name(role.name())
                .description(match role {
                    Role::Isolation => "Cordon isolation: no rules; quarantined instances only",
                    Role::Flush => {
                        "Cordon flush: all traffic, applied for one call so tracked flows end"
                    }
                })
                .vpc_id(vpc_id)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::SecurityGroup)
                        .tags(Tag::builder().key(TAG_ROLE).value(role.tag()).build())
                        .build(),
                )
                .send()
                .await;
            match created {
                Ok(out) => timeline.record(&action, vpc_id, json!(null), json!(out.group_id())),
                // Another execution created it a moment ago: use theirs.
                Err(e) if e.code() == Some("InvalidGroup.Duplicate") => {}
                Err(e) => return Err(StepError::aws("CreateSecurityGroup", e)),
            }
            describe_group(ec2, vpc_id, role).await?.ok_or_else(|| {
                StepError::ContainmentNotVerified(format!(
                    "{} group vanished after creation",
                    role.name()
                ))
            })?
        }
    };
    let group_id = group.group_id().unwrap_or_default().to_owned();
    match role {
        Role::Isolation => {
            if !group.ip_permissions_egress().is_empty() {
                let action = "revoke isolation group egress";
                timeline.intend(
                    action,
                    &group_id,
                    &json!(group.ip_permissions_egress().len()),
                    &json!(0),
                );
                ec2.revoke_security_group_egress()
                    .group_id(&group_id)
                    .set_ip_permissions(Some(group.ip_permissions_egress().to_vec()))
                    .send()
                    .await
                    .map(drop)
                    // Revoked meanwhile by another execution in the same VPC: the goal is reached
                    // (and verification reads the group again).
                    .or_else(|e| {
                        already(
                            StepError::aws("RevokeSecurityGroupEgress", e),
                            "InvalidPermission.NotFound",
                        )
                    })?;
                timeline.record(
                    action,
                    &group_id,
                    json!(group.ip_permissions_egress().len()),
                    json!(0),
                );
            }
            if !group.ip_permissions().is_empty() {
                let action = "revoke isolation group ingress";
                timeline.intend(
                    action,
                    &group_id,
                    &json!(group.ip_permissions().len()),
                    &json!(0),
                );
                ec2.revoke_security_group_ingress()
                    .group_id(&group_id)
                    .set_ip_permissions(Some(group.ip_permissions().to_vec()))
                    .send()
                    .await
                    .map(drop)
                    // Revoked meanwhile by another execution in the same VPC: the goal is reached
                    // (and verification reads the group again).
                    .or_else(|e| {
                        already(
                            StepError::aws("RevokeSecurityGroupIngress", e),
                            "InvalidPermission.NotFound",
                        )
                    })?;
                timeline.record(
                    action,
                    &group_id,
                    json!(group.ip_permissions().len()),
                    json!(0),
                );
            }
        }
        Role::Flush => {
            for egress in [false, true] {
                let rules = if egress {
                    group.ip_permissions_egress()
                } else {
                    group.ip_permissions()
                };
                if let Some(missing) = missing_all_traffic(rules) {
                    allow(ec2, &group_id, egress, missing, timeline).await?;
                }
            }
        }
    }
    Ok(group_id)
}

#[cfg(test)]
mod tests;
