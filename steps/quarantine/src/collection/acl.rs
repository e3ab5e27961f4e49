//! Network ACL allow rules that let the collection path through Cordon's own deny rules.
//!
//! Quarantine's deny rules match the instance's address as the *source* of packets entering
//! another subnet and as the *destination* of packets leaving it ([`crate::nacl`]). The agent's
//! connection to an interface endpoint in another subnet crosses that subnet's ACL both ways, so
//! where that ACL holds Cordon's deny rules for the address the path needs, numbered before them
//! (rules are evaluated lowest number first and the first match applies,
//! <https://docs.aws.amazon.com/vpc/latest/userguide/nacl-basics.html>):
//!
//! - inbound, TCP 443 from the address (an inbound rule names the source,
//!   <https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html>): the requests;
//! - outbound, TCP 1024–65535 to the address: the replies. ACLs are stateless, so "responses to
//!   allowed inbound traffic are subject to the rules for outbound traffic"
//!   (nacl-basics), and they go to the client's ephemeral port, whose range the client's
//!   operating system chooses: 32768–61000 on many Linux kernels, 49152–65535 on Windows Server
//!   2008 and later; 1024–65535 covers every client
//!   (<https://docs.aws.amazon.com/vpc/latest/userguide/nacl-ephemeral-ports.html>).
//!
//! An ACL rule names one CIDR, not a destination: the inbound rule admits TCP 443 from the
//! address to anything in the subnet, and the security group (the collection group) is what
//! narrows it to the endpoints. Traffic to an S3 gateway endpoint crosses only the instance's own
//! subnet's ACL, where no Cordon rule can match (see [`crate::nacl`]). The agent's DNS queries
//! need no rule: "security groups and network ACLs don't filter traffic to or from link-local
//! addresses (169.254.0.0/16) or AWS-reserved IPv4 addresses", the Amazon DNS server's among
//! them (<https://docs.aws.amazon.com/vpc/latest/userguide/VPC_Security.html>).
//!
//! # Numbers
//!
//! Quarantine gives each deny rule the *highest* free number in Cordon's range below the first
//! allow rule that contains the address, so the numbers below it are free; an allow rule takes
//! the highest free number below the lowest deny rule for exactly its address, and never jumps
//! over another rule whose CIDR contains the address (a responder's own rule keeps its place
//! before the path). No such number (a deny rule placed low by an earlier Cordon version, a full
//! range) or a full ACL (`NetworkAclEntryLimitExceeded`) is a gap, and the path is not opened.
//! A number taken meanwhile by a concurrent execution (`NetworkAclEntryAlreadyExists`) is
//! re-planned from a fresh describe, as quarantine's deny rules are. The allow rules of an
//! instance are recognised on close by what they are (allow, TCP, exactly these ports, exactly
//! one of the instance's addresses, in Cordon's range), so closing needs no state from opening
//! and removes nothing else.

use std::collections::BTreeSet;

use cordon_common::timeline::Timeline;
use cordon_common::{Gap, StepError};
use serde::Serialize;
use serde_json::{json, Value};

use crate::nacl::{
    create_entry, describe_acls, direction, entries_of, Address, Cidr, Created, Entry,
    MAX_ATTEMPTS, RULE_RANGE,
};
use crate::STEP;

pub const ALLOW: &str = cordon_common::timeline::actions::COLLECTION_ACL_ALLOW;
pub const REMOVE: &str = cordon_common::timeline::actions::COLLECTION_ACL_REMOVE;
/// TCP, as EC2 names it in ACL entries.
const TCP: &str = "6";
const INBOUND_PORTS: (i32, i32) = (443, 443);
const OUTBOUND_PORTS: (i32, i32) = (1024, 65535);

fn ports(egress: bool) -> (i32, i32) {
    if egress {
        OUTBOUND_PORTS
    } else {
        INBOUND_PORTS
    }
}

