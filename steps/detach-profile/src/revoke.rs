//! Revocation of the credentials already issued to an instance profile's role.
//!
//! Removing a profile does not invalidate the credentials the instance already holds: they stay
//! valid until they expire (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html>).
//! Cordon denies them with ONE inline policy per role, [`POLICY_NAME`], which it rewrites
//! read-modify-write:
//!
//! - `CordonRevokeInstanceCredentials` denies everything to sessions whose `ec2:SourceInstanceARN`
//!   is one of the instances under response. The key is single-valued and present only for the
//!   role credentials that EC2 delivers to an instance, so `StringEquals` with a list matches any
//!   of them and other instances sharing the role keep working
//!   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-ec2-sourceinstancearn>,
//!   <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html>).
//! - `CordonRevokeOlderSessions` denies everything to every session of the role issued before a
//!   cut-off (`aws:TokenIssueTime`, `DateLessThan`): what the console's "Revoke active sessions"
//!   does. It is there when the responder asked for `revoke_sessions = role`, or when the instance
//!   list no longer fits the role's quota.
//!
//! **The quota.** A role's inline policies share 10,240 characters, whitespace not counted
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html>, "Role policy
//! size"). Before writing, Cordon measures the role's other inline policies (ListRolePolicies,
//! GetRolePolicy) and plans the largest policy that fits: every instance ARN; else role-wide
//! revocation keeping as many ARNs as fit, newest first (revoking too much is safe, too little is
//! not), recorded as a gap; else nothing fits and the step fails with `CredentialsNotRevoked`, a
//! named containment failure. PutRolePolicy's `LimitExceeded` (HTTP 409,
//! <https://docs.aws.amazon.com/IAM/latest/APIReference/API_PutRolePolicy.html>) when the plan
//! seemed to fit (another policy was added meanwhile, or IAM counts differently) falls back to the
//! smallest plan, role-wide with no list, once.
//!
//! **Concurrency.** IAM has no conditional write: two responses on instances of the same role can
//! each read the policy, add their own ARN and put it, and the second put drops the first ARN.
//! So every put is read back; a response that finds its own revocation missing starts again, a
//! bounded number of times ([`MAX_ATTEMPTS`]), then fails as `Transient` (the state machine
//! retries it). The read-back alone is not enough: a writer that read the policy before our put
//! and puts after our read-back drops us unseen (found by the redrive scenarios, a dozen
//! responses on one role at once). Such a writer puts within its own read-to-put time (a few IAM
//! calls), so the read-back is confirmed once more after [`Request::confirm_after`], longer than
//! that; a writer slower than that can still drop the ARN, and the step would not know. Reads
//! after a write may lag (IAM is eventually consistent,
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency>);
//! a stale read costs one more attempt.
//!
//! **Earlier versions** put one policy per instance (`cordon-revoke-<instance-id>`) or per
//! incident (`cordon-revoke-sessions-<incident-id>`); those are still read, so a rerun after an
//! upgrade finds its revocation in place and converges instead of adding another.
//!
//! **Documented limit: role chaining.** A session that the stolen credentials obtained from
//! `sts:AssumeRole` before the revocation is a session of another role and no longer carries
//! `ec2:SourceInstanceARN`, and its `aws:TokenIssueTime` is its own: neither statement here
//! reaches it. It lives until it expires (at most the assumed role's maximum session duration,
//! 1 hour by default for chained sessions,
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_terms-and-concepts.html#iam-term-role-chaining>).
//! Revoking those needs the assumed roles' own "Revoke active sessions".

use std::time::Duration;

use aws_smithy_types::date_time::{DateTime, Format};
use cordon_common::error::AwsErrorKind;
use cordon_common::incident::RevokeSessions;
use cordon_common::StepError;
use serde_json::{json, Value};

/// The one inline policy Cordon keeps on a role whose sessions it revokes.
pub const POLICY_NAME: &str = "cordon-revoke";
/// What earlier versions named their per-instance and per-incident policies.
pub const LEGACY_PREFIX: &str = "cordon-revoke-";
/// "Role policy size: 10,240 characters" (IAM quotas; not adjustable).
pub const ROLE_POLICY_QUOTA: usize = 10_240;
/// Reads and writes of the policy before a lost race is given back to the state machine.
pub const MAX_ATTEMPTS: u32 = 4;

