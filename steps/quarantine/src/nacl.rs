//! Network ACL deny rules for the instance's own addresses (option `network: "sg+nacl"`).
//!
//! Security groups cannot end a connection that they track automatically (through a NAT gateway,
//! a Network or Gateway Load Balancer, an interface endpoint, a transit gateway, an egress-only
//! internet gateway, ICMP...): the isolation group stops new flows, not those. Network ACLs are
//! stateless, "adding a network ACL that blocks traffic in either direction breaks existing
//! connections" (EC2 User Guide, Security group connection tracking:
//! <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html>).
//!
//! # Which ACL sees which packet
//!
//! - "We evaluate the network ACL rules when traffic enters and leaves the subnet, not as it is
//!   routed within a subnet"; "each rule has a number from 1 to 32766. We evaluate the rules in
//!   order, starting with the lowest numbered rule [...] If the traffic matches a rule, the rule is
//!   applied and we do not evaluate any additional rules"
//!   (<https://docs.aws.amazon.com/vpc/latest/userguide/nacl-basics.html>).
//! - An inbound rule names the traffic's *source*, an outbound rule its *destination*
//!   (<https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html>).
//!
//! So a rule whose CIDR is one of the instance's addresses (a /32 or /128, or a prefix delegated
//! to its interface) matches a packet *from* the instance entering another subnet (inbound) and a
//! packet *to* the instance leaving another subnet (outbound), and nothing else: it blocks nobody
//! but this instance. In the instance's own subnet it never matches: the instance's packets leave
//! that subnet with the remote address as destination and enter it with the remote address as
//! source. Hence:
//!
//! - the rules go into **every ACL of the VPC associated with a subnet other than the address's
//!   own**. A NAT gateway is a network interface in its own subnet ("This action creates a network
//!   interface in the specified subnet", CreateNatGateway,
//!   <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateNatGateway.html>): the
//!   instance's packet enters the NAT gateway's subnet with the instance's address as source
//!   (the inbound deny matches) and the reply leaves it, translated back, with the instance's
//!   address as destination (the outbound deny matches); this is why that subnet's ACL must allow
//!   the private subnet's traffic for NAT to work at all
//!   (<https://repost.aws/knowledge-center/vpc-troubleshoot-nat-gateway-connection>). The same
//!   holds for load balancer nodes, interface endpoints, transit gateway attachments and firewall
//!   endpoints in other subnets, and for every other instance of the VPC outside the subnet;
//! - what no ACL can reach is recorded as a gap: traffic within the instance's own subnets (its
//!   same-subnet peers, NAT gateways, endpoints and load balancer nodes are listed), and paths
//!   that leave the VPC straight from the instance's subnet (internet gateway, egress-only
//!   internet gateway, virtual private gateway, peering, gateway endpoints), where only that
//!   subnet's ACL is crossed and any rule that matched would match every instance of the subnet.
//!
//! # Rule numbers and quota
//!
//! Rules are numbered from Cordon's range 1–99 (AWS's own default ACL rules are 100 and 101, and
//! AWS recommends numbering in steps of 10 or 100, so most of these numbers are free): the
//! **highest** number that is free in that direction (numbers are unique per direction across
//! IPv4 and IPv6, `NetworkAclEntryAlreadyExists`) **and** lower than every allow rule whose CIDR
//! contains the address, since a lower allow rule would match first. The highest, so that the
//! numbers below a deny rule stay free: while a collection runs inside containment, the
//! collection path's allow rules for the same address must come before it
//! ([`crate::collection`]), and they take the highest free number below it. A deny rule for
//! exactly the address, all protocols, already below every such allow rule (an earlier run,
//! another incident for the same instance, a responder) is reused, so reruns converge without
//! duplicates. A number taken meanwhile by a concurrent execution (`NetworkAclEntryAlreadyExists`)
//! is re-planned from a fresh describe, a bounded number of times.
//!
//! "Rules per network ACL: 20 [...] the one-way quota for a single network ACL [...] enforced
//! separately for IPv4 rules and IPv6 rules [...] includes the default deny rules", adjustable to
//! 40 (<https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html#vpc-limits-nacls>).
//! The quota in force is not readable without Service Quotas, so it is respected by EC2's own
//! answer: `NetworkAclEntryLimitExceeded` (a documented refusal,
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>) leaves that
//! address unprotected in that ACL and is recorded as a gap, not a failure: the security-group
//! isolation stands either way. No free number below the first matching allow rule is a gap too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use aws_sdk_ec2::types::{NetworkAcl, NetworkAclEntry, PortRange, RuleAction};
use cordon_common::lookup::filter;
use cordon_common::timeline::actions;
use cordon_common::timeline::Timeline;
use cordon_common::{Gap, StepError};
use serde::Serialize;
use serde_json::{json, Value};