/// One allow rule of the collection path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowRule {
    pub network_acl_id: String,
    pub rule_number: i32,
    /// `true`: outbound (the replies, to the address); `false`: inbound (the requests, from it).
    pub egress: bool,
    pub cidr: String,
    /// `"6"` (TCP).
    pub protocol: &'static str,
    pub from_port: i32,
    pub to_port: i32,
    pub network_interface_id: String,
    /// `true` when this execution created (or, on close, deleted) it.
    pub created: bool,
}

/// Which ACLs need the allow rules.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The ACLs of these subnets (the interface endpoints').
    Subnets(BTreeSet<String>),
    /// Every ACL of the VPC (`internet-443`: the path may cross any of them).
    All,
}

/// Where the allow rule for an address goes in one direction of one ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// No Cordon deny rule for the address here: nothing to let through.
    NotNeeded,
    /// Our allow rule is already in place, before the deny rule.
    Present(i32),
    Free(i32),
    /// No number below the deny rule `deny`; `blocked_by`: a rule that matches the address and
    /// must stay before ours.
    NoRoom {
        deny: i32,
        blocked_by: Option<i32>,
    },
}

fn is_ours(e: &Entry, egress: bool, cidr: &Cidr) -> bool {
    e.allow
        && e.egress == egress
        && e.tcp_ports == Some(ports(egress))
        && RULE_RANGE.contains(&e.number)
        && e.cidr.is_some_and(|c| c.same_network(cidr))
}

/// Plans the allow rule for `cidr` in direction `egress` given the ACL's entries (pure).
pub(crate) fn slot(entries: &[Entry], egress: bool, cidr: &Cidr) -> Slot {
    let dir = || entries.iter().filter(|e| e.egress == egress);
    let matches = |e: &&Entry| e.cidr.is_some_and(|c| c.contains(cidr));
    // Cordon's deny: all protocols, exactly this address (crate::nacl::slot).
    let Some(deny) = dir()
        .filter(|e| !e.allow && e.all_protocols && e.cidr.is_some_and(|c| c.same_network(cidr)))
        .map(|e| e.number)
        .min()
    else {
        return Slot::NotNeeded;
    };
    // Ours, before the deny and before any other deny that matches the address.
    let first_deny = dir()
        .filter(|e| !e.allow)
        .filter(matches)
        .map(|e| e.number)
        .min()
        .unwrap_or(deny);
    if let Some(n) = dir()
        .filter(|e| is_ours(e, egress, cidr) && e.number < first_deny)
        .map(|e| e.number)
        .min()
    {
        return Slot::Present(n);
    }
    // A responder's deny that matches the address comes first: the path is closed here
    // whatever Cordon does, and is left so.
    if first_deny < deny {
        return Slot::NoRoom {
            deny,
            blocked_by: Some(first_deny),
        };
    }
    let mut n = deny - 1;
    while n >= *RULE_RANGE.start() {
        match dir().find(|e| e.number == n) {
            None => return Slot::Free(n),
            Some(e) if e.cidr.is_some_and(|c| c.contains(cidr)) => {
                return Slot::NoRoom {
                    deny,
                    blocked_by: Some(n),
                }
            }
            Some(_) => n -= 1,
        }
    }
    Slot::NoRoom {
        deny,
        blocked_by: None,
    }
}

fn rule_json(number: i32, egress: bool, cidr: &str) -> Value {
    let (from, to) = ports(egress);
    json!({
        "rule_number": number,
        "egress": egress,
        "cidr": cidr,
        "rule_action": "allow",
        "protocol": TCP,
        "port_range": [from, to],
    })
}

/// What [`allow`] did.
#[derive(Debug, Default)]
pub struct Applied {
    pub rules: Vec<AllowRule>,
    /// Rules that could not be placed: the path is not open through these ACLs.
    pub gaps: Vec<Gap>,
}