const SID_INSTANCES: &str = "CordonRevokeInstanceCredentials";
const SID_OLDER: &str = "CordonRevokeOlderSessions";
const SID_CHANNEL: &str = "CordonRevokeExceptCollectionChannel";

/// What the SSM agent calls to take a Run Command and report on it: its registration heartbeat,
/// the Session Manager / agent control channels and the EC2 Messages delivery service
/// (<https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-create-vpc.html>, "VPC
/// endpoints for Systems Manager": ssm, ssmmessages, ec2messages; the actions are those of the
/// AmazonSSMManagedInstanceCore policy for these prefixes,
/// <https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonSSMManagedInstanceCore.html>).
/// While the collection runs, a contained instance's own credentials may call these and nothing
/// else (`NotAction` deny: "matches everything except the specified list of actions",
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html>):
/// the agent refreshes its credentials only at about half their lifetime (amazon-ssm-agent
/// `core/app/credentialrefresher/credentialrefresher.go`), so until then it is the compromised
/// role's credentials that carry the command.
pub const CHANNEL_ACTIONS: [&str; 11] = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
];
const SOURCE_INSTANCE_ARN: &str = "ec2:SourceInstanceARN";
const TOKEN_ISSUE_TIME: &str = "aws:TokenIssueTime";

/// What Cordon's policy on one role says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RevokePolicy {
    /// Instances whose role credentials are denied, oldest first.
    pub instance_arns: Vec<String>,
    /// Instances under collection: their sessions may use only the SSM agent's channel
    /// ([`CHANNEL_ACTIONS`]), everything else is denied; oldest first.
    pub collecting_arns: Vec<String>,
    /// Every session of the role issued before this time (RFC 3339) is denied.
    pub older_than: Option<String>,
    /// Statements someone else added to Cordon's policy: kept as they are.
    pub other_statements: Vec<Value>,
}

impl RevokePolicy {
    /// Reads a policy document (already URL-decoded).
    pub fn parse(document: &str) -> Result<Self, StepError> {
        let doc: Value = serde_json::from_str(document).map_err(|e| {
            StepError::invalid(format!("the inline policy {POLICY_NAME} is not JSON: {e}"))
        })?;
        let statements = match &doc["Statement"] {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            one => vec![one.clone()],
        };
        let mut policy = RevokePolicy::default();
        for statement in statements {
            match statement["Sid"].as_str() {
                Some(SID_INSTANCES) => {
                    match &statement["Condition"]["StringEquals"][SOURCE_INSTANCE_ARN] {
                        Value::String(arn) => policy.instance_arns.push(arn.clone()),
                        Value::Array(arns) => policy
                            .instance_arns
                            .extend(arns.iter().filter_map(|a| a.as_str().map(str::to_owned))),
                        _ => policy.other_statements.push(statement),
                    }
                }
                Some(SID_CHANNEL) => {
                    match &statement["Condition"]["StringEquals"][SOURCE_INSTANCE_ARN] {
                        Value::String(arn) => policy.collecting_arns.push(arn.clone()),
                        Value::Array(arns) => policy
                            .collecting_arns
                            .extend(arns.iter().filter_map(|a| a.as_str().map(str::to_owned))),
                        _ => policy.other_statements.push(statement),
                    }
                }
                Some(SID_OLDER) => {
                    match statement["Condition"]["DateLessThan"][TOKEN_ISSUE_TIME].as_str() {
                        Some(t) => policy.older_than = Some(t.to_owned()),
                        None => policy.other_statements.push(statement),
                    }
                }
                _ => policy.other_statements.push(statement),
            }
        }
        Ok(policy)
    }

