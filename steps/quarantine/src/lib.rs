//! Step 7, quarantine. Takes the incident; cuts the instance off the network and proves it:
//! 1. finds or creates, in the instance's VPC, the isolation group (no rules at all: its default
//!    allow-all egress rule is revoked) and the flush group (all traffic in and out);
//! 2. moves **every** network interface first into the flush group, then into the isolation group.
//!    Changing an interface's groups does not end connections that security groups already track;
//!    flows allowed by all-traffic rules both ways are *untracked*, and untracked flows are cut as
//!    soon as a group without rules applies
//!    (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html>,
//!    and AWS's own containment runbook, which moves every interface to a temporary "all access"
//!    group and then to the containment group:
//!    <https://docs.aws.amazon.com/systems-manager-automation-runbooks/latest/userguide/automation-awssupport-containec2instance.html>;
//!    that the move converts flows already tracked is that runbook's technique, not something the
//!    EC2 page states, and the README lists it as not verified). The flush group is
//!    applied for the time of one API call, and never left applied: every interface is processed
//!    before anything is reported, and one whose move into isolation failed gets a second attempt
//!    before the step fails;
//! 3. lowers every interface's connection-tracking idle timeouts to their minimums, so that flows
//!    tracked whatever the rules say end within a minute of going idle ([`conntrack`]);
//! 4. with `options.network` `"sg+nacl"` (the default), denies the instance's own addresses in
//!    every network ACL that can see its packets, both directions ([`nacl`]): ACLs are stateless,
//!    so they cut the automatically tracked flows (a reverse shell through a NAT gateway) that the
//!    groups cannot; what no ACL can reach is a recorded gap. `"sg"` records that gap instead;
//! 5. deregisters the instance from every ELBv2 target group that has it;
//! 6. tags it `cordon:status=quarantined` with the incident ID;
//! 7. verifies by describing again: every interface has exactly the isolation group and the
//!    minimum timeouts, that group has no rules, every deny rule is in place before any allow
//!    rule that matches its address, no target group has the instance; otherwise
//!    `ContainmentNotVerified`.
//!
//! The measures are independent: a failed one does not stop the others (each failure is kept and
//! the step fails with all of them once everything has been attempted).
//!
//! Groups are found by name and tag per VPC, so reruns and other incidents reuse them. An
//! interface counts as done when it has only the isolation group and its timeouts are at their
//! minimums (the last change made to it, and only made once its flush succeeded): it is left
//! alone. Any other interface goes through flush and isolation again, so a rerun after a failed
//! flush still flushes.
//!
//! Beside the changes, it gathers the facts of the instance's network (`network`, see [`facts`]),
//! at the same time as it isolates, for the containment table of the notification.
//!
//! The same function opens and closes the network path the SSM agent needs while a collection
//! runs inside containment: event `action` `"open-collection-path"` or `"close-collection-path"`
//! (see [`collection`]); without `action` it quarantines.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    Instance, IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroup, Tag, TagSpecification,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use cordon_common::incident::NetworkIsolation;
use cordon_common::lookup::{self, filter, TargetRegistration};
use cordon_common::network::NetworkFacts;
use cordon_common::timeline::actions;
use cordon_common::timeline::Timeline;
use cordon_common::{lambda, Action, Gap, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub mod collection;
pub mod conntrack;
pub mod facts;
pub mod nacl;

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
    /// What to do; absent: quarantine.
    #[serde(default)]
    pub action: Option<EventAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventAction {
    /// [`collection::open`]: the instance's interfaces into the collection group, the ACL allow
    /// rules before Cordon's deny rules.
    OpenCollectionPath,
    /// [`collection::close`]: back into the isolation group, the ACL allow rules removed.
    CloseCollectionPath,
}

/// What the function returns, by action (serialized as the inner value).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Response {
    Quarantined(Box<Output>),
    Opened(collection::Opened),
    Closed(collection::Closed),
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub isolation_group_id: String,
    pub flush_group_id: String,
    pub network_interface_ids: Vec<String>,
    pub deregistered: Vec<TargetRegistration>,
    pub verified: bool,
    /// The instance type's support for configurable idle timeouts, and what every interface has
    /// now (`null` when not configurable).
    pub connection_tracking: ConnectionTracking,
    /// The network ACL deny rules for the instance's addresses (what a release removes).
    pub network_acl: nacl::AclOutcome,
    /// The facts of the instance's network, for the containment table (absent if not gathered).
    pub network: Option<NetworkFacts>,
    pub actions: Vec<Action>,
    pub gaps: Vec<Gap>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionTracking {
    pub instance_type: Option<String>,
    pub hypervisor: Option<String>,
    pub configurable: bool,
    /// The instance type's defaults (what an interface without its own setting has).
    pub defaults: conntrack::Timeouts,
    /// What every interface has after quarantine (read back), when configurable.
    pub timeouts: Option<conntrack::Timeouts>,
}

pub async fn handle(clients: &Clients, event: Value) -> Result<Response, StepError> {
    let event: Event = lambda::parse(event)?;
    let incident = Incident::from_value(event.incident)?;
    match event.action {
        None => quarantine(clients, &incident)
            .await
            .map(|o| Response::Quarantined(Box::new(o))),
        Some(EventAction::OpenCollectionPath) => collection::open(&clients.ec2, &incident)
            .await
            .map(Response::Opened),
        Some(EventAction::CloseCollectionPath) => collection::close(&clients.ec2, &incident)
            .await
            .map(Response::Closed),
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Role {
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

/// One network interface of the instance as DescribeInstances reported it.
#[derive(Debug, Clone)]
pub(crate) struct Interface {
    pub(crate) id: String,
    pub(crate) subnet_id: String,
    pub(crate) groups: Vec<String>,
    pub(crate) timeouts: Option<conntrack::Timeouts>,
    /// Private IPv4 and IPv6 addresses, and prefixes delegated to the interface.
    pub(crate) cidrs: Vec<nacl::Cidr>,
}

impl Interface {
    /// Every address of the interface with where it lives, as the ACL rules name them.
    pub(crate) fn addresses(&self) -> impl Iterator<Item = nacl::Address> + '_ {
        self.cidrs.iter().map(|cidr| nacl::Address {
            cidr: *cidr,
            subnet_id: self.subnet_id.clone(),
            network_interface_id: self.id.clone(),
        })
    }
}

pub(crate) fn interfaces_of(instance: &Instance) -> Vec<Interface> {
    instance
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            let mut cidrs = Vec::new();
            let hosts = eni
                .private_ip_addresses()
                .iter()
                .filter_map(|a| a.private_ip_address())
                .chain(eni.private_ip_address())
                .chain(eni.ipv6_addresses().iter().filter_map(|a| a.ipv6_address()));
            for host in hosts {
                if let Ok(ip) = host.parse() {
                    cidrs.push(nacl::Cidr::host(ip));
                }
            }
            let prefixes = eni
                .ipv4_prefixes()
                .iter()
                .filter_map(|p| p.ipv4_prefix())
                .chain(eni.ipv6_prefixes().iter().filter_map(|p| p.ipv6_prefix()));
            cidrs.extend(prefixes.filter_map(nacl::Cidr::parse));
            cidrs.sort();
            cidrs.dedup();
            Some(Interface {
                id: eni.network_interface_id()?.to_owned(),
                subnet_id: eni.subnet_id().unwrap_or_default().to_owned(),
                groups: eni
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .map(str::to_owned)
                    .collect(),
                timeouts: eni
                    .connection_tracking_configuration()
                    .map(conntrack::Timeouts::from_instance),
                cidrs,
            })
        })
        .collect()
}

/// The failures of independent measures, kept until every measure has been attempted.
#[derive(Debug, Default)]
pub(crate) struct Failures(Vec<(String, StepError)>);

impl Failures {
    pub(crate) fn push(&mut self, what: impl Into<String>, err: StepError) {
        let what = what.into();
        tracing::error!(what = %what, error = %err, "containment measure failed; the others go on");
        self.0.push((what, err));
    }

    pub(crate) fn ok<T>(&mut self, what: &str, result: Result<T, StepError>) -> Option<T> {
        result.map_err(|e| self.push(what, e)).ok()
    }

    /// One error naming every failure. Its Step Functions name is the first deterministic one's
    /// (retrying cannot fix it), or `Transient` when all were transient (a retry of the whole,
    /// idempotent step can).
    pub(crate) fn into_result(mut self) -> Result<(), StepError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|(what, e)| format!("{what}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        let pick = self
            .0
            .iter()
            .position(|(_, e)| e.name() != "Transient")
            .unwrap_or(0);
        let (_, representative) = self.0.swap_remove(pick);
        Err(match representative {
            StepError::Aws {
                kind,
                operation,
                code,
                source,
                ..
            } => StepError::Aws {
                kind,
                operation,
                code,
                message,
                source,
            },
            StepError::ContainmentNotVerified(_) => StepError::ContainmentNotVerified(message),
            other => {
                tracing::error!(all = %message, "quarantine failures");
                other
            }
        })
    }
}

/// How one interface's move went.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moved {
    /// Already done by an earlier run: nothing changed.
    pub(crate) done: bool,
    pub(crate) flushed: bool,
    pub(crate) isolated: bool,
}