/// Adds (or finds) the allow rules for every address in every ACL of `scope` that holds Cordon's
/// deny rules for it, on a boundary other than the address's own subnet.
pub async fn allow(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    addresses: &[Address],
    scope: &Scope,
    timeline: &mut Timeline,
) -> Result<Applied, StepError> {
    let mut out = Applied::default();
    for acl in describe_acls(ec2, Some(vpc_id), &[]).await? {
        let Some(acl_id) = acl.network_acl_id() else {
            continue;
        };
        let subnets: BTreeSet<&str> = acl
            .associations()
            .iter()
            .filter_map(|a| a.subnet_id())
            .collect();
        let mut entries = entries_of(&acl);
        for address in addresses {
            // The boundaries the path crosses here: a subnet of this ACL that is not the
            // address's own (and, for endpoints, holds an endpoint interface).
            let crossed = subnets.iter().any(|s| {
                *s != address.subnet_id
                    && match scope {
                        Scope::Subnets(wanted) => wanted.contains(*s),
                        Scope::All => true,
                    }
            });
            if !crossed {
                continue;
            }
            for egress in [false, true] {
                match allow_one(ec2, acl_id, &mut entries, egress, address, timeline).await? {
                    Placed::Rule(r) => out.rules.push(r),
                    Placed::Gap(g) => out.gaps.push(g),
                    Placed::NotNeeded => {}
                }
            }
        }
    }
    Ok(out)
}

enum Placed {
    Rule(AllowRule),
    Gap(Gap),
    NotNeeded,
}

async fn allow_one(
    ec2: &aws_sdk_ec2::Client,
    acl_id: &str,
    entries: &mut Vec<Entry>,
    egress: bool,
    address: &Address,
    timeline: &mut Timeline,
) -> Result<Placed, StepError> {
    let cidr = address.cidr;
    let (from, to) = ports(egress);
    let rule = |number: i32, created: bool| AllowRule {
        network_acl_id: acl_id.to_owned(),
        rule_number: number,
        egress,
        cidr: cidr.to_string(),
        protocol: TCP,
        from_port: from,
        to_port: to,
        network_interface_id: address.network_interface_id.clone(),
        created,
    };
    let what = || {
        format!(
            "network ACL {acl_id}: no {} collection allow rule for {cidr}",
            direction(egress)
        )
    };
    for _ in 0..MAX_ATTEMPTS {
        let number = match slot(entries, egress, &cidr) {
            Slot::NotNeeded => return Ok(Placed::NotNeeded),
            Slot::Present(n) => {
                let found = rule_json(n, egress, &cidr.to_string());
                timeline.record(ALLOW, acl_id, found.clone(), found);
                return Ok(Placed::Rule(rule(n, false)));
            }
            Slot::NoRoom { deny, blocked_by } => {
                let why = match blocked_by {
                    Some(n) => format!("rule {n} also matches the address and must stay before the collection path"),
                    None => format!("no free rule number in Cordon's range {}-{}", RULE_RANGE.start(), RULE_RANGE.end()),
                };
                return Ok(Placed::Gap(Gap::new(
                    STEP,
                    what(),
                    format!("the allow rule must come before Cordon's deny rule {deny} for the address, and {why}"),
                )));
            }
            Slot::Free(n) => n,
        };
        let after = rule_json(number, egress, &cidr.to_string());
        timeline.intend(ALLOW, acl_id, &Value::Null, &after);
        let entry = Entry {
            number,
            egress,
            allow: true,
            all_protocols: false,
            tcp_ports: Some((from, to)),
            cidr: Some(cidr),
        };
        match create_entry(ec2, acl_id, entry, entries).await? {
            Created::Done => {
                timeline.record(ALLOW, acl_id, Value::Null, after);
                return Ok(Placed::Rule(rule(number, true)));
            }
            // Taken meanwhile (a concurrent execution): plan again from what AWS has.
            Created::Taken => {}
            Created::Full(err) => {
                return Ok(Placed::Gap(Gap::new(
                    STEP,
                    what(),
                    format!("{err}: the ACL holds its quota of rules per direction"),
                )));
            }
        }
    }
    Err(StepError::ContainmentNotVerified(format!(
        "{acl_id}: rule numbers for the collection path of {cidr} ({}) kept being taken by others ({MAX_ATTEMPTS} attempts)",
        direction(egress)
    )))
}