use crate::STEP;

/// The rule numbers Cordon uses: below AWS's default rules (100, 101) and the usual numbering.
pub const RULE_RANGE: std::ops::RangeInclusive<i32> = 1..=99;
/// How often a rule number taken meanwhile by a concurrent execution is re-planned. Every round
/// re-reads the ACL and at least one of the writers that chose the same number wins, so N
/// concurrent responses in one ACL need at most N rounds: 32 covers a burst in one VPC (the
/// reserved concurrency keeps far fewer running at once).
pub(crate) const MAX_ATTEMPTS: usize = 32;
const ACTION: &str = actions::NACL_DENY;

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr { addr, len })
    }

    /// A single address: /32 or /128.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    fn bits(&self) -> (u128, u8) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn network(&self, len: u8) -> u128 {
        let (bits, width) = self.bits();
        let host_bits = u32::from(width - len);
        if host_bits >= 128 {
            0
        } else {
            (bits >> host_bits) << host_bits
        }
    }

    /// Whether every address of `other` is in `self` (same family only).
    pub fn contains(&self, other: &Cidr) -> bool {
        self.is_ipv6() == other.is_ipv6()
            && self.len <= other.len
            && self.network(self.len) == other.network(self.len)
    }

    /// Same network, whatever the spelling (EC2 answers the canonical form).
    pub fn same_network(&self, other: &Cidr) -> bool {
        self.len == other.len && self.contains(other)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One of the instance's addresses (or delegated prefixes), with where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub cidr: Cidr,
    pub subnet_id: String,
    pub network_interface_id: String,
}

/// A deny rule Cordon made or found in place for this instance: what a release removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenyRule {
    pub network_acl_id: String,
    pub rule_number: i32,
    /// `true`: outbound (matches the destination); `false`: inbound (matches the source).
    pub egress: bool,
    pub cidr: String,
    pub network_interface_id: String,
    /// The subnets (other than the address's own) whose boundary this rule guards.
    pub subnet_ids: Vec<String>,
    /// `true` when this execution created it; `false` when it was already there.
    pub created: bool,
}

/// What the network ACL part of quarantine did.
#[derive(Debug, Clone, Serialize)]
pub struct AclOutcome {
    /// `"sg+nacl"` or `"sg"` (the incident's `options.network`).
    pub mode: &'static str,
    pub rules: Vec<DenyRule>,
}

/// An ACL entry reduced to what rule planning needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub number: i32,
    pub egress: bool,
    pub allow: bool,
    pub all_protocols: bool,
    /// The port range of a TCP rule (protocol 6); `None` for any other rule.
    pub tcp_ports: Option<(i32, i32)>,
    pub cidr: Option<Cidr>,
}

impl Entry {
    fn from_sdk(e: &NetworkAclEntry) -> Option<Entry> {
        Some(Entry {
            number: e.rule_number()?,
            egress: e.egress()?,
            allow: e.rule_action() == Some(&RuleAction::Allow),
            all_protocols: e.protocol() == Some("-1"),
            tcp_ports: match (e.protocol(), e.port_range()) {
                (Some("6"), Some(r)) => Some((r.from()?, r.to()?)),
                _ => None,
            },
            cidr: e.cidr_block().or(e.ipv6_cidr_block()).and_then(Cidr::parse),
        })
    }
}