pub(crate) async fn set_groups(
    ec2: &aws_sdk_ec2::Client,
    eni_id: &str,
    group_id: &str,
) -> Result<(), StepError> {
    ec2.modify_network_interface_attribute()
        .network_interface_id(eni_id)
        .groups(group_id)
        .send()
        .await
        .map(drop)
        .map_err(|e| StepError::aws("ModifyNetworkInterfaceAttribute", e))
}

/// Every interface into the isolation group, through the flush group when there is one.
/// Processes every interface whatever happens to one; an interface whose move into isolation
/// failed is tried once more at the end, so that none stays in the flush group (or open).
pub(crate) async fn move_interfaces(
    ec2: &aws_sdk_ec2::Client,
    interfaces: &[Interface],
    isolation: &str,
    flush: Option<&str>,
    timeouts_configurable: Option<bool>,
    timeline: &mut Timeline,
    failures: &mut Failures,
) -> BTreeMap<String, Moved> {
    const MOVE: &str = actions::ISOLATE;
    let mut moved = BTreeMap::new();
    let mut again = Vec::new();
    for eni in interfaces {
        let isolated = eni.groups == [isolation];
        let timeouts_done = match timeouts_configurable {
            Some(false) => true,
            _ => eni.timeouts.is_some_and(|t| t.is_minimal()),
        };
        if isolated && timeouts_done {
            timeline.record(MOVE, &eni.id, json!(eni.groups), json!([isolation]));
            moved.insert(
                eni.id.clone(),
                Moved {
                    done: true,
                    flushed: false,
                    isolated: true,
                },
            );
            continue;
        }
        timeline.intend(MOVE, &eni.id, &json!(eni.groups), &json!([isolation]));
        let mut m = Moved::default();
        if let Some(flush) = flush {
            match set_groups(ec2, &eni.id, flush).await {
                Ok(()) => m.flushed = true,
                // Not flushed: it still goes into isolation (closed to new and untracked flows)
                // and its timeouts are left for the rerun, which then flushes it.
                Err(e) => failures.push(format!("{}: into the flush group", eni.id), e),
            }
        }
        match set_groups(ec2, &eni.id, isolation).await {
            Ok(()) => {
                m.isolated = true;
                timeline.record(MOVE, &eni.id, json!(eni.groups), json!([isolation]));
            }
            Err(e) => {
                failures.push(
                    format!(
                        "{}: into the isolation group{}",
                        eni.id,
                        if m.flushed {
                            " (from the flush group)"
                        } else {
                            ""
                        }
                    ),
                    e,
                );
                again.push(eni);
            }
        }
        moved.insert(eni.id.clone(), m);
    }
    for eni in again {
        match set_groups(ec2, &eni.id, isolation).await {
            Ok(()) => {
                tracing::warn!(eni = %eni.id, "isolated at the second attempt");
                timeline.record(MOVE, &eni.id, json!(eni.groups), json!([isolation]));
                if let Some(m) = moved.get_mut(&eni.id) {
                    m.isolated = true;
                }
            }
            Err(e) => {
                let flushed = moved.get(&eni.id).is_some_and(|m| m.flushed);
                let left_in = match flush {
                    // Never leave it open to all traffic: its own groups are less open than the
                    // flush group. (Its untracked flows were already made untracked; the rerun
                    // after the failure flushes it again.)
                    Some(flush) if flushed => match restore_groups(ec2, &eni.id, &eni.groups).await
                    {
                        Ok(()) => {
                            timeline.record(
                                "restore network interface groups",
                                &eni.id,
                                json!([flush]),
                                json!(eni.groups),
                            );
                            "its own groups again".to_owned()
                        }
                        Err(restore) => {
                            failures.push(
                                format!(
                                    "{}: back into its own groups from the flush group",
                                    eni.id
                                ),
                                restore,
                            );
                            format!("the flush group {flush}")
                        }
                    },
                    _ => "its own groups".to_owned(),
                };
                failures.push(
                    format!(
                        "{}: into the isolation group, second attempt (it is in {left_in})",
                        eni.id
                    ),
                    e,
                )
            }
        }
    }
    moved
}

