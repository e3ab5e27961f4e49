//! The collection security group: no inbound rule, and outbound only TCP 443 to the destinations
//! the collection needs. One group per VPC (and mode), shared by every incident collecting there:
//! its rule set is a function of the VPC's endpoints, so concurrent executions converge on the
//! same rules.
//!
//! A group's rules are compared one by one (protocol, ports, one destination): what the group has
//! and should not (a default allow-all egress rule, a rule added by hand) is revoked, what it
//! lacks is authorized, one rule per call. One rule per call because a call fails as a whole
//! when one of its rules already exists (`InvalidPermission.Duplicate`) or, on revoke, is not
//! there (`InvalidPermission.NotFound`)
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>); for a single
//! rule either code means a concurrent execution made the same change, which is success. (In a
//! default VPC a revoke of a rule that is not there answers no error and lists it in
//! `UnknownIpPermissions`,
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RevokeSecurityGroupEgress.html>:
//! the same outcome here; either way the group is read back before the path counts as open.) Extras
//! are revoked before the missing rules are added, so the group is never more open than both its
//! old and its new rule set. Egress rules may name security groups (`UserIdGroupPairs`) and prefix lists
//! (`PrefixListIds`) as destinations
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_IpPermission.html>).

use std::collections::BTreeSet;
use std::fmt;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, PrefixListId, UserIdGroupPair};
use cordon_common::timeline::Timeline;
use cordon_common::StepError;
use serde_json::{json, Value};

use crate::{already, find_or_create_group};

/// The only port the collection path opens.
pub const HTTPS: i32 = 443;
pub const SET_RULES: &str = "set collection group rules";

/// Where one rule lets traffic go (egress) or come from (ingress).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    V4(String),
    V6(String),
    Group(String),
    PrefixList(String),
}

/// One security group rule: a protocol, a port range and one peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub protocol: String,
    pub from: Option<i32>,
    pub to: Option<i32>,
    pub peer: Peer,
}

impl Rule {
    pub fn https(peer: Peer) -> Rule {
        Rule {
            protocol: "tcp".into(),
            from: Some(HTTPS),
            to: Some(HTTPS),
            peer,
        }
    }

    /// The rule as the one `IpPermission` that authorizes or revokes exactly it.
    pub fn permission(&self) -> IpPermission {
        let p = IpPermission::builder()
            .ip_protocol(&self.protocol)
            .set_from_port(self.from)
            .set_to_port(self.to);
        match &self.peer {
            Peer::V4(c) => p.ip_ranges(IpRange::builder().cidr_ip(c).build()),
            Peer::V6(c) => p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
            Peer::Group(g) => p.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
            Peer::PrefixList(l) => {
                p.prefix_list_ids(PrefixListId::builder().prefix_list_id(l).build())
            }
        }
        .build()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = match (self.from, self.to) {
            (Some(a), Some(b)) if a == b => format!(" {a}"),
            (Some(a), Some(b)) => format!(" {a}-{b}"),
            _ => String::new(),
        };
        let protocol = if self.protocol == "-1" {
            "all"
        } else {
            &self.protocol
        };
        let peer = match &self.peer {
            Peer::V4(c) | Peer::V6(c) | Peer::Group(c) | Peer::PrefixList(c) => c,
        };
        write!(f, "{protocol}{ports} {peer}")
    }
}

/// EC2 answers `tcp`, `udp`, `icmp` by name and other protocols by number.
fn protocol_name(p: &str) -> String {
    match p {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "1" => "icmp".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// A group's rules one by one.
pub fn atoms(perms: &[IpPermission]) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for p in perms {
        let protocol = protocol_name(p.ip_protocol().unwrap_or("-1"));
        // All-protocol rules carry no ports (EC2 may answer -1 for them).
        let (from, to) = if protocol == "-1" {
            (None, None)
        } else {
            (p.from_port(), p.to_port())
        };
        let rule = |peer| Rule {
            protocol: protocol.clone(),
            from,
            to,
            peer,
        };
        out.extend(
            p.ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip())
                .map(|c| rule(Peer::V4(c.to_owned()))),
        );
        out.extend(
            p.ipv6_ranges()
                .iter()
                .filter_map(|r| r.cidr_ipv6())
                .map(|c| rule(Peer::V6(c.to_owned()))),
        );
        out.extend(
            p.user_id_group_pairs()
                .iter()
                .filter_map(|g| g.group_id())
                .map(|g| rule(Peer::Group(g.to_owned()))),
        );
        out.extend(
            p.prefix_list_ids()
                .iter()
                .filter_map(|l| l.prefix_list_id())
                .map(|l| rule(Peer::PrefixList(l.to_owned()))),
        );
    }
    out
}