/// Where this address's rule goes in one direction of one ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A deny rule for exactly this address, all protocols, already takes effect.
    Present(i32),
    /// Create the rule with this number.
    Free(i32),
    /// Nothing free in Cordon's range below `before` (the first allow rule that matches).
    NoRoom { before: i32 },
}

/// Plans the rule for `cidr` in direction `egress` given the ACL's entries (pure).
pub(crate) fn slot(entries: &[Entry], egress: bool, cidr: &Cidr) -> Slot {
    let dir = || entries.iter().filter(|e| e.egress == egress);
    // The first allow rule that could match this address's traffic: ours must come before it.
    let first_allow = dir()
        .filter(|e| e.allow && e.cidr.is_some_and(|c| c.contains(cidr)))
        .map(|e| e.number)
        .min()
        .unwrap_or(i32::MAX);
    if let Some(n) = dir()
        .filter(|e| {
            !e.allow
                && e.all_protocols
                && e.number < first_allow
                && e.cidr.is_some_and(|c| c.same_network(cidr))
        })
        .map(|e| e.number)
        .min()
    {
        return Slot::Present(n);
    }
    let used: BTreeSet<i32> = dir().map(|e| e.number).collect();
    RULE_RANGE
        .rev()
        .skip_while(|n| *n >= first_allow)
        .find(|n| !used.contains(n))
        .map(Slot::Free)
        .unwrap_or(Slot::NoRoom {
            before: first_allow.min(*RULE_RANGE.end() + 1),
        })
}

pub(crate) fn direction(egress: bool) -> &'static str {
    if egress {
        "outbound"
    } else {
        "inbound"
    }
}

/// The ACL's subnets other than `own`: where a rule for an address of `own` takes effect.
fn guarded_subnets(acl: &NetworkAcl, own: &str) -> Vec<String> {
    let mut subnets: Vec<String> = acl
        .associations()
        .iter()
        .filter_map(|a| a.subnet_id())
        .filter(|s| *s != own)
        .map(str::to_owned)
        .collect();
    subnets.sort();
    subnets.dedup();
    subnets
}

