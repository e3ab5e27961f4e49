//! Connection-tracking idle timeouts at their minimums, per network interface.
//!
//! Security groups keep allowing a tracked flow until it closes or idles out, and some flows are
//! tracked whatever the rules say (NAT gateway, NLB, GWLB, interface endpoints, transit gateway,
//! egress-only internet gateway, ICMP; EC2 User Guide, "Security group connection tracking",
//! <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html>):
//! the isolation group cannot end those. The idle timeouts are configurable per interface with
//! `ModifyNetworkInterfaceAttribute` `ConnectionTrackingSpecification`; their documented ranges
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ConnectionTrackingSpecificationRequest.html>)
//! are TCP established 60–432,000 s (default 432,000 s, 350 s on Nitro v6 types), UDP stream
//! 60–180 s (default 180 s), UDP 30–60 s (default 30 s). Setting the minimums means an idle
//! automatically tracked flow dies within a minute instead of five days. The setting is for
//! "Nitro based instances only"
//! (<https://aws.amazon.com/about-aws/whats-new/2023/11/ec2-security-connection-tracking-idle-timeouts/>),
//! so the instance type is read first (`DescribeInstanceTypes` `Hypervisor`); on a Xen type it is
//! a recorded gap, not a failure. The API takes "only one attribute at a time"
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyNetworkInterfaceAttribute.html>),
//! so this is a call of its own after the group change.

use aws_sdk_ec2::types::{
    ConnectionTrackingConfiguration, ConnectionTrackingSpecificationRequest,
    ConnectionTrackingSpecificationResponse, InstanceType, InstanceTypeHypervisor,
};
use cordon_common::timeline::actions;
use cordon_common::timeline::Timeline;
use cordon_common::{Gap, StepError};
use serde::Serialize;
use serde_json::json;

use crate::STEP;

pub const TCP_ESTABLISHED_MIN: i32 = 60;
pub const UDP_STREAM_MIN: i32 = 60;
pub const UDP_MIN: i32 = 30;
const ACTION: &str = actions::CONNTRACK;

/// Idle timeouts in seconds; `None` where EC2 reported nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Timeouts {
    pub tcp_established: Option<i32>,
    pub udp_stream: Option<i32>,
    pub udp: Option<i32>,
}

impl Timeouts {
    pub const MINIMUMS: Timeouts = Timeouts {
        tcp_established: Some(TCP_ESTABLISHED_MIN),
        udp_stream: Some(UDP_STREAM_MIN),
        udp: Some(UDP_MIN),
    };

    pub fn from_instance(c: &ConnectionTrackingSpecificationResponse) -> Timeouts {
        Timeouts {
            tcp_established: c.tcp_established_timeout(),
            udp_stream: c.udp_stream_timeout(),
            udp: c.udp_timeout(),
        }
    }

    pub fn from_interface(c: &ConnectionTrackingConfiguration) -> Timeouts {
        Timeouts {
            tcp_established: c.tcp_established_timeout(),
            udp_stream: c.udp_stream_timeout(),
            udp: c.udp_timeout(),
        }
    }

    pub fn is_minimal(&self) -> bool {
        *self == Timeouts::MINIMUMS
    }

    /// Fields EC2 left out take the instance type's defaults.
    fn or(self, defaults: Timeouts) -> Timeouts {
        Timeouts {
            tcp_established: self.tcp_established.or(defaults.tcp_established),
            udp_stream: self.udp_stream.or(defaults.udp_stream),
            udp: self.udp.or(defaults.udp),
        }
    }
}

/// Whether the instance type lets the timeouts be configured, and its defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Support {
    pub instance_type: Option<String>,
    pub hypervisor: Option<String>,
    /// `false` only for a Xen instance type (not Nitro-based).
    pub configurable: bool,
    pub defaults: Timeouts,
}

/// DescribeInstanceTypes for the instance's type.
pub async fn support(
    ec2: &aws_sdk_ec2::Client,
    instance_type: Option<&InstanceType>,
) -> Result<Support, StepError> {
    let Some(t) = instance_type else {
        return Ok(Support {
            instance_type: None,
            hypervisor: None,
            configurable: true,
            defaults: Timeouts::default(),
        });
    };
    let out = ec2
        .describe_instance_types()
        .instance_types(t.clone())
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceTypes", e))?;
    let info = out.instance_types().first();
    let defaults = info
        .and_then(|i| i.network_info())
        .and_then(|n| n.connection_tracking_configuration())
        .map(|d| Timeouts {
            tcp_established: d.default_tcp_established_timeout(),
            udp_stream: d.default_udp_stream_timeout(),
            udp: d.default_udp_timeout(),
        })
        .unwrap_or_default();
    let hypervisor = info.and_then(|i| i.hypervisor());
    Ok(Support {
        instance_type: Some(t.as_str().to_owned()),
        hypervisor: hypervisor.map(|h| h.as_str().to_owned()),
        configurable: hypervisor != Some(&InstanceTypeHypervisor::Xen),
        defaults,
    })
}

/// The gap recorded for an instance type that cannot lower its timeouts.
pub fn unsupported(support: &Support) -> Gap {
    Gap::new(
        STEP,
        "connection-tracking timeouts",
        format!(
            "instance type {} runs on the {} hypervisor: configurable idle timeouts are for Nitro-based instances only, so automatically tracked flows keep the defaults (TCP established {} s) and end only when idle that long or cut by a network ACL",
            support.instance_type.as_deref().unwrap_or("?"),
            support.hypervisor.as_deref().unwrap_or("?"),
            support
                .defaults
                .tcp_established
                .map(|s| s.to_string())
                .unwrap_or_else(|| "432000".into()),
        ),
    )
}

/// Sets the minimums on one interface; `current` is what DescribeInstances reported for it.
pub async fn lower(
    ec2: &aws_sdk_ec2::Client,
    eni_id: &str,
    current: Option<Timeouts>,
    defaults: Timeouts,
    timeline: &mut Timeline,
) -> Result<(), StepError> {
    // What was in force: the interface's own setting, else the instance type's defaults.
    let before = match current {
        Some(t) => json!({"timeouts": t.or(defaults), "source": "interface"}),
        None => json!({"timeouts": defaults, "source": "instance type default"}),
    };
    let after = json!({"timeouts": Timeouts::MINIMUMS, "source": "interface"});
    if current.is_some_and(|t| t.is_minimal()) {
        timeline.record(ACTION, eni_id, after.clone(), after);
        return Ok(());
    }
    timeline.intend(ACTION, eni_id, &before, &after);
    ec2.modify_network_interface_attribute()
        .network_interface_id(eni_id)
        .connection_tracking_specification(
            ConnectionTrackingSpecificationRequest::builder()
                .tcp_established_timeout(TCP_ESTABLISHED_MIN)
                .udp_stream_timeout(UDP_STREAM_MIN)
                .udp_timeout(UDP_MIN)
                .build(),
        )
        .send()
        .await
        .map_err(|e| StepError::aws("ModifyNetworkInterfaceAttribute", e))?;
    timeline.record(ACTION, eni_id, before, after);
    Ok(())
}
