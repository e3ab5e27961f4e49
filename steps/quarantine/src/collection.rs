//! The network path the SSM agent needs while a collection runs inside containment: quarantine's
//! actions `open-collection-path` and `close-collection-path`. Each takes the incident.
//!
//! **Open** (`options.collection_network`):
//! - `"endpoints"` (the default): finds the VPC's endpoints for `ssm`, `ssmmessages`,
//!   `ec2messages` and S3 ([`endpoints`]). If any is missing, nothing changes: `opened: false`
//!   and a gap naming the missing services (containment stays complete; the state machine skips
//!   the collection). Otherwise the per-VPC group `cordon-collection` ([`group`]) gets no inbound
//!   rule and outbound TCP 443 only to the interface endpoints' security groups and to the S3
//!   gateway endpoint's prefix list;
//! - `"internet-443"`: the group `cordon-collection-internet-443` gets outbound TCP 443 to
//!   `0.0.0.0/0` and `::/0`, and the opening is recorded as a gap (the host can reach any HTTPS
//!   server while the path is open).
//!
//! Then, in this order: the network ACL allow rules that let TCP 443 from the instance, and the
//! replies to it, pass before Cordon's own deny rules for its addresses ([`acl`]; alone they
//! open nothing, the interfaces are still in the isolation group); the group's rules; every
//! interface from the isolation group into the collection group; and a read-back of all three.
//! No flush is needed on the way in: a flush exists to end flows that a group with *fewer* rules
//! would otherwise let continue as tracked connections
//! (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html>),
//! and the move from the isolation group (no rules) into the collection group only *adds*
//! outbound TCP 443 to named destinations: nothing that the isolation group stopped becomes
//! allowed except those new connections, which are the point. A path that cannot be completed
//! (an ACL rule without room, a read-back that differs) is undone by a close, and the result is
//! `opened: false` with the reasons as gaps; an AWS error is undone the same way and returned.
//!
//! **Close**: every interface back into the isolation group *through the flush group*, as
//! quarantine moves them. On the way out a flush is needed: the agent's connections to the
//! endpoints (or, with `internet-443`, any HTTPS connection the host opened meanwhile) are tracked
//! flows, and changing the groups does not end tracked flows; the flush group makes them untracked
//! for one API call and the isolation group then cuts them. The collection allow rules of this
//! instance's addresses are deleted from every ACL (and nothing else), the shared collection group
//! stays, and the result is read back as quarantine verifies it: exactly the isolation group on
//! every interface, an isolation group without rules, no collection allow rule left. Closing is
//! idempotent and safe when nothing was opened.

pub mod acl;
pub mod endpoints;
pub mod group;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Instance;
use cordon_common::incident::CollectionNetwork;
use cordon_common::lookup::{self, filter};
use cordon_common::timeline::Timeline;
use cordon_common::{Action, Gap, Incident, StepError};
use serde::Serialize;
use serde_json::json;

use crate::nacl::Address;
use crate::{
    ensure_group, interfaces_of, isolation_problems, move_interfaces, set_groups, Failures,
    Interface, Role, STEP,
};
use group::{Peer, Rule};

pub const COLLECTION_GROUP: &str = "cordon-collection";
pub const COLLECTION_INTERNET_GROUP: &str = "cordon-collection-internet-443";
pub const MOVE: &str = cordon_common::timeline::actions::COLLECTION_MOVE;

/// What `open-collection-path` returns.
#[derive(Debug, Serialize)]
pub struct Opened {
    /// `true` when every interface is in the collection group and the path was read back.
    pub opened: bool,
    pub collection_network: CollectionNetwork,
    pub collection_group_id: Option<String>,
    /// The endpoints the path uses, by service (`ssm`, `ssmmessages`, `ec2messages`, `s3`).
    pub endpoints: BTreeMap<String, Vec<endpoints::Used>>,
    /// The services without a usable endpoint (`endpoints` mode; then `opened` is `false`).
    pub missing_endpoints: Vec<String>,
    /// The ACL allow rules of the path (empty when it was not opened: they were removed again).
    pub network_acl_allow_rules: Vec<acl::AllowRule>,
    pub network_interface_ids: Vec<String>,
    pub verified: bool,
    pub actions: Vec<Action>,
    pub gaps: Vec<Gap>,
}

