//! The SDK's EC2 types as JSON for `metadata.json`. The SDK types do not implement `Serialize`,
//! so each field a responder needs is named here; absent values are `null`, never guessed.

use aws_sdk_ec2::types::{
    GroupIdentifier, IamInstanceProfileAssociation, Instance, IpPermission, NetworkInterface,
    SecurityGroup, Tag, Volume,
};
use aws_smithy_types::date_time::{DateTime, Format};
use serde_json::{json, Value};

fn time(t: Option<&DateTime>) -> Value {
    t.and_then(|t| t.fmt(Format::DateTime).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

pub fn tags(tags: &[Tag]) -> Value {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                Value::String(t.value().unwrap_or_default().to_owned()),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn groups(groups: &[GroupIdentifier]) -> Value {
    groups
        .iter()
        .map(|g| json!({"group_id": g.group_id(), "group_name": g.group_name()}))
        .collect()
}

/// EBS volume IDs attached to the instance, in block-device order.
pub fn volume_ids(instance: &Instance) -> Vec<String> {
    instance
        .block_device_mappings()
        .iter()
        .filter_map(|b| b.ebs().and_then(|e| e.volume_id()).map(str::to_owned))
        .collect()
}

pub fn instance(i: &Instance) -> Value {
    json!({
        "instance_id": i.instance_id(),
        "instance_type": i.instance_type().map(|t| t.as_str()),
        "state": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
        "platform": i.platform().map(|p| p.as_str()),
        "platform_details": i.platform_details(),
        "architecture": i.architecture().map(|a| a.as_str()),
        "image_id": i.image_id(),
        "launch_time": time(i.launch_time()),
        "availability_zone": i.placement().and_then(|p| p.availability_zone()),
        "vpc_id": i.vpc_id(),
        "subnet_id": i.subnet_id(),
        "private_ip_address": i.private_ip_address(),
        "private_dns_name": i.private_dns_name(),
        "public_ip_address": i.public_ip_address(),
        "public_dns_name": i.public_dns_name(),
        "key_name": i.key_name(),
        "root_device_name": i.root_device_name(),
        "iam_instance_profile": i.iam_instance_profile().map(|p| json!({"arn": p.arn(), "id": p.id()})),
        "metadata_options": i.metadata_options().map(|m| json!({
            "http_tokens": m.http_tokens().map(|t| t.as_str()),
            "http_endpoint": m.http_endpoint().map(|t| t.as_str()),
            "http_put_response_hop_limit": m.http_put_response_hop_limit(),
            "http_protocol_ipv6": m.http_protocol_ipv6().map(|t| t.as_str()),
            "instance_metadata_tags": m.instance_metadata_tags().map(|t| t.as_str()),
            "state": m.state().map(|t| t.as_str()),
        })),
        "instance_lifecycle": i.instance_lifecycle().map(|l| l.as_str()),
        "hibernation_configured": i.hibernation_options().and_then(|h| h.configured()),
        "security_groups": groups(i.security_groups()),
        "block_device_mappings": i.block_device_mappings().iter().map(|b| json!({
            "device_name": b.device_name(),
            "volume_id": b.ebs().and_then(|e| e.volume_id()),
            "status": b.ebs().and_then(|e| e.status()).map(|s| s.as_str()),
            "attach_time": time(b.ebs().and_then(|e| e.attach_time())),
            "delete_on_termination": b.ebs().and_then(|e| e.delete_on_termination()),
        })).collect::<Vec<_>>(),
        "network_interfaces": i.network_interfaces().iter().map(|n| json!({
            "network_interface_id": n.network_interface_id(),
            "subnet_id": n.subnet_id(),
            "vpc_id": n.vpc_id(),
            "mac_address": n.mac_address(),
            "private_ip_address": n.private_ip_address(),
            "private_ip_addresses": n.private_ip_addresses().iter().map(|p| p.private_ip_address()).collect::<Vec<_>>(),
            "public_ip": n.association().and_then(|a| a.public_ip()),
            "source_dest_check": n.source_dest_check(),
            "groups": groups(n.groups()),
            "attachment": n.attachment().map(|a| json!({
                "attachment_id": a.attachment_id(),
                "device_index": a.device_index(),
                "delete_on_termination": a.delete_on_termination(),
                "status": a.status().map(|s| s.as_str()),
            })),
        })).collect::<Vec<_>>(),
        "tags": tags(i.tags()),
    })
}

pub fn volume(v: &Volume) -> Value {
    json!({
        "volume_id": v.volume_id(),
        "size_gib": v.size(),
        "volume_type": v.volume_type().map(|t| t.as_str()),
        "encrypted": v.encrypted(),
        "kms_key_id": v.kms_key_id(),
        "snapshot_id": v.snapshot_id(),
        "availability_zone": v.availability_zone(),
        "create_time": time(v.create_time()),
        "state": v.state().map(|s| s.as_str()),
        "attachments": v.attachments().iter().map(|a| json!({
            "instance_id": a.instance_id(),
            "device": a.device(),
            "state": a.state().map(|s| s.as_str()),
            "delete_on_termination": a.delete_on_termination(),
        })).collect::<Vec<_>>(),
        "tags": tags(v.tags()),
    })
}

fn permissions(perms: &[IpPermission]) -> Value {
    perms
        .iter()
        .map(|p| {
            json!({
                "ip_protocol": p.ip_protocol(),
                "from_port": p.from_port(),
                "to_port": p.to_port(),
                "ipv4_ranges": p.ip_ranges().iter().map(|r| r.cidr_ip()).collect::<Vec<_>>(),
                "ipv6_ranges": p.ipv6_ranges().iter().map(|r| r.cidr_ipv6()).collect::<Vec<_>>(),
                "prefix_lists": p.prefix_list_ids().iter().map(|r| r.prefix_list_id()).collect::<Vec<_>>(),
                "groups": p.user_id_group_pairs().iter().map(|g| g.group_id()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

pub fn security_group(g: &SecurityGroup) -> Value {
    json!({
        "group_id": g.group_id(),
        "group_name": g.group_name(),
        "description": g.description(),
        "vpc_id": g.vpc_id(),
        "ingress": permissions(g.ip_permissions()),
        "egress": permissions(g.ip_permissions_egress()),
        "tags": tags(g.tags()),
    })
}

pub fn association(a: &IamInstanceProfileAssociation) -> Value {
    json!({
        "association_id": a.association_id(),
        "instance_id": a.instance_id(),
        "iam_instance_profile_arn": a.iam_instance_profile().and_then(|p| p.arn()),
        "state": a.state().map(|s| s.as_str()),
        "timestamp": time(a.timestamp()),
    })
}

/// A network interface as DescribeNetworkInterfaces reports it, with its connection tracking
/// timeouts (absent when never configured: EC2's defaults apply).
pub fn network_interface(n: &NetworkInterface) -> Value {
    json!({
        "network_interface_id": n.network_interface_id(),
        "subnet_id": n.subnet_id(),
        "private_ip_address": n.private_ip_address(),
        "ipv6_addresses": n.ipv6_addresses().iter().map(|a| a.ipv6_address()).collect::<Vec<_>>(),
        "interface_type": n.interface_type().map(|t| t.as_str()),
        "connection_tracking_configuration": n.connection_tracking_configuration().map(|c| json!({
            "tcp_established_timeout": c.tcp_established_timeout(),
            "udp_stream_timeout": c.udp_stream_timeout(),
            "udp_timeout": c.udp_timeout(),
        })),
        "groups": groups(n.groups()),
    })
}