/// The most of the execution's state the network facts may take. Every state's input and output
/// is limited to 256 KiB, and exceeding it is `States.DataLimitExceeded`, which `States.ALL` does
/// not catch (<https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html>,
/// <https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html>): a very large VPC
/// must not be able to fail the containment branch, so its facts are left out instead.
pub const MAX_FACTS_BYTES: usize = 64 * 1024;

fn facts_fit_in_state(facts: &cordon_common::network::NetworkFacts) -> bool {
    serde_json::to_vec(facts).is_ok_and(|v| v.len() <= MAX_FACTS_BYTES)
}

/// Puts an interface back on the groups it had before the response.
async fn restore_groups(
    ec2: &aws_sdk_ec2::Client,
    eni_id: &str,
    groups: &[String],
) -> Result<(), StepError> {
    ec2.modify_network_interface_attribute()
        .network_interface_id(eni_id)
        .set_groups(Some(groups.to_vec()))
        .send()
        .await
        .map(drop)
        .map_err(|e| StepError::aws("ModifyNetworkInterfaceAttribute", e))
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
    let interfaces = interfaces_of(&instance);
    let interface_ids: Vec<String> = interfaces.iter().map(|i| i.id.clone()).collect();

    // Read-only, and not on the path to isolation: runs beside it.
    let network = tokio::spawn({
        let (ec2, elbv2, instance) = (ec2.clone(), clients.elbv2.clone(), instance.clone());
        async move { facts::gather(&ec2, &elbv2, &instance).await }
    });

    let mut failures = Failures::default();
    let mut gaps = Vec::new();

    // The two groups and the instance type's timeout support, at the same time: isolation waits
    // for nothing else.
    let (mut isolation_timeline, mut flush_timeline) = (Timeline::new(STEP), Timeline::new(STEP));
    let (isolation, flush, support) = tokio::join!(
        ensure_group(ec2, &vpc_id, Role::Isolation, &mut isolation_timeline),
        ensure_group(ec2, &vpc_id, Role::Flush, &mut flush_timeline),
        conntrack::support(ec2, instance.instance_type()),
    );
    let isolation = failures.ok("isolation group", isolation);
    let flush = failures.ok("flush group", flush);
    let support = failures.ok("connection-tracking support of the instance type", support);

    let moved = match &isolation {
        Some(isolation) => {
            move_interfaces(
                ec2,
                &interfaces,
                isolation,
                flush.as_deref(),
                support.as_ref().map(|s| s.configurable),
                &mut timeline,
                &mut failures,
            )
            .await
        }
        None => BTreeMap::new(),
    };

    // Timeouts: on every interface, except one put into isolation without its flush (the rerun
    // must flush it, and it recognises a finished interface by its timeouts).
    match &support {
        Some(s) if !s.configurable => gaps.push(conntrack::unsupported(s)),
        Some(s) => {
            for eni in &interfaces {
                let m = moved.get(&eni.id).copied().unwrap_or_default();
                if m.isolated && !m.done && !m.flushed {
                    continue;
                }
                if let Err(e) =
                    conntrack::lower(ec2, &eni.id, eni.timeouts, s.defaults, &mut timeline).await
                {
                    failures.push(format!("{}: connection-tracking timeouts", eni.id), e);
                }
            }
        }
        None => {}
    }

    // Network ACL deny rules for every address of the instance.
    let network_acl = match incident.options.network {
        NetworkIsolation::Sg => {
            gaps.push(nacl::not_requested());
            nacl::AclOutcome {
                mode: "sg",
                rules: Vec::new(),
            }
        }
        NetworkIsolation::SgNacl => {
            let addresses: Vec<nacl::Address> =
                interfaces.iter().flat_map(Interface::addresses).collect();
            let applied = nacl::deny_addresses(ec2, &vpc_id, &addresses, &mut timeline).await;
            gaps.extend(applied.gaps);
            for (what, e) in applied.failures {
                failures.push(what, e);
            }
            let mut subnets: BTreeMap<String, Vec<nacl::Cidr>> = BTreeMap::new();
            for a in &addresses {
                subnets.entry(a.subnet_id.clone()).or_default().push(a.cidr);
            }
            let own: BTreeSet<String> = interface_ids.iter().cloned().collect();
            match nacl::unreachable(ec2, &subnets, &own).await {
                Ok(more) => gaps.extend(more),
                Err(e) => gaps.push(Gap::new(
                    STEP,
                    "network ACL: traffic within the instance's subnets",
                    format!("not evaluated by any network ACL; the interfaces that share the subnets could not be listed: {e}"),
                )),
            }
            nacl::AclOutcome {
                mode: "sg+nacl",
                rules: applied.rules,
            }
        }
    };

    const DEREGISTER: &str = actions::DEREGISTER;
    let registrations = match lookup::target_registrations(&clients.elbv2, Some(&vpc_id), id).await
    {
        Ok(r) => r,
        Err(e) => {
            failures.push("target groups", e);
            Vec::new()
        }
    };
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
        let sent = clients
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
            .map_err(|e| StepError::aws("DeregisterTargets", e));
        match sent {
            Ok(_) => timeline.record(
                DEREGISTER,
                &r.target_group_arn,
                json!({"id": id, "port": r.port}),
                json!(null),
            ),
            Err(e) => failures.push(format!("deregister from {}", r.target_group_arn), e),
        }
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
    let tagged = if before != after {
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
            .map(drop)
            .map_err(|e| StepError::aws("CreateTags", e))
    } else {
        Ok(())
    };
    match tagged {
        Ok(()) => timeline.record(TAG, id, before, after),
        Err(e) => failures.push("tag", e),
    }

    let checked = match (failures.into_result(), &isolation, &flush) {
        (Ok(()), Some(isolation), Some(flush)) => verify(
            clients,
            id,
            &vpc_id,
            isolation,
            support.as_ref().is_some_and(|s| s.configurable),
            &network_acl.rules,
        )
        .await
        .map(|()| (isolation.clone(), flush.clone())),
        (Err(e), _, _) => Err(e),
        // A missing group is always a recorded failure.
        _ => Err(StepError::ContainmentNotVerified(
            "security groups missing".into(),
        )),
    };
    let (isolation, flush) = match checked {
        Ok(groups) => groups,
        Err(e) => {
            network.abort();
            return Err(e);
        }
    };

    let network = match network.await {
        Ok(Ok(facts)) if !facts_fit_in_state(&facts) => {
            gaps.push(Gap::new(
                STEP,
                "network facts for the containment table",
                format!(
                    "the facts of VPC {} are larger than {MAX_FACTS_BYTES} bytes and were left out of the step's output: a state larger than Step Functions' 256 KiB payload quota fails with States.DataLimitExceeded, which no Catch handles; the containment table treats these paths as unknown",
                    facts.vpc_id
                ),
            ));
            None
        }
        Ok(Ok(facts)) => Some(facts),
        Ok(Err(e)) => {
            gaps.push(Gap::new(
                STEP,
                "network facts for the containment table",
                e.to_string(),
            ));
            None
        }
        Err(e) => {
            gaps.push(Gap::new(
                STEP,
                "network facts for the containment table",
                e.to_string(),
            ));
            None
        }
    };
    let support = support.unwrap_or_else(|| conntrack::Support {
        instance_type: None,
        hypervisor: None,
        configurable: false,
        defaults: conntrack::Timeouts::default(),
    });
    let mut actions = isolation_timeline.into_actions();
    actions.extend(flush_timeline.into_actions());
    actions.extend(timeline.into_actions());
    Ok(Output {
        isolation_group_id: isolation,
        flush_group_id: flush,
        network_interface_ids: interface_ids,
        deregistered: registrations,
        verified: true,
        connection_tracking: ConnectionTracking {
            timeouts: support
                .configurable
                .then_some(conntrack::Timeouts::MINIMUMS),
            instance_type: support.instance_type,
            hypervisor: support.hypervisor,
            configurable: support.configurable,
            defaults: support.defaults,
        },
        network_acl,
        network,
        actions,
        gaps,
    })
}