/// Reads the ACLs again: every rule is in place, before the deny rules for its address.
pub async fn verify(
    ec2: &aws_sdk_ec2::Client,
    rules: &[AllowRule],
) -> Result<Vec<String>, StepError> {
    let ids: BTreeSet<String> = rules.iter().map(|r| r.network_acl_id.clone()).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let acls = describe_acls(ec2, None, &ids.into_iter().collect::<Vec<_>>()).await?;
    let mut problems = Vec::new();
    for r in rules {
        let entries = acls
            .iter()
            .find(|a| a.network_acl_id() == Some(r.network_acl_id.as_str()))
            .map(entries_of)
            .unwrap_or_default();
        let Some(cidr) = Cidr::parse(&r.cidr) else {
            problems.push(format!("{}: unreadable CIDR {}", r.network_acl_id, r.cidr));
            continue;
        };
        match slot(&entries, r.egress, &cidr) {
            Slot::Present(n) if n == r.rule_number => {}
            // The deny rule went away meanwhile: nothing blocks the path here.
            Slot::NotNeeded => {}
            other => problems.push(format!(
                "{}: {} collection allow rule {} for {cidr} is not in effect ({other:?})",
                r.network_acl_id,
                direction(r.egress),
                r.rule_number
            )),
        }
    }
    Ok(problems)
}

/// The collection allow rules of `addresses` in every ACL of the VPC.
async fn find(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    addresses: &[Address],
) -> Result<Vec<AllowRule>, StepError> {
    let mut out = Vec::new();
    for acl in describe_acls(ec2, Some(vpc_id), &[]).await? {
        let Some(acl_id) = acl.network_acl_id() else {
            continue;
        };
        for e in entries_of(&acl) {
            let Some(address) = addresses.iter().find(|a| is_ours(&e, e.egress, &a.cidr)) else {
                continue;
            };
            let (from, to) = ports(e.egress);
            out.push(AllowRule {
                network_acl_id: acl_id.to_owned(),
                rule_number: e.number,
                egress: e.egress,
                cidr: address.cidr.to_string(),
                protocol: TCP,
                from_port: from,
                to_port: to,
                network_interface_id: address.network_interface_id.clone(),
                created: false,
            });
        }
    }
    Ok(out)
}

/// Deletes the collection allow rules of `addresses` from every ACL of the VPC, and only those.
/// A rule deleted meanwhile (`InvalidNetworkAclEntry.NotFound`,
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>) is success.
pub async fn remove(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    addresses: &[Address],
    timeline: &mut Timeline,
) -> Result<Vec<AllowRule>, StepError> {
    let mut removed = Vec::new();
    for mut r in find(ec2, vpc_id, addresses).await? {
        let before = rule_json(r.rule_number, r.egress, &r.cidr);
        timeline.intend(REMOVE, &r.network_acl_id, &before, &Value::Null);
        let deleted = ec2
            .delete_network_acl_entry()
            .network_acl_id(&r.network_acl_id)
            .rule_number(r.rule_number)
            .egress(r.egress)
            .send()
            .await;
        match deleted {
            Ok(_) => r.created = true,
            Err(e) => {
                let err = StepError::aws("DeleteNetworkAclEntry", e);
                if err.aws_code() != Some("InvalidNetworkAclEntry.NotFound") {
                    return Err(err);
                }
            }
        }
        timeline.record(REMOVE, &r.network_acl_id, before, Value::Null);
        removed.push(r);
    }
    Ok(removed)
}