fn labels(rules: &BTreeSet<Rule>) -> Value {
    json!(rules.iter().map(Rule::to_string).collect::<Vec<_>>())
}

/// The group's rules as one value for the timeline: `{"ingress": [...], "egress": [...]}`.
pub fn rules_json(ingress: &BTreeSet<Rule>, egress: &BTreeSet<Rule>) -> Value {
    json!({"ingress": labels(ingress), "egress": labels(egress)})
}

/// Finds or creates the group `name` (tagged `cordon:role=<role>`) and makes its rules exactly:
/// no ingress, egress `desired`. Returns its ID.
pub async fn ensure(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    name: &str,
    role: &str,
    desired: &BTreeSet<Rule>,
    timeline: &mut Timeline,
) -> Result<String, StepError> {
    let description = "Cordon collection: no inbound; outbound TCP 443 to the SSM and S3 endpoints only, while a collection runs";
    let group = find_or_create_group(ec2, vpc_id, name, role, description, timeline).await?;
    let group_id = group.group_id().unwrap_or_default().to_owned();
    let ingress = atoms(group.ip_permissions());
    let egress = atoms(group.ip_permissions_egress());
    let before = rules_json(&ingress, &egress);
    let after = rules_json(&BTreeSet::new(), desired);
    if before == after {
        timeline.record(SET_RULES, &group_id, before, after);
        return Ok(group_id);
    }
    timeline.intend(SET_RULES, &group_id, &before, &after);
    for rule in &ingress {
        ec2.revoke_security_group_ingress()
            .group_id(&group_id)
            .ip_permissions(rule.permission())
            .send()
            .await
            .map(drop)
            .or_else(|e| {
                already(
                    StepError::aws("RevokeSecurityGroupIngress", e),
                    "InvalidPermission.NotFound",
                )
            })?;
    }
    for rule in egress.difference(desired) {
        ec2.revoke_security_group_egress()
            .group_id(&group_id)
            .ip_permissions(rule.permission())
            .send()
            .await
            .map(drop)
            .or_else(|e| {
                already(
                    StepError::aws("RevokeSecurityGroupEgress", e),
                    "InvalidPermission.NotFound",
                )
            })?;
    }
    for rule in desired.difference(&egress) {
        ec2.authorize_security_group_egress()
            .group_id(&group_id)
            .ip_permissions(rule.permission())
            .send()
            .await
            .map(drop)
            .or_else(|e| {
                already(
                    StepError::aws("AuthorizeSecurityGroupEgress", e),
                    "InvalidPermission.Duplicate",
                )
            })?;
    }
    timeline.record(SET_RULES, &group_id, before, after);
    Ok(group_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_split_into_single_rules() {
        let perm = IpPermission::builder()
            .ip_protocol("6")
            .from_port(443)
            .to_port(443)
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-1").build())
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-2").build())
            .prefix_list_ids(PrefixListId::builder().prefix_list_id("pl-s3").build())
            .build();
        let all = IpPermission::builder()
            .ip_protocol("-1")
            .from_port(-1)
            .to_port(-1)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        let got: Vec<String> = atoms(&[perm, all]).iter().map(Rule::to_string).collect();
        assert_eq!(
            got,
            [
                "all 0.0.0.0/0",
                "tcp 443 sg-1",
                "tcp 443 sg-2",
                "tcp 443 pl-s3"
            ]
        );
        let one = Rule::https(Peer::PrefixList("pl-s3".into()));
        assert_eq!(atoms(&[one.permission()]), BTreeSet::from([one]));
    }
}