/// Describes everything again, from AWS, after the changes: the proof that containment holds
/// ("configuration verified": what AWS reports, read back).
async fn verify(
    clients: &Clients,
    instance_id: &str,
    vpc_id: &str,
    isolation: &str,
    timeouts_configurable: bool,
    acl_rules: &[nacl::DenyRule],
) -> Result<(), StepError> {
    let mut problems = isolation_problems(
        &clients.ec2,
        instance_id,
        vpc_id,
        isolation,
        timeouts_configurable,
    )
    .await?;
    problems.extend(nacl::verify(&clients.ec2, acl_rules).await?);
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

/// What keeps the instance from counting as isolated, read back from EC2: an interface with any
/// group but the isolation group (or, with `timeouts_configurable`, timeouts above the minimums),
/// an isolation group with rules. Empty when isolated.
pub(crate) async fn isolation_problems(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
    vpc_id: &str,
    isolation: &str,
    timeouts_configurable: bool,
) -> Result<Vec<String>, StepError> {
    let mut problems = Vec::new();
    let interfaces = ec2
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
        let timeouts = eni
            .connection_tracking_configuration()
            .map(conntrack::Timeouts::from_interface);
        if timeouts_configurable && !timeouts.is_some_and(|t| t.is_minimal()) {
            problems.push(format!(
                "{} has connection-tracking timeouts {timeouts:?}, expected {:?}",
                eni.network_interface_id().unwrap_or("?"),
                conntrack::Timeouts::MINIMUMS
            ));
        }
    }
    let group = describe_group(ec2, vpc_id, Role::Isolation).await?;
    match group {
        Some(g) if g.ip_permissions().is_empty() && g.ip_permissions_egress().is_empty() => {}
        Some(g) => problems.push(format!(
            "isolation group {isolation} has {} ingress and {} egress rules",
            g.ip_permissions().len(),
            g.ip_permissions_egress().len()
        )),
        None => problems.push(format!("isolation group {isolation} not found")),
    }
    Ok(problems)
}