    /// The policy document, compact (whitespace is not counted against the quota anyway).
    pub fn document(&self) -> Value {
        let mut statements = Vec::new();
        if !self.instance_arns.is_empty() {
            statements.push(json!({
                "Sid": SID_INSTANCES,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringEquals": {SOURCE_INSTANCE_ARN: self.instance_arns}}
            }));
        }
        if !self.collecting_arns.is_empty() {
            statements.push(json!({
                "Sid": SID_CHANNEL,
                "Effect": "Deny",
                "NotAction": CHANNEL_ACTIONS,
                "Resource": "*",
                "Condition": {"StringEquals": {SOURCE_INSTANCE_ARN: self.collecting_arns}}
            }));
        }
        if let Some(t) = &self.older_than {
            statements.push(json!({
                "Sid": SID_OLDER,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {TOKEN_ISSUE_TIME: t}}
            }));
        }
        statements.extend(self.other_statements.iter().cloned());
        json!({"Version": "2012-10-17", "Statement": statements})
    }

    /// Characters counted against the role's quota.
    pub fn size(&self) -> usize {
        policy_size(&self.document().to_string())
    }

    fn revokes_older_than(&self, cut_off: &str) -> bool {
        match (
            self.older_than.as_deref().and_then(parse_time),
            parse_time(cut_off),
        ) {
            (Some(have), Some(need)) => have >= need,
            _ => false,
        }
    }

    /// Whether this policy revokes what `plan` was to revoke, with the channel as asked.
    fn covers(
        &self,
        instance_arn: &str,
        scope: RevokeSessions,
        cut_off: &str,
        channel: Channel,
    ) -> bool {
        let listed = |list: &[String]| list.iter().any(|a| a == instance_arn);
        match (scope, channel) {
            (RevokeSessions::Instance, Channel::Closed | Channel::Keep) => {
                (listed(&self.instance_arns) && !listed(&self.collecting_arns))
                    || self.revokes_older_than(cut_off)
            }
            (RevokeSessions::Instance, Channel::Open) => {
                (listed(&self.collecting_arns) && !listed(&self.instance_arns))
                    || self.revokes_older_than(cut_off)
            }
            _ => self.revokes_older_than(cut_off),
        }
    }

    /// Whether this instance's agent channel is open in this policy.
    pub fn channel_open(&self, instance_arn: &str) -> bool {
        self.collecting_arns.iter().any(|a| a == instance_arn)
    }

    /// A short account of the policy for the timeline (the document itself can be 10 KB).
    fn summary(&self, instance_arn: &str) -> Value {
        json!({
            "policy_name": POLICY_NAME,
            "instances_denied": self.instance_arns.len(),
            "this_instance_denied": self.instance_arns.iter().any(|a| a == instance_arn),
            "this_instance_collecting": self.channel_open(instance_arn),
            "sessions_issued_before": self.older_than,
        })
    }
}

/// IAM counts a policy's characters without whitespace (IAM quotas page).
pub fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// GetRolePolicy answers the document URL-encoded (RFC 3986): "Policies returned by this
/// operation are URL-encoded" (<https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetRolePolicy.html>);
/// the Rust SDK does not decode it.
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_time(t: &str) -> Option<(i64, u32)> {
    DateTime::from_str(t, Format::DateTime)
        .ok()
        .map(|d| (d.secs(), d.subsec_nanos()))
}

/// The cut-off for `aws:TokenIssueTime`: now, rounded up to the next whole second, so that a
/// session issued in the same second as the profile's removal is revoked too.
pub fn cut_off_now() -> String {
    let now = DateTime::from(std::time::SystemTime::now());
    let secs = now.secs() + i64::from(now.subsec_nanos() > 0);
    DateTime::from_secs(secs)
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

/// What to revoke, on which role.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub role_name: &'a str,
    pub instance_id: &'a str,
    pub instance_arn: &'a str,
    pub incident_id: &'a str,
    /// `Instance` or `Role` (`None` never reaches this module).
    pub scope: RevokeSessions,
    /// `aws:TokenIssueTime` cut-off for role-wide revocation ([`cut_off_now`]).
    pub cut_off: &'a str,
    /// Whether the agent's channel stays open for this instance (collection to come).
    pub channel: Channel,
    /// The role's inline-policy quota ([`ROLE_POLICY_QUOTA`]).
    pub quota: usize,
    /// How long after a successful read-back the policy is read again, to catch a concurrent
    /// writer that read before our put and put after our read-back ([`CONFIRM_AFTER`]).
    pub confirm_after: Duration,
}