pub(crate) async fn describe_acls(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: Option<&str>,
    ids: &[String],
) -> Result<Vec<NetworkAcl>, StepError> {
    let mut acls = Vec::new();
    let mut token = None;
    loop {
        let mut req = ec2.describe_network_acls().set_next_token(token);
        if let Some(vpc) = vpc_id {
            req = req.filters(filter("vpc-id", vpc));
        }
        if !ids.is_empty() {
            req = req.set_network_acl_ids(Some(ids.to_vec()));
        }
        let page = req
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeNetworkAcls", e))?;
        acls.extend(page.network_acls().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    acls.sort_by(|a, b| a.network_acl_id().cmp(&b.network_acl_id()));
    Ok(acls)
}

pub(crate) fn entries_of(acl: &NetworkAcl) -> Vec<Entry> {
    acl.entries().iter().filter_map(Entry::from_sdk).collect()
}

/// What [`deny_addresses`] did: rules, gaps and the failures to report after everything else ran.
#[derive(Debug, Default)]
pub struct Applied {
    pub rules: Vec<DenyRule>,
    pub gaps: Vec<Gap>,
    pub failures: Vec<(String, StepError)>,
}

/// Adds (or finds) an inbound and an outbound deny rule for each address in every ACL of the VPC
/// that guards a subnet other than the address's own. Never fails part-way: every ACL and address
/// is attempted, and failures are returned with the rest.
#[tracing::instrument(skip_all, fields(vpc_id))]
pub async fn deny_addresses(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    addresses: &[Address],
    timeline: &mut Timeline,
) -> Applied {
    let mut out = Applied::default();
    let acls = match describe_acls(ec2, Some(vpc_id), &[]).await {
        Ok(acls) => acls,
        Err(e) => {
            out.failures.push(("network ACLs of the VPC".into(), e));
            return out;
        }
    };
    for acl in &acls {
        let Some(acl_id) = acl.network_acl_id() else {
            continue;
        };
        let mut entries = entries_of(acl);
        for address in addresses {
            let subnets = guarded_subnets(acl, &address.subnet_id);
            if subnets.is_empty() {
                continue; // only the address's own subnet (or none): the rule could never match
            }
            for egress in [false, true] {
                match deny_one(
                    ec2,
                    acl_id,
                    &mut entries,
                    egress,
                    address,
                    &subnets,
                    timeline,
                )
                .await
                {
                    Ok(Placed::Rule(rule)) => out.rules.push(rule),
                    Ok(Placed::Gap(gap)) => out.gaps.push(gap),
                    Err(e) => out.failures.push((
                        format!(
                            "{} deny rule for {} in {acl_id}",
                            direction(egress),
                            address.cidr
                        ),
                        e,
                    )),
                }
            }
        }
    }
    out
}

enum Placed {
    Rule(DenyRule),
    Gap(Gap),
}

fn rule_json(number: i32, egress: bool, cidr: &Cidr) -> Value {
    json!({
        "rule_number": number,
        "egress": egress,
        "cidr": cidr.to_string(),
        "rule_action": "deny",
        "protocol": "-1",
    })
}

/// What [`create_entry`] did.
pub(crate) enum Created {
    Done,
    /// The number was taken meanwhile (`NetworkAclEntryAlreadyExists`: a concurrent execution, a
    /// responder): `entries` now holds the ACL as AWS has it, to plan again from.
    Taken,
    /// `NetworkAclEntryLimitExceeded`: the ACL holds its quota of rules in that direction.
    Full(StepError),
}

/// Creates `entry` (its number, direction, CIDR, action, and TCP ports or all protocols) in
/// `acl_id`; on success it joins `entries`. The one place where both the deny rules and the
/// collection path's allow rules are written, so that they share the race and quota handling.
pub(crate) async fn create_entry(
    ec2: &aws_sdk_ec2::Client,
    acl_id: &str,
    entry: Entry,
    entries: &mut Vec<Entry>,
) -> Result<Created, StepError> {
    let Some(cidr) = entry.cidr else {
        return Err(StepError::invalid("a network ACL entry needs a CIDR"));
    };
    let mut req = ec2
        .create_network_acl_entry()
        .network_acl_id(acl_id)
        .rule_number(entry.number)
        .rule_action(if entry.allow {
            RuleAction::Allow
        } else {
            RuleAction::Deny
        })
        .egress(entry.egress);
    req = match entry.tcp_ports {
        Some((from, to)) => req
            .protocol("6")
            .port_range(PortRange::builder().from(from).to(to).build()),
        None => req.protocol("-1"),
    };
    req = if cidr.is_ipv6() {
        req.ipv6_cidr_block(cidr.to_string())
    } else {
        req.cidr_block(cidr.to_string())
    };
    match req.send().await {
        Ok(_) => {
            entries.push(entry);
            Ok(Created::Done)
        }
        Err(e) => {
            let err = StepError::aws("CreateNetworkAclEntry", e);
            match err.aws_code() {
                Some("NetworkAclEntryAlreadyExists") => {
                    let fresh = describe_acls(ec2, None, &[acl_id.to_owned()]).await?;
                    *entries = fresh.first().map(entries_of).unwrap_or_default();
                    Ok(Created::Taken)
                }
                Some("NetworkAclEntryLimitExceeded") => Ok(Created::Full(err)),
                _ => Err(err),
            }
        }
    }
}

async fn deny_one(
    ec2: &aws_sdk_ec2::Client,
    acl_id: &str,
    entries: &mut Vec<Entry>,
    egress: bool,
    address: &Address,
    subnets: &[String],
    timeline: &mut Timeline,
) -> Result<Placed, StepError> {
    let cidr = address.cidr;
    let rule = |number: i32, created: bool| DenyRule {
        network_acl_id: acl_id.to_owned(),
        rule_number: number,
        egress,
        cidr: cidr.to_string(),
        network_interface_id: address.network_interface_id.clone(),
        subnet_ids: subnets.to_vec(),
        created,
    };
    for _ in 0..MAX_ATTEMPTS {
        let number = match slot(entries, egress, &cidr) {
            Slot::Present(n) => {
                let found = rule_json(n, egress, &cidr);
                timeline.record(ACTION, acl_id, found.clone(), found);
                return Ok(Placed::Rule(rule(n, false)));
            }
            Slot::NoRoom { before } => {
                return Ok(Placed::Gap(Gap::new(
                    STEP,
                    format!(
                        "network ACL {acl_id}: no {} deny rule for {cidr}",
                        direction(egress)
                    ),
                    format!(
                        "no free rule number in Cordon's range {}-{} below {before}, the first allow rule matching the address (rules are evaluated lowest number first)",
                        RULE_RANGE.start(),
                        RULE_RANGE.end()
                    ),
                )));
            }
            Slot::Free(n) => n,
        };
        let after = rule_json(number, egress, &cidr);
        timeline.intend(ACTION, acl_id, &Value::Null, &after);
        let entry = Entry {
            number,
            egress,
            allow: false,
            all_protocols: true,
            tcp_ports: None,
            cidr: Some(cidr),
        };
        match create_entry(ec2, acl_id, entry, entries).await? {
            Created::Done => {
                timeline.record(ACTION, acl_id, Value::Null, after);
                return Ok(Placed::Rule(rule(number, true)));
            }
            Created::Taken => {}
            Created::Full(err) => {
                return Ok(Placed::Gap(Gap::new(
                    STEP,
                    format!(
                        "network ACL {acl_id}: no {} deny rule for {cidr}",
                        direction(egress)
                    ),
                    format!(
                        "{err}: the ACL holds its quota of rules per direction (20 by default, IPv4 and IPv6 counted separately, default deny included)"
                    ),
                )));
            }
        }
    }
    Err(StepError::ContainmentNotVerified(format!(
        "{acl_id}: rule numbers for {cidr} ({}) kept being taken by others ({MAX_ATTEMPTS} attempts)",
        direction(egress)
    )))
}

/// Reads the ACLs again: every rule is there as recorded and no allow rule matching its address
/// comes before it. Returns the problems found.
pub async fn verify(
    ec2: &aws_sdk_ec2::Client,
    rules: &[DenyRule],
) -> Result<Vec<String>, StepError> {
    let ids: BTreeSet<String> = rules.iter().map(|r| r.network_acl_id.clone()).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let acls = describe_acls(ec2, None, &ids.into_iter().collect::<Vec<_>>()).await?;
    let by_id: BTreeMap<&str, Vec<Entry>> = acls
        .iter()
        .filter_map(|a| Some((a.network_acl_id()?, entries_of(a))))
        .collect();
    let mut problems = Vec::new();
    for r in rules {
        let Some(cidr) = Cidr::parse(&r.cidr) else {
            problems.push(format!("{}: unreadable CIDR {}", r.network_acl_id, r.cidr));
            continue;
        };
        let Some(entries) = by_id.get(r.network_acl_id.as_str()) else {
            problems.push(format!("network ACL {} not found", r.network_acl_id));
            continue;
        };
        let dir = direction(r.egress);
        let present = entries.iter().any(|e| {
            e.number == r.rule_number
                && e.egress == r.egress
                && !e.allow
                && e.all_protocols
                && e.cidr.is_some_and(|c| c.same_network(&cidr))
        });
        if !present {
            problems.push(format!(
                "{}: {dir} deny rule {} for {cidr} is missing",
                r.network_acl_id, r.rule_number
            ));
        } else if let Some(allow) = entries.iter().find(|e| {
            e.egress == r.egress
                && e.allow
                && e.number < r.rule_number
                && e.cidr.is_some_and(|c| c.contains(&cidr))
        }) {
            problems.push(format!(
                "{}: allow rule {} matches {cidr} before {dir} deny rule {}",
                r.network_acl_id, allow.number, r.rule_number
            ));
        }
    }
    Ok(problems)
}

/// The gaps no ACL rule can close for an instance in `subnets`: traffic within each subnet (its
/// other interfaces are listed, the service-managed ones by type), and paths that leave the VPC
/// straight from the subnet. `own` are the instance's interfaces.
pub async fn unreachable(
    ec2: &aws_sdk_ec2::Client,
    subnets: &BTreeMap<String, Vec<Cidr>>,
    own: &BTreeSet<String>,
) -> Result<Vec<Gap>, StepError> {
    let mut peers: BTreeMap<String, (Vec<String>, usize)> = BTreeMap::new();
    if !subnets.is_empty() {
        let mut token = None;
        loop {
            let page = ec2
                .describe_network_interfaces()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("subnet-id")
                        .set_values(Some(subnets.keys().cloned().collect()))
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| StepError::aws("DescribeNetworkInterfaces", e))?;
            for eni in page.network_interfaces() {
                let (Some(id), Some(subnet)) = (eni.network_interface_id(), eni.subnet_id()) else {
                    continue;
                };
                if own.contains(id) {
                    continue;
                }
                let entry = peers.entry(subnet.to_owned()).or_default();
                let kind = eni
                    .interface_type()
                    .map(|t| t.as_str())
                    .unwrap_or("interface");
                if kind != "interface" || eni.requester_managed() == Some(true) {
                    entry.0.push(format!(
                        "{id} ({kind}{})",
                        eni.description()
                            .filter(|d| !d.is_empty())
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    ));
                } else {
                    entry.1 += 1;
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    let mut gaps = Vec::new();
    for (subnet, cidrs) in subnets {
        let addresses = cidrs
            .iter()
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let (managed, instances) = peers.get(subnet).cloned().unwrap_or_default();
        let mut within = Vec::new();
        if !managed.is_empty() {
            within.push(format!("service interfaces {}", managed.join(", ")));
        }
        within.push(format!("{instances} other interface(s)"));
        gaps.push(Gap::new(
            STEP,
            format!("network ACL: traffic within {subnet}"),
            format!(
                "network ACL rules are evaluated when traffic enters or leaves a subnet, not within it: flows between {addresses} and {subnet}'s {} rely on the security groups alone (a flow tracked automatically, e.g. through a NAT gateway, load balancer or interface endpoint in this subnet, lasts until idle for the connection-tracking timeout)",
                within.join(" and ")
            ),
        ));
        gaps.push(Gap::new(
            STEP,
            format!("network ACL: paths leaving the VPC from {subnet}"),
            format!(
                "packets routed straight from {subnet} to an internet gateway, egress-only internet gateway, virtual private gateway, VPC peering connection or gateway endpoint cross only {subnet}'s own ACL, whose inbound rules match the remote source and outbound rules the remote destination: no rule there can single out {addresses} without blocking the whole subnet"
            ),
        ));
    }
    Ok(gaps)
}

/// The gap recorded when the responder chose security groups only.
pub fn not_requested() -> Gap {
    Gap::new(
        STEP,
        "network ACL deny rules",
        "not applied: options.network is \"sg\". Flows that security groups track automatically (through a NAT gateway, Network or Gateway Load Balancer, interface endpoint, transit gateway, egress-only internet gateway; ICMP) survive the isolation group until idle for the connection-tracking timeout",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    fn allow(number: i32, egress: bool, c: &str) -> Entry {
        Entry {
            number,
            egress,
            allow: true,
            all_protocols: true,
            tcp_ports: None,
            cidr: Some(cidr(c)),
        }
    }

    fn deny(number: i32, egress: bool, c: &str) -> Entry {
        Entry {
            allow: false,
            ..allow(number, egress, c)
        }
    }

    /// AWS's default ACL: allow all at 100 (IPv4) and 101 (IPv6), the default deny rules.
    fn default_acl() -> Vec<Entry> {
        let mut v = Vec::new();
        for egress in [false, true] {
            v.push(allow(100, egress, "0.0.0.0/0"));
            v.push(allow(101, egress, "::/0"));
            v.push(deny(32767, egress, "0.0.0.0/0"));
            v.push(deny(32768, egress, "::/0"));
        }
        v
    }

    #[test]
    fn cidr_containment_is_by_network_and_family() {
        assert!(cidr("10.0.0.0/16").contains(&cidr("10.0.1.5/32")));
        assert!(!cidr("10.1.0.0/16").contains(&cidr("10.0.1.5/32")));
        assert!(cidr("0.0.0.0/0").contains(&cidr("10.0.1.5")));
        assert!(!cidr("::/0").contains(&cidr("10.0.1.5/32")));
        assert!(cidr("2600:1f18::/56").contains(&cidr("2600:1f18:0:1::5/128")));
        assert!(cidr("2600:1f18:0:0:0:0:0:5/128").same_network(&cidr("2600:1f18::5/128")));
        assert_eq!(cidr("2600:1F18:0::5/128").to_string(), "2600:1f18::5/128");
        assert!(Cidr::parse("10.0.0.1/33").is_none());
    }

    #[test]
    fn the_highest_free_number_goes_below_the_default_allow_rule() {
        let entries = default_acl();
        assert_eq!(slot(&entries, false, &cidr("10.0.1.5/32")), Slot::Free(99));
        assert_eq!(
            slot(&entries, true, &cidr("2600:1f18::5/128")),
            Slot::Free(99)
        );
    }

    #[test]
    fn numbers_are_unique_per_direction_across_families() {
        let mut entries = default_acl();
        entries.push(deny(99, false, "2600:1f18::9/128")); // another instance's IPv6 rule
        entries.push(deny(98, true, "10.0.9.9/32"));
        assert_eq!(slot(&entries, false, &cidr("10.0.1.5/32")), Slot::Free(98));
        assert_eq!(slot(&entries, true, &cidr("10.0.1.5/32")), Slot::Free(99));
    }

    #[test]
    fn an_effective_deny_for_the_address_is_reused() {
        let mut entries = default_acl();
        entries.push(deny(7, false, "10.0.1.5/32"));
        assert_eq!(
            slot(&entries, false, &cidr("10.0.1.5/32")),
            Slot::Present(7)
        );
        // Not in the other direction, and not for another address.
        assert_eq!(slot(&entries, true, &cidr("10.0.1.5/32")), Slot::Free(99));
        assert_eq!(slot(&entries, false, &cidr("10.0.1.6/32")), Slot::Free(99));
    }

    #[test]
    fn a_deny_behind_a_matching_allow_does_not_count() {
        let mut entries = default_acl();
        entries.push(deny(200, false, "10.0.1.5/32")); // after allow-all at 100: never reached
        assert_eq!(slot(&entries, false, &cidr("10.0.1.5/32")), Slot::Free(99));
    }

    #[test]
    fn the_rule_goes_before_the_first_allow_that_matches_the_address() {
        let entries = vec![
            allow(1, false, "192.168.0.0/16"), // does not match 10.0.1.5: may stay first
            allow(3, false, "10.0.0.0/8"),
            deny(2, false, "172.16.0.0/12"),
            deny(32767, false, "0.0.0.0/0"),
        ];
        assert_eq!(
            slot(&entries, false, &cidr("10.0.1.5/32")),
            Slot::NoRoom { before: 3 }
        );
        let entries = vec![allow(5, false, "10.0.0.0/8"), deny(4, false, "1.1.1.1/32")];
        assert_eq!(slot(&entries, false, &cidr("10.0.1.5/32")), Slot::Free(3));
    }

    #[test]
    fn a_full_cordon_range_is_no_room() {
        let mut entries = default_acl();
        for n in RULE_RANGE {
            entries.push(deny(n, true, &format!("10.9.{}.{}/32", n / 250, n % 250)));
        }
        assert_eq!(
            slot(&entries, true, &cidr("10.0.1.5/32")),
            Slot::NoRoom { before: 100 }
        );
    }

    #[test]
    fn an_acl_without_allow_rules_still_gets_the_highest_free_number() {
        let entries = vec![deny(32767, false, "0.0.0.0/0")];
        assert_eq!(slot(&entries, false, &cidr("10.0.1.5/32")), Slot::Free(99));
    }
}