/// What is left of the collection path in the ACLs after closing: any allow rule of `addresses`.
pub async fn leftovers(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    addresses: &[Address],
) -> Result<Vec<String>, StepError> {
    Ok(find(ec2, vpc_id, addresses)
        .await?
        .into_iter()
        .map(|r| {
            format!(
                "{}: {} collection allow rule {} for {} is still there",
                r.network_acl_id,
                direction(r.egress),
                r.rule_number,
                r.cidr
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    fn entry(number: i32, egress: bool, allow: bool, c: &str) -> Entry {
        Entry {
            number,
            egress,
            allow,
            all_protocols: true,
            tcp_ports: None,
            cidr: Some(cidr(c)),
        }
    }

    fn ours(number: i32, egress: bool, c: &str) -> Entry {
        Entry {
            all_protocols: false,
            tcp_ports: Some(ports(egress)),
            ..entry(number, egress, true, c)
        }
    }

    fn acl_with_deny(at: i32) -> Vec<Entry> {
        let mut v = Vec::new();
        for egress in [false, true] {
            v.push(entry(at, egress, false, "10.0.1.10/32"));
            v.push(entry(100, egress, true, "0.0.0.0/0"));
            v.push(entry(32767, egress, false, "0.0.0.0/0"));
        }
        v
    }

    #[test]
    fn without_a_cordon_deny_nothing_is_needed() {
        let mut v = acl_with_deny(99);
        v.retain(|e| e.number != 99);
        assert_eq!(slot(&v, false, &cidr("10.0.1.10/32")), Slot::NotNeeded);
        // Another address's deny does not concern this one.
        assert_eq!(
            slot(&acl_with_deny(99), false, &cidr("10.0.1.11/32")),
            Slot::NotNeeded
        );
    }

    #[test]
    fn the_allow_goes_just_below_the_deny() {
        let mut v = acl_with_deny(99);
        v.push(entry(98, false, false, "10.0.9.9/32")); // another instance's deny: skipped over
        assert_eq!(slot(&v, false, &cidr("10.0.1.10/32")), Slot::Free(97));
        assert_eq!(slot(&v, true, &cidr("10.0.1.10/32")), Slot::Free(98));
    }

    #[test]
    fn an_allow_already_before_the_deny_is_reused() {
        let mut v = acl_with_deny(99);
        v.push(ours(90, false, "10.0.1.10/32"));
        assert_eq!(slot(&v, false, &cidr("10.0.1.10/32")), Slot::Present(90));
        // The outbound one has other ports: not ours.
        v.push(Entry {
            tcp_ports: Some((443, 443)),
            ..ours(90, true, "10.0.1.10/32")
        });
        assert_eq!(slot(&v, true, &cidr("10.0.1.10/32")), Slot::Free(98));
    }

    #[test]
    fn a_rule_that_matches_the_address_is_never_jumped_over() {
        let mut v = acl_with_deny(99);
        v.push(entry(98, false, true, "10.0.0.0/16")); // a responder's allow, added later
        assert_eq!(
            slot(&v, false, &cidr("10.0.1.10/32")),
            Slot::NoRoom {
                deny: 99,
                blocked_by: Some(98)
            }
        );
    }

    #[test]
    fn a_responders_deny_before_cordons_keeps_the_path_closed() {
        let mut v = acl_with_deny(99);
        v.push(entry(95, false, false, "10.0.0.0/16"));
        assert_eq!(
            slot(&v, false, &cidr("10.0.1.10/32")),
            Slot::NoRoom {
                deny: 99,
                blocked_by: Some(95)
            }
        );
        // An allow of ours behind it would never match: not present either.
        v.push(ours(97, false, "10.0.1.10/32"));
        assert!(matches!(
            slot(&v, false, &cidr("10.0.1.10/32")),
            Slot::NoRoom { .. }
        ));
        // Before it, it is in effect.
        v.push(ours(90, false, "10.0.1.10/32"));
        assert_eq!(slot(&v, false, &cidr("10.0.1.10/32")), Slot::Present(90));
    }

    #[test]
    fn a_deny_at_the_bottom_of_the_range_leaves_no_room() {
        assert_eq!(
            slot(&acl_with_deny(1), false, &cidr("10.0.1.10/32")),
            Slot::NoRoom {
                deny: 1,
                blocked_by: None
            }
        );
    }
}
