//! Read-only AWS look-ups that more than one step needs. Nothing here changes anything.

use aws_sdk_ec2::types::{Filter, Instance};
use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
use serde::{Deserialize, Serialize};

use crate::error::StepError;

pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// DescribeInstances for one ID. EC2 answers `InvalidInstanceID.NotFound` for an unknown ID
/// (classified as `InstanceNotFound`); an empty answer (a terminated instance past its retention)
/// is `InstanceNotFound` too.
pub async fn describe_instance(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
) -> Result<Instance, StepError> {
    let out = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstances", e))?;
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(instance_id))
        .cloned()
        .ok_or_else(|| StepError::InstanceNotFound(instance_id.to_owned()))
}

/// EBS volumes attached to the instance as `(device name, volume ID, DeleteOnTermination)`.
pub fn attached_volumes(instance: &Instance) -> Vec<(String, String, bool)> {
    instance
        .block_device_mappings()
        .iter()
        .filter_map(|b| {
            let ebs = b.ebs()?;
            Some((
                b.device_name().unwrap_or_default().to_owned(),
                ebs.volume_id()?.to_owned(),
                ebs.delete_on_termination().unwrap_or(false),
            ))
        })
        .collect()
}

/// The Auto Scaling group the instance belongs to, if any (DescribeAutoScalingInstances answers
/// an empty list for an instance in no group).
pub async fn auto_scaling_group(
    autoscaling: &aws_sdk_autoscaling::Client,
    instance_id: &str,
) -> Result<Option<String>, StepError> {
    Ok(auto_scaling_membership(autoscaling, instance_id)
        .await?
        .map(|m| m.group))
}

/// The instance's Auto Scaling group and its lifecycle state in it (`InService`, `Standby`,
/// `Terminating:Wait`, ...: the `LifecycleState` of
/// <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_AutoScalingInstanceDetails.html>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoScalingMembership {
    pub group: String,
    pub lifecycle_state: Option<String>,
}

/// DescribeAutoScalingInstances for one instance; `None` when it is in no group.
pub async fn auto_scaling_membership(
    autoscaling: &aws_sdk_autoscaling::Client,
    instance_id: &str,
) -> Result<Option<AutoScalingMembership>, StepError> {
    let out = autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeAutoScalingInstances", e))?;
    Ok(out
        .auto_scaling_instances()
        .iter()
        .find(|i| i.instance_id() == Some(instance_id))
        .and_then(|i| {
            Some(AutoScalingMembership {
                group: i.auto_scaling_group_name()?.to_owned(),
                lifecycle_state: i.lifecycle_state().map(str::to_owned),
            })
        }))
}

/// One registration of the instance in an ELBv2 target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRegistration {
    pub target_group_arn: String,
    pub port: Option<i32>,
    /// `TargetHealth.State` as DescribeTargetHealth reports it: `healthy`, `draining`, `unused`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl TargetRegistration {
    /// Deregistration has started: after DeregisterTargets ELBv2 lists the target as `draining`
    /// (reason `Target.DeregistrationInProgress`) for the target group's deregistration delay,
    /// 300 s by default, and only then stops listing it
    /// (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-target-group-attributes.html#deregistration-delay>,
    /// <https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html>).
    /// No new requests are routed to it.
    pub fn is_deregistering(&self) -> bool {
        self.state.as_deref() == Some(TargetHealthStateEnum::Draining.as_str())
    }

    /// The load balancer sends this target no new traffic: `draining` (above) or `unused` (not
    /// registered, a group no load balancer uses, a stopped instance: the `unused` reason codes
    /// of API_TargetHealth). `unhealthy.draining` is not: that target stays registered.
    pub fn is_out_of_service(&self) -> bool {
        self.is_deregistering()
            || self.state.as_deref() == Some(TargetHealthStateEnum::Unused.as_str())
    }
}

/// Every instance-type target group in the VPC that has this instance registered. ELBv2 has no
/// "target groups of an instance" query, so each group of the VPC is asked with
/// DescribeTargetHealth (<https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetHealth.html>).
pub async fn target_registrations(
    elbv2: &aws_sdk_elasticloadbalancingv2::Client,
    vpc_id: Option<&str>,
    instance_id: &str,
) -> Result<Vec<TargetRegistration>, StepError> {
    use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
    let mut groups = Vec::new();
    let mut marker = None;
    loop {
        let page = elbv2
            .describe_target_groups()
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeTargetGroups", e))?;
        groups.extend(
            page.target_groups()
                .iter()
                .filter(|g| {
                    g.vpc_id() == vpc_id
                        && matches!(g.target_type(), None | Some(TargetTypeEnum::Instance))
                })
                .filter_map(|g| g.target_group_arn().map(str::to_owned)),
        );
        marker = page.next_marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    let mut registrations = Vec::new();
    for arn in groups {
        let health = elbv2
            .describe_target_health()
            .target_group_arn(&arn)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeTargetHealth", e))?;
        for d in health.target_health_descriptions() {
            if let Some(target) = d.target().filter(|t| t.id() == Some(instance_id)) {
                registrations.push(TargetRegistration {
                    target_group_arn: arn.clone(),
                    port: target.port(),
                    state: d
                        .target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_owned()),
                });
            }
        }
    }
    Ok(registrations)
}

/// Whether SSM can run commands on the instance now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsmStatus {
    /// The instance is registered with Systems Manager.
    pub managed: bool,
    /// Its agent answered its last ping (`PingStatus` = `Online`).
    pub online: bool,
    pub ping_status: Option<String>,
    pub platform_type: Option<String>,
}

impl SsmStatus {
    pub fn ready(&self) -> bool {
        self.managed && self.online
    }
}

/// DescribeInstanceInformation for one instance: absent means not managed
/// (<https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeInstanceInformation.html>).
pub async fn ssm_status(
    ssm: &aws_sdk_ssm::Client,
    instance_id: &str,
) -> Result<SsmStatus, StepError> {
    use aws_sdk_ssm::types::InstanceInformationStringFilter;
    let filter = InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .values(instance_id)
        .build()
        .map_err(|e| StepError::invalid(e.to_string()))?;
    let out = ssm
        .describe_instance_information()
        .filters(filter)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceInformation", e))?;
    let info = out
        .instance_information_list()
        .iter()
        .find(|i| i.instance_id() == Some(instance_id));
    Ok(match info {
        None => SsmStatus {
            managed: false,
            online: false,
            ping_status: None,
            platform_type: None,
        },
        Some(i) => SsmStatus {
            managed: true,
            online: i.ping_status() == Some(&aws_sdk_ssm::types::PingStatus::Online),
            ping_status: i.ping_status().map(|p| p.as_str().to_owned()),
            platform_type: i.platform_type().map(|p| p.as_str().to_owned()),
        },
    })
}