/// The SSM agent's channel for an instance whose credentials are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channel {
    /// Everything denied.
    #[default]
    Closed,
    /// Everything but [`CHANNEL_ACTIONS`] denied, until the collection ends.
    Open,
    /// As it is now for this instance: open if the policy lists it as collecting (a profile
    /// re-associated before the collection is revoked without shutting the agent's channel that
    /// the collection still needs), closed otherwise.
    Keep,
}

/// Longer than a concurrent writer's read-to-put time: ListRolePolicies, a GetRolePolicy per
/// inline policy and PutRolePolicy, each well under a second.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(3);

/// What was found or done.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub policy_name: String,
    /// The scope in effect for this instance: `Role` when the instance list did not fit.
    pub scope: RevokeSessions,
    pub sessions_issued_before: Option<String>,
    pub before: Value,
    pub after: Value,
    /// Set when per-instance revocation had to become role-wide.
    pub gap: Option<String>,
}

/// The role's inline policies as Cordon needs them.
#[derive(Debug, Default)]
struct RoleState {
    current: Option<RevokePolicy>,
    /// Characters used by every other inline policy of the role.
    others_size: usize,
    /// Names of the role's inline policies (to find the legacy ones).
    names: Vec<String>,
}

async fn get_policy(
    iam: &aws_sdk_iam::Client,
    role: &str,
    name: &str,
) -> Result<Option<String>, StepError> {
    match iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
    {
        Ok(p) => Ok(Some(url_decode(p.policy_document()))),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(StepError::aws("GetRolePolicy", e)),
    }
}

/// Cordon's policy on the role as IAM has it now (empty when there is none).
async fn read_policy(iam: &aws_sdk_iam::Client, role: &str) -> Result<RevokePolicy, StepError> {
    match get_policy(iam, role, POLICY_NAME).await? {
        Some(d) => RevokePolicy::parse(&d),
        None => Ok(RevokePolicy::default()),
    }
}

async fn read_role(iam: &aws_sdk_iam::Client, role: &str) -> Result<RoleState, StepError> {
    let mut names = Vec::new();
    let mut marker = None;
    loop {
        let page = iam
            .list_role_policies()
            .role_name(role)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| StepError::aws("ListRolePolicies", e))?;
        names.extend(page.policy_names().iter().cloned());
        marker = page
            .marker()
            .filter(|_| page.is_truncated())
            .map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    let mut state = RoleState::default();
    for name in &names {
        // Gone between the list and the get (another writer): it no longer uses the quota.
        let Some(document) = get_policy(iam, role, name).await? else {
            continue;
        };
        if name == POLICY_NAME {
            state.current = Some(RevokePolicy::parse(&document)?);
        } else {
            state.others_size += policy_size(&document);
        }
    }
    state.names = names;
    Ok(state)
}

/// The planned policy and the scope it gives this instance.
#[derive(Debug)]
struct Plan {
    policy: RevokePolicy,
    scope: RevokeSessions,
    gap: Option<String>,
}

/// The largest policy that revokes this instance's credentials within `budget` characters;
/// `minimal` asks for the smallest one (role-wide, no instance list).
fn plan(
    current: &RevokePolicy,
    req: &Request,
    budget: usize,
    minimal: bool,
) -> Result<Plan, usize> {
    if req.scope == RevokeSessions::Instance && !minimal {
        if current.covers(req.instance_arn, req.scope, "", req.channel) {
            return Ok(Plan {
                policy: current.clone(),
                scope: RevokeSessions::Instance,
                gap: None,
            });
        }
        let mut listed = current.clone();
        listed.instance_arns.retain(|a| a != req.instance_arn);
        listed.collecting_arns.retain(|a| a != req.instance_arn);
        match req.channel {
            // `Keep` is resolved by `revoke` before planning; unresolved it is the safe side.
            Channel::Closed | Channel::Keep => {
                listed.instance_arns.push(req.instance_arn.to_owned())
            }
            Channel::Open => listed.collecting_arns.push(req.instance_arn.to_owned()),
        }
        if listed.size() <= budget {
            return Ok(Plan {
                policy: listed,
                scope: RevokeSessions::Instance,
                gap: None,
            });
        }
    }
    // Role-wide: every session issued before the cut-off (a later cut-off revokes more).
    let mut wide = current.clone();
    if !current.revokes_older_than(req.cut_off) {
        wide.older_than = Some(req.cut_off.to_owned());
    }
    // Role-wide revocation denies the channel too: the collection will then find the agent
    // unreachable (a gap), which is the safe side.
    wide.collecting_arns.retain(|a| a != req.instance_arn);
    if req.scope == RevokeSessions::Instance
        && !wide.instance_arns.iter().any(|a| a == req.instance_arn)
    {
        wide.instance_arns.push(req.instance_arn.to_owned());
    }
    if minimal {
        wide.instance_arns.clear();
    }
    // Keep the newest ARNs: they deny credentials a re-associated profile would hand out later.
    while wide.size() > budget && !wide.instance_arns.is_empty() {
        wide.instance_arns.remove(0);
    }
    if wide.size() > budget {
        return Err(wide.size());
    }
    let gap = (req.scope == RevokeSessions::Instance).then(|| {
        format!(
            "the inline policies of role {} leave {budget} of {} characters, too few to list this instance in {POLICY_NAME}: every session of the role issued before {} was revoked instead (other instances of the role get new credentials at their next refresh); {} instance ARNs stay listed",
            req.role_name,
            req.quota,
            wide.older_than.as_deref().unwrap_or("?"),
            wide.instance_arns.len()
        )
    });
    Ok(Plan {
        policy: wide,
        scope: RevokeSessions::Role,
        gap,
    })
}