async fn describe_group(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    role: Role,
) -> Result<Option<SecurityGroup>, StepError> {
    describe_group_named(ec2, vpc_id, role.name()).await
}

/// The VPC's security group of this name (names are unique per VPC).
pub(crate) async fn describe_group_named(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    name: &str,
) -> Result<Option<SecurityGroup>, StepError> {
    let out = ec2
        .describe_security_groups()
        .filters(filter("vpc-id", vpc_id))
        .filters(filter("group-name", name))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeSecurityGroups", e))?;
    Ok(out.security_groups().first().cloned())
}

/// Finds the VPC's group of this name, or creates it tagged `cordon:role=<role>`. A group that
/// another execution created a moment ago (`InvalidGroup.Duplicate`) is used as found.
pub(crate) async fn find_or_create_group(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    name: &str,
    role: &str,
    description: &str,
    timeline: &mut Timeline,
) -> Result<SecurityGroup, StepError> {
    if let Some(g) = describe_group_named(ec2, vpc_id, name).await? {
        return Ok(g);
    }
    let action = format!("create {role} security group");
    timeline.intend(&action, vpc_id, &json!(null), &json!(name));
    let created = ec2
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(Tag::builder().key(TAG_ROLE).value(role).build())
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
    describe_group_named(ec2, vpc_id, name)
        .await?
        .ok_or_else(|| {
            StepError::ContainmentNotVerified(format!("{name} group vanished after creation"))
        })
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
pub(crate) fn already(err: StepError, code: &str) -> Result<(), StepError> {
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
pub(crate) async fn ensure_group(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    role: Role,
    timeline: &mut Timeline,
) -> Result<String, StepError> {
    let description = match role {
        Role::Isolation => "Cordon isolation: no rules; quarantined instances only",
        Role::Flush => "Cordon flush: all traffic, applied for one call so tracked flows end",
    };
    let group =
        find_or_create_group(ec2, vpc_id, role.name(), role.tag(), description, timeline).await?;
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