/// What `close-collection-path` returns (only once verified: otherwise the step fails).
#[derive(Debug, Serialize)]
pub struct Closed {
    pub closed: bool,
    pub isolation_group_id: String,
    /// The interfaces this call moved back (none when they were already isolated).
    pub restored_interface_ids: Vec<String>,
    pub network_acl_allow_rules_removed: Vec<acl::AllowRule>,
    pub verified: bool,
    pub actions: Vec<Action>,
    pub gaps: Vec<Gap>,
}

fn vpc_of(instance: &Instance, id: &str) -> Result<String, StepError> {
    instance.vpc_id().map(str::to_owned).ok_or_else(|| {
        StepError::ContainmentNotVerified(format!(
            "{id} is not in a VPC: security groups cannot isolate it"
        ))
    })
}

fn addresses_of(interfaces: &[Interface]) -> Vec<Address> {
    interfaces.iter().flat_map(Interface::addresses).collect()
}

/// The group, its `cordon:role` tag and its outbound rules for this mode, once the endpoints are
/// known.
struct Plan {
    group_name: &'static str,
    role: &'static str,
    desired: BTreeSet<Rule>,
    scope: acl::Scope,
}

#[tracing::instrument(skip(ec2), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn open(ec2: &aws_sdk_ec2::Client, incident: &Incident) -> Result<Opened, StepError> {
    let mode = incident.options.collection_network;
    if mode == CollectionNetwork::BeforeContainment {
        // Refused by the incident's validation already; never opened in this order.
        return Err(StepError::invalid(
            "options.collection_network \"before-containment\" has no collection path inside containment",
        ));
    }
    let id = incident.instance_id.as_str();
    let instance = lookup::describe_instance(ec2, id).await?;
    let vpc_id = vpc_of(&instance, id)?;
    let interfaces = interfaces_of(&instance);
    let own: BTreeSet<String> = interfaces.iter().map(|i| i.id.clone()).collect();
    let mut out = Opened {
        opened: false,
        collection_network: mode,
        collection_group_id: None,
        endpoints: BTreeMap::new(),
        missing_endpoints: Vec::new(),
        network_acl_allow_rules: Vec::new(),
        network_interface_ids: own.iter().cloned().collect(),
        verified: false,
        actions: Vec::new(),
        gaps: Vec::new(),
    };

    let plan = if mode == CollectionNetwork::Endpoints {
        let found = endpoints::find(ec2, &vpc_id, instance.subnet_id()).await?;
        out.endpoints = found.used.clone();
        if !found.missing.is_empty() {
            out.missing_endpoints = found.missing.keys().cloned().collect();
            out.gaps.push(found.gap(&vpc_id));
            return Ok(out);
        }
        out.gaps
            .extend(endpoints::shared_groups(ec2, &found, &own).await?);
        let desired = found
            .security_groups()
            .into_iter()
            .map(|g| Rule::https(Peer::Group(g)))
            .chain(
                found
                    .prefix_lists()
                    .into_iter()
                    .map(|l| Rule::https(Peer::PrefixList(l))),
            )
            .collect();
        Plan {
            group_name: COLLECTION_GROUP,
            role: "collection",
            desired,
            scope: acl::Scope::Subnets(found.subnets()),
        }
    } else {
        Plan {
            group_name: COLLECTION_INTERNET_GROUP,
            role: "collection-internet-443",
            desired: BTreeSet::from([
                Rule::https(Peer::V4("0.0.0.0/0".into())),
                Rule::https(Peer::V6("::/0".into())),
            ]),
            scope: acl::Scope::All,
        }
    };

    let mut timeline = Timeline::new(STEP);
    let addresses = addresses_of(&interfaces);
    let attempt = open_path(
        ec2,
        id,
        &vpc_id,
        &plan,
        &interfaces,
        &addresses,
        &mut timeline,
        &mut out,
    )
    .await;
    match attempt {
        Ok(refused) if refused.is_empty() => {
            out.opened = true;
            out.verified = true;
            if mode == CollectionNetwork::Internet443 {
                out.gaps.push(Gap::new(
                    STEP,
                    "containment during collection",
                    format!(
                        "options.collection_network is \"internet-443\": from the opening of the collection path until it is closed, every interface of {id} is in {} (outbound TCP 443 to any IPv4 and IPv6 address) and the network ACLs let TCP 443 from its addresses through, so the host can reach any HTTPS server, not only AWS's endpoints",
                        out.collection_group_id.as_deref().unwrap_or(plan.group_name)
                    ),
                ));
            }
        }
        Ok(refused) => {
            let reasons = refused
                .iter()
                .map(|g| format!("{}: {}", g.what, g.reason))
                .collect::<Vec<_>>()
                .join("; ");
            out.gaps.extend(refused);
            close_path(ec2, id, &mut timeline).await?;
            out.network_acl_allow_rules.clear();
            out.gaps.push(Gap::new(
                STEP,
                "OS-level collection",
                format!(
                    "the collection path could not be opened ({reasons}); what had been changed was undone, and the instance is isolated again (read back)"
                ),
            ));
        }
        Err(e) => {
            // Back into isolation before anything is reported, whatever failed.
            return match close_path(ec2, id, &mut timeline).await {
                Ok(_) => Err(e),
                Err(undo) => {
                    let mut failures = Failures::default();
                    failures.push("open the collection path", e);
                    failures.push("undo it (back into isolation)", undo);
                    Err(match failures.into_result() {
                        Err(both) => both,
                        Ok(()) => StepError::ContainmentNotVerified(
                            "the collection path failed and could not be undone".into(),
                        ),
                    })
                }
            };
        }
    }
    out.actions = timeline.into_actions();
    Ok(out)
}