fn not_revocable(req: &Request, budget: usize, needed: usize) -> StepError {
    StepError::CredentialsNotRevoked(format!(
        "role {}'s other inline policies leave {budget} of {} characters and the smallest revocation policy needs {needed}: the credentials issued to {} stay valid until they expire. Shrink or remove an inline policy of the role (or revoke its sessions in the IAM console), then redrive",
        req.role_name, req.quota, req.instance_id
    ))
}

/// Makes sure Cordon's policy on the role revokes this instance's credentials; see the module
/// documentation for the plan, the quota and the concurrency rules.
pub async fn revoke(iam: &aws_sdk_iam::Client, req: &Request<'_>) -> Result<Outcome, StepError> {
    let mut minimal = false;
    for attempt in 1..=MAX_ATTEMPTS {
        let state = read_role(iam, req.role_name).await?;

        // A policy of an earlier version already revokes this instance (or this incident's role).
        let legacy = match req.scope {
            RevokeSessions::Instance => format!("{LEGACY_PREFIX}{}", req.instance_id),
            _ => format!("{LEGACY_PREFIX}sessions-{}", req.incident_id),
        };
        if state.names.contains(&legacy) {
            let found = json!({"policy_name": legacy});
            return Ok(Outcome {
                policy_name: legacy,
                scope: req.scope,
                sessions_issued_before: None,
                before: found.clone(),
                after: found,
                gap: None,
            });
        }

        let current = state.current.clone().unwrap_or_default();
        let resolved = Request {
            channel: match req.channel {
                Channel::Keep if current.channel_open(req.instance_arn) => Channel::Open,
                Channel::Keep => Channel::Closed,
                other => other,
            },
            ..req.clone()
        };
        let req = &resolved;
        let budget = req.quota.saturating_sub(state.others_size);
        let planned = plan(&current, req, budget, minimal)
            .map_err(|needed| not_revocable(req, budget, needed))?;
        let before = state
            .current
            .as_ref()
            .map(|p| p.summary(req.instance_arn))
            .unwrap_or(Value::Null);
        if state.current.as_ref() == Some(&planned.policy) {
            // Already in place (an earlier attempt, or a concurrent response did it for us).
            return Ok(Outcome {
                policy_name: POLICY_NAME.to_owned(),
                scope: planned.scope,
                sessions_issued_before: planned.policy.older_than.clone(),
                before: before.clone(),
                after: before,
                gap: planned.gap,
            });
        }

        let document = planned.policy.document().to_string();
        tracing::info!(role = req.role_name, attempt, size = policy_size(&document), budget, scope = ?planned.scope, "writing the revocation policy");
        match iam
            .put_role_policy()
            .role_name(req.role_name)
            .policy_name(POLICY_NAME)
            .policy_document(&document)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_limit_exceeded_exception()) =>
            {
                if minimal {
                    return Err(not_revocable(req, budget, policy_size(&document)));
                }
                tracing::warn!(
                    role = req.role_name,
                    "LimitExceeded although the plan fitted: falling back to role-wide revocation"
                );
                minimal = true;
                continue;
            }
            Err(e) => return Err(StepError::aws("PutRolePolicy", e)),
        }

        // Read back: a concurrent response may have replaced the policy after our read. Then
        // once more a little later: one that read before our put may put after this read-back.
        let mut written = read_policy(iam, req.role_name).await?;
        let channel = if planned.scope == RevokeSessions::Instance {
            req.channel
        } else {
            Channel::Closed
        };
        if written.covers(req.instance_arn, planned.scope, req.cut_off, channel) {
            tokio::time::sleep(req.confirm_after).await;
            written = read_policy(iam, req.role_name).await?;
        }
        if written.covers(req.instance_arn, planned.scope, req.cut_off, channel) {
            let gap = if minimal && req.scope == RevokeSessions::Instance {
                Some(format!(
                    "PutRolePolicy answered LimitExceeded for the instance list on role {} although its inline policies seemed to leave room: every session of the role issued before {} was revoked instead",
                    req.role_name, req.cut_off
                ))
            } else {
                planned.gap
            };
            return Ok(Outcome {
                policy_name: POLICY_NAME.to_owned(),
                scope: planned.scope,
                sessions_issued_before: written.older_than.clone(),
                before,
                after: written.summary(req.instance_arn),
                gap,
            });
        }
        tracing::warn!(
            role = req.role_name,
            attempt,
            "the revocation policy read back lacks this instance (a concurrent write): again"
        );
    }
    Err(StepError::Aws {
        kind: AwsErrorKind::Transient,
        operation: "PutRolePolicy",
        code: "ConcurrentModification".into(),
        message: format!(
            "the revocation policy of role {} was replaced by concurrent writers {MAX_ATTEMPTS} times in a row",
            req.role_name
        ),
        source: "revocation policy not confirmed".into(),
    })
}

/// Ends the collection exemption of this instance: when Cordon's policy on the role lists it as
/// collecting, it is moved to the full deny (read-modify-write as [`revoke`]); otherwise nothing
/// is changed and `None` is answered (no exemption was ever opened, or it is closed already).
pub async fn close_channel(
    iam: &aws_sdk_iam::Client,
    req: &Request<'_>,
) -> Result<Option<Outcome>, StepError> {
    if !read_policy(iam, req.role_name)
        .await?
        .channel_open(req.instance_arn)
    {
        return Ok(None);
    }
    let closing = Request {
        channel: Channel::Closed,
        scope: RevokeSessions::Instance,
        ..req.clone()
    };
    revoke(iam, &closing).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";

    fn req(scope: RevokeSessions) -> Request<'static> {
        Request {
            role_name: "app-server",
            instance_id: "i-0123456789abcdef0",
            instance_arn: ARN,
            incident_id: "IR-5",
            scope,
            cut_off: "2030-01-01T00:00:01Z",
            channel: Channel::Closed,
            quota: ROLE_POLICY_QUOTA,
            confirm_after: Duration::ZERO,
        }
    }

    fn arns(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("arn:aws:ec2:us-east-1:123456789012:instance/i-{i:017x}"))
            .collect()
    }

    #[test]
    fn a_document_round_trips_and_whitespace_is_not_counted() {
        let p = RevokePolicy {
            instance_arns: arns(2),
            collecting_arns: arns(1),
            older_than: Some("2030-01-01T00:00:00Z".into()),
            other_statements: vec![json!({"Effect": "Deny", "Action": "s3:*", "Resource": "*"})],
        };
        let pretty = serde_json::to_string_pretty(&p.document()).unwrap();
        assert_eq!(RevokePolicy::parse(&pretty).unwrap(), p);
        assert_eq!(policy_size(&pretty), p.size());
        assert!(pretty.len() > p.size());
    }

    #[test]
    fn url_decoding_restores_the_json() {
        assert_eq!(
            url_decode("%7B%22a%22%3A%20%22b%2Fc%22%7D"),
            r#"{"a": "b/c"}"#
        );
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz"), "%zz");
    }

    #[test]
    fn the_instance_is_listed_while_it_fits() {
        let current = RevokePolicy {
            instance_arns: arns(3),
            ..Default::default()
        };
        let p = plan(&current, &req(RevokeSessions::Instance), 10_000, false).unwrap();
        assert_eq!(p.scope, RevokeSessions::Instance);
        assert_eq!(p.policy.instance_arns.len(), 4);
        assert_eq!(p.policy.instance_arns[3], ARN);
        assert!(p.policy.older_than.is_none() && p.gap.is_none());
    }

    #[test]
    fn a_full_list_becomes_role_wide_keeping_the_newest_arns() {
        let current = RevokePolicy {
            instance_arns: arns(10),
            ..Default::default()
        };
        let budget = current.size() + 20; // room for neither one more ARN nor the time statement
        let p = plan(&current, &req(RevokeSessions::Instance), budget, false).unwrap();
        assert_eq!(p.scope, RevokeSessions::Role);
        assert_eq!(p.policy.older_than.as_deref(), Some("2030-01-01T00:00:01Z"));
        assert!(p.policy.size() <= budget);
        assert_eq!(p.policy.instance_arns.last().map(String::as_str), Some(ARN));
        assert!(p.policy.instance_arns.len() < 11);
        assert!(p.gap.unwrap().contains("app-server"));
    }

    #[test]
    fn nothing_fitting_is_an_error_with_the_size_needed() {
        let needed = plan(
            &RevokePolicy::default(),
            &req(RevokeSessions::Instance),
            50,
            false,
        )
        .unwrap_err();
        assert!(needed > 50);
    }

    #[test]
    fn role_scope_keeps_a_later_cut_off() {
        let current = RevokePolicy {
            older_than: Some("2031-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        let p = plan(&current, &req(RevokeSessions::Role), 10_000, false).unwrap();
        assert_eq!(p.policy, current, "a later cut-off already revokes more");
        let older = RevokePolicy {
            older_than: Some("2020-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        let p = plan(&older, &req(RevokeSessions::Role), 10_000, false).unwrap();
        assert_eq!(p.policy.older_than.as_deref(), Some("2030-01-01T00:00:01Z"));
        assert!(p.gap.is_none(), "role scope was asked for: no gap");
    }

    #[test]
    fn an_open_channel_lists_the_instance_under_the_not_action_deny_and_closing_moves_it() {
        let current = RevokePolicy {
            instance_arns: arns(2),
            ..Default::default()
        };
        let open = Request {
            channel: Channel::Open,
            ..req(RevokeSessions::Instance)
        };
        let p = plan(&current, &open, 10_000, false).unwrap();
        assert_eq!(p.policy.collecting_arns, [ARN]);
        assert_eq!(p.policy.instance_arns, arns(2));
        let doc = p.policy.document();
        let channel = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == SID_CHANNEL)
            .unwrap();
        assert_eq!(channel["Effect"], "Deny");
        assert_eq!(
            channel["NotAction"].as_array().unwrap().len(),
            CHANNEL_ACTIONS.len()
        );
        assert!(channel.get("Action").is_none());
        // Closing moves it to the full deny; the others are untouched.
        let closed = plan(&p.policy, &req(RevokeSessions::Instance), 10_000, false).unwrap();
        assert!(closed.policy.collecting_arns.is_empty());
        assert_eq!(
            closed.policy.instance_arns.last().map(String::as_str),
            Some(ARN)
        );
        assert_eq!(closed.policy.instance_arns.len(), 3);
        // Already open: nothing to change.
        let again = plan(&p.policy, &open, 10_000, false).unwrap();
        assert_eq!(again.policy, p.policy);
    }

    #[test]
    fn role_wide_revocation_never_keeps_a_channel_open() {
        let current = RevokePolicy {
            collecting_arns: vec![ARN.to_owned()],
            ..Default::default()
        };
        let p = plan(&current, &req(RevokeSessions::Role), 10_000, false).unwrap();
        assert!(p.policy.collecting_arns.is_empty());
    }

    #[test]
    fn the_cut_off_is_whole_seconds_in_utc() {
        let t = cut_off_now();
        assert!(t.ends_with('Z') && !t.contains('.'), "{t}");
        assert!(parse_time(&t).is_some());
    }
}