/// ACL rules, group, interfaces, read-back. `Ok` with gaps: the path could not be completed (and
/// must be undone); `Ok` without: open and verified.
#[allow(clippy::too_many_arguments)]
async fn open_path(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
    vpc_id: &str,
    plan: &Plan,
    interfaces: &[Interface],
    addresses: &[Address],
    timeline: &mut Timeline,
    out: &mut Opened,
) -> Result<Vec<Gap>, StepError> {
    let applied = acl::allow(ec2, vpc_id, addresses, &plan.scope, timeline).await?;
    out.network_acl_allow_rules = applied.rules;
    if !applied.gaps.is_empty() {
        return Ok(applied.gaps);
    }
    let group_id = group::ensure(
        ec2,
        vpc_id,
        plan.group_name,
        plan.role,
        &plan.desired,
        timeline,
    )
    .await?;
    out.collection_group_id = Some(group_id.clone());
    for eni in interfaces {
        let (before, after) = (json!(eni.groups), json!([group_id]));
        if eni.groups != [group_id.as_str()] {
            timeline.intend(MOVE, &eni.id, &before, &after);
            set_groups(ec2, &eni.id, &group_id).await?;
        }
        timeline.record(MOVE, &eni.id, before, after);
    }
    let problems = verify_open(
        ec2,
        instance_id,
        vpc_id,
        plan,
        &group_id,
        &out.network_acl_allow_rules,
    )
    .await?;
    Ok(if problems.is_empty() {
        Vec::new()
    } else {
        vec![Gap::new(
            STEP,
            "collection path not verified",
            problems.join("; "),
        )]
    })
}

/// Reads back what open changed: every interface in exactly the collection group, the group's
/// rules exactly as planned, every ACL allow rule in effect.
async fn verify_open(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
    vpc_id: &str,
    plan: &Plan,
    group_id: &str,
    rules: &[acl::AllowRule],
) -> Result<Vec<String>, StepError> {
    let mut problems = Vec::new();
    let enis = ec2
        .describe_network_interfaces()
        .filters(filter("attachment.instance-id", instance_id))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeNetworkInterfaces", e))?;
    if enis.network_interfaces().is_empty() {
        problems.push("no network interface found to verify".to_owned());
    }
    for eni in enis.network_interfaces() {
        let groups: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
        if groups != [group_id] {
            problems.push(format!(
                "{} has groups {groups:?}, expected only {group_id}",
                eni.network_interface_id().unwrap_or("?")
            ));
        }
    }
    match crate::describe_group_named(ec2, vpc_id, plan.group_name).await? {
        Some(g) => {
            let ingress = group::atoms(g.ip_permissions());
            let egress = group::atoms(g.ip_permissions_egress());
            if !ingress.is_empty() || egress != plan.desired {
                problems.push(format!(
                    "{group_id} has rules {}, expected {}",
                    group::rules_json(&ingress, &egress),
                    group::rules_json(&BTreeSet::new(), &plan.desired)
                ));
            }
        }
        None => problems.push(format!("{} not found", plan.group_name)),
    }
    problems.extend(acl::verify(ec2, rules).await?);
    Ok(problems)
}

#[tracing::instrument(skip(ec2), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn close(ec2: &aws_sdk_ec2::Client, incident: &Incident) -> Result<Closed, StepError> {
    let mut timeline = Timeline::new(STEP);
    let undone = close_path(ec2, &incident.instance_id, &mut timeline).await?;
    Ok(Closed {
        closed: true,
        isolation_group_id: undone.isolation_group_id,
        restored_interface_ids: undone.restored,
        network_acl_allow_rules_removed: undone.removed,
        verified: true,
        actions: timeline.into_actions(),
        gaps: Vec::new(),
    })
}

struct Undone {
    isolation_group_id: String,
    restored: Vec<String>,
    removed: Vec<acl::AllowRule>,
}

/// Back into isolation through the flush group, the ACL allow rules removed, read back. Every
/// measure is attempted before a failure is returned.
async fn close_path(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
    timeline: &mut Timeline,
) -> Result<Undone, StepError> {
    let instance = lookup::describe_instance(ec2, instance_id).await?;
    let vpc_id = vpc_of(&instance, instance_id)?;
    let interfaces = interfaces_of(&instance);
    let addresses = addresses_of(&interfaces);
    let mut failures = Failures::default();

    // Found (or made again) as quarantine makes them: an isolation group that gained rules while
    // the collection ran is emptied again.
    let isolation = ensure_group(ec2, &vpc_id, Role::Isolation, timeline).await?;
    let flush = failures.ok(
        "flush group",
        ensure_group(ec2, &vpc_id, Role::Flush, timeline).await,
    );
    // `Some(false)`: an interface counts as done once it has only the isolation group (its
    // timeouts were set by quarantine and are not changed here).
    let moved = move_interfaces(
        ec2,
        &interfaces,
        &isolation,
        flush.as_deref(),
        Some(false),
        timeline,
        &mut failures,
    )
    .await;
    let restored = moved
        .iter()
        .filter(|(_, m)| m.isolated && !m.done)
        .map(|(id, _)| id.clone())
        .collect();
    let removed = failures
        .ok(
            "network ACL allow rules of the collection path",
            acl::remove(ec2, &vpc_id, &addresses, timeline).await,
        )
        .unwrap_or_default();
    failures.into_result()?;

    let mut problems = isolation_problems(ec2, instance_id, &vpc_id, &isolation, false).await?;
    problems.extend(acl::leftovers(ec2, &vpc_id, &addresses).await?);
    if !problems.is_empty() {
        return Err(StepError::ContainmentNotVerified(problems.join("; ")));
    }
    Ok(Undone {
        isolation_group_id: isolation,
        restored,
        removed,
    })
}
