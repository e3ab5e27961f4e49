use super::*;
use aws_sdk_ec2::operation::associate_iam_instance_profile::AssociateIamInstanceProfileOutput;
use aws_sdk_ec2::operation::describe_iam_instance_profile_associations::DescribeIamInstanceProfileAssociationsOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::disassociate_iam_instance_profile::DisassociateIamInstanceProfileOutput;
use aws_sdk_ec2::operation::modify_instance_metadata_options::ModifyInstanceMetadataOptionsOutput;
use aws_sdk_ec2::types::{
    IamInstanceProfile, IamInstanceProfileAssociationState, InstanceMetadataOptionsResponse,
    InstanceMetadataOptionsState, Reservation,
};
use aws_sdk_iam::operation::get_instance_profile::GetInstanceProfileOutput;
use aws_sdk_iam::operation::get_role_policy::GetRolePolicyOutput;
use aws_sdk_iam::operation::list_role_policies::ListRolePoliciesOutput;
use aws_sdk_iam::operation::put_role_policy::PutRolePolicyOutput;
use aws_sdk_iam::types::{InstanceProfile, Role};
use aws_smithy_mocks::{mock, mock_client, MockResponse, Rule, RuleMode};
use cordon_common::testing::{ec2_error, query_error};
use cordon_common::timeline::Outcome;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const ID: &str = "i-0123456789abcdef0";
const ARN: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
const APP: &str = "arn:aws:iam::123456789012:instance-profile/app-server";
const FORENSIC: &str = "arn:aws:iam::123456789012:instance-profile/cordon-forensic";
const APP_DATA: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":"arn:aws:s3:::app-data/*"}]}"#;

fn incident(revoke: &str) -> Incident {
    Incident::from_value(
        json!({"incident_id": "IR-5", "instance_id": ID, "options": {"revoke_sessions": revoke}}),
    )
    .unwrap()
}

fn config() -> Config {
    Config {
        forensic_profile_arn: FORENSIC.into(),
        region: "us-east-1".into(),
        association_polls: 3,
        association_poll_interval: Duration::from_millis(1),
        role_policy_quota: revoke::ROLE_POLICY_QUOTA,
        revocation_confirm_after: Duration::from_millis(1),
    }
}

fn associations(arn: Option<&'static str>, state: IamInstanceProfileAssociationState) -> Rule {
    mock!(aws_sdk_ec2::Client::describe_iam_instance_profile_associations)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("instance-id") && f.values() == [ID])
        })
        .then_output(move || {
            let mut o = DescribeIamInstanceProfileAssociationsOutput::builder();
            if let Some(arn) = arn {
                o = o.iam_instance_profile_associations(
                    IamInstanceProfileAssociation::builder()
                        .association_id("iip-assoc-1")
                        .instance_id(ID)
                        .state(state.clone())
                        .iam_instance_profile(IamInstanceProfile::builder().arn(arn).build())
                        .build(),
                );
            }
            o.build()
        })
}

fn disassociate_ok() -> Rule {
    mock!(aws_sdk_ec2::Client::disassociate_iam_instance_profile)
        .match_requests(|r| r.association_id() == Some("iip-assoc-1"))
        .then_output(|| DisassociateIamInstanceProfileOutput::builder().build())
}

fn role_profile() -> Rule {
    mock!(aws_sdk_iam::Client::get_instance_profile)
        .match_requests(|r| r.instance_profile_name() == Some("app-server"))
        .then_output(|| {
            GetInstanceProfileOutput::builder()
                .instance_profile(
                    InstanceProfile::builder()
                        .instance_profile_name("app-server")
                        .path("/")
                        .instance_profile_id("AIP")
                        .arn(APP)
                        .create_date(aws_smithy_types::DateTime::from_secs(0))
                        .roles(
                            Role::builder()
                                .role_name("app-server")
                                .path("/")
                                .role_id("AR")
                                .arn("arn:aws:iam::123456789012:role/app-server")
                                .create_date(aws_smithy_types::DateTime::from_secs(0))
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
        })
}

/// RFC 3986 percent-encoding, as IAM answers GetRolePolicy.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A small IAM for one role: inline policies by name, a size quota counted as IAM counts it, and
/// an optional concurrent writer that replaces Cordon's policy right after each of our puts.
#[derive(Clone)]
struct FakeIam {
    policies: Arc<Mutex<BTreeMap<String, String>>>,
    /// The quota IAM enforces (may differ from the one the step plans with).
    quota: usize,
    /// A concurrent response that writes this document over each of our first `n` puts.
    interloper: Option<(usize, String)>,
    /// One that read before our first put and writes this document right after our first
    /// read-back of Cordon's policy.
    late_interloper: Option<String>,
}

struct IamRules {
    list: Rule,
    get: Rule,
    put: Rule,
    profile: Rule,
}

impl FakeIam {
    fn new(policies: &[(&str, &str)]) -> Self {
        FakeIam {
            policies: Arc::new(Mutex::new(
                policies
                    .iter()
                    .map(|(n, d)| (n.to_string(), d.to_string()))
                    .collect(),
            )),
            quota: revoke::ROLE_POLICY_QUOTA,
            interloper: None,
            late_interloper: None,
        }
    }

    fn policy(&self, name: &str) -> Option<serde_json::Value> {
        self.policies
            .lock()
            .unwrap()
            .get(name)
            .map(|d| serde_json::from_str(d).unwrap())
    }

    fn rules(&self) -> IamRules {
        let list_state = self.policies.clone();
        let get_state = self.policies.clone();
        let put_state = self.policies.clone();
        let quota = self.quota;
        let interloper = self.interloper.clone();
        let puts = Arc::new(Mutex::new(0usize));
        let get_puts = puts.clone();
        let late = Arc::new(Mutex::new(self.late_interloper.clone()));
        IamRules {
            list: mock!(aws_sdk_iam::Client::list_role_policies)
                .match_requests(|r| r.role_name() == Some("app-server"))
                .then_compute_output(move |_| {
                    ListRolePoliciesOutput::builder()
                        .set_policy_names(Some(
                            list_state.lock().unwrap().keys().cloned().collect(),
                        ))
                        .is_truncated(false)
                        .build()
                        .unwrap()
                }),
            get: mock!(aws_sdk_iam::Client::get_role_policy).then_compute_response(move |r| {
                let name = r.policy_name().unwrap_or_default();
                let mut policies = get_state.lock().unwrap();
                let answer = policies.get(name).cloned();
                if name == "cordon-revoke" && *get_puts.lock().unwrap() > 0 {
                    if let Some(theirs) = late.lock().unwrap().take() {
                        policies.insert(name.to_owned(), theirs);
                    }
                }
                match answer {
                    Some(doc) => MockResponse::Output(
                        GetRolePolicyOutput::builder()
                            .role_name("app-server")
                            .policy_name(name)
                            .policy_document(url_encode(&doc))
                            .build()
                            .unwrap(),
                    ),
                    None => MockResponse::Http(query_error(404, "NoSuchEntity")()),
                }
            }),
            put: mock!(aws_sdk_iam::Client::put_role_policy).then_compute_response(move |r| {
                let name = r.policy_name().unwrap_or_default().to_owned();
                let doc = r.policy_document().unwrap_or_default().to_owned();
                assert!(
                    serde_json::from_str::<serde_json::Value>(&doc).is_ok(),
                    "valid JSON"
                );
                let mut policies = put_state.lock().unwrap();
                let others: usize = policies
                    .iter()
                    .filter(|(n, _)| **n != name)
                    .map(|(_, d)| revoke::policy_size(d))
                    .sum();
                if others + revoke::policy_size(&doc) > quota {
                    return MockResponse::Http(query_error(409, "LimitExceeded")());
                }
                policies.insert(name.clone(), doc);
                let mut n = puts.lock().unwrap();
                *n += 1;
                if let Some((strikes, other)) = &interloper {
                    if *n <= *strikes {
                        policies.insert(name, other.clone());
                    }
                }
                MockResponse::Output(PutRolePolicyOutput::builder().build())
            }),
            profile: role_profile(),
        }
    }
}

fn clients(ec2: &[&Rule], iam: &[&Rule]) -> Clients {
    Clients {
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, ec2, |c| c
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())),
        iam: mock_client!(aws_sdk_iam, RuleMode::MatchAny, iam, |c| c
            .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled())),
    }
}

fn iam_rules(r: &IamRules) -> [&Rule; 4] {
    [&r.list, &r.get, &r.put, &r.profile]
}

fn denied_arns(policy: &serde_json::Value) -> Vec<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Sid"] == "CordonRevokeInstanceCredentials")
        .flat_map(|s| {
            s["Condition"]["StringEquals"]["ec2:SourceInstanceARN"]
                .as_array()
                .unwrap()
                .clone()
        })
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn issued_before(policy: &serde_json::Value) -> Option<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "CordonRevokeOlderSessions")
        .map(|s| {
            assert_eq!(s["Effect"], "Deny");
            s["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
                .as_str()
                .unwrap()
                .to_owned()
        })
}

/// A syntactically valid policy of `size` non-whitespace characters.
fn filler(size: usize) -> String {
    let head = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::"#;
    let tail = r#""}]}"#;
    let pad = size - head.len() - tail.len();
    format!("{head}{}{tail}", "b".repeat(pad))
}

fn other_arns(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("arn:aws:ec2:us-east-1:123456789012:instance/i-{i:017x}"))
        .collect()
}

fn cordon_policy(arns: &[String]) -> String {
    revoke::RevokePolicy {
        instance_arns: arns.to_vec(),
        ..Default::default()
    }
    .document()
    .to_string()
}

#[tokio::test]
async fn removes_the_profile_and_lists_this_instance_in_the_one_revocation_policy() {
    let assoc = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let disassociate = disassociate_ok();
    let iam = FakeIam::new(&[("app-data", APP_DATA)]);
    let r = iam.rules();
    let c = clients(&[&assoc, &disassociate], &iam_rules(&r));

    let out = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();

    assert_eq!(disassociate.num_calls(), 1);
    assert_eq!(r.put.num_calls(), 1);
    let policy = iam.policy("cordon-revoke").expect("policy written");
    assert_eq!(denied_arns(&policy), [ARN]);
    assert_eq!(issued_before(&policy), None, "other instances keep working");
    assert_eq!(
        iam.policy("app-data").unwrap()["Statement"][0]["Effect"],
        "Allow",
        "the role's own policy is untouched"
    );
    assert_eq!(out.removed_profile_arn.as_deref(), Some(APP));
    let revoked = out.revoked.unwrap();
    assert_eq!(revoked.role_name, "app-server");
    assert_eq!(revoked.policy_name, "cordon-revoke");
    assert_eq!(revoked.scope, RevokeSessions::Instance);
    assert!(out.gaps.is_empty(), "{:?}", out.gaps);
    assert!(out.actions.iter().all(|a| a.outcome == Outcome::Changed));
    let revoke_action = out
        .actions
        .iter()
        .find(|a| a.target == "role/app-server")
        .unwrap();
    assert_eq!(revoke_action.after["this_instance_denied"], true);
}

#[tokio::test]
async fn a_second_instance_of_the_role_joins_the_same_policy() {
    let assoc = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let disassociate = disassociate_ok();
    let earlier = other_arns(2);
    let iam = FakeIam::new(&[
        ("app-data", APP_DATA),
        ("cordon-revoke", &cordon_policy(&earlier)),
    ]);
    let r = iam.rules();
    let c = clients(&[&assoc, &disassociate], &iam_rules(&r));
    remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    let mut expected = earlier.clone();
    expected.push(ARN.to_owned());
    assert_eq!(denied_arns(&iam.policy("cordon-revoke").unwrap()), expected);
    assert_eq!(
        iam.policies.lock().unwrap().len(),
        2,
        "no second Cordon policy"
    );
}

#[tokio::test]
async fn role_wide_revocation_denies_older_tokens() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let iam = FakeIam::new(&[("app-data", APP_DATA)]);
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let before = revoke::cut_off_now();
    let out = remove(
        &c,
        &config(),
        &incident("role"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    let policy = iam.policy("cordon-revoke").unwrap();
    let cut_off = issued_before(&policy).expect("aws:TokenIssueTime statement");
    assert!(cut_off >= before, "{cut_off} < {before}");
    assert!(denied_arns(&policy).is_empty());
    let revoked = out.revoked.unwrap();
    assert_eq!(revoked.scope, RevokeSessions::Role);
    assert_eq!(revoked.sessions_issued_before, Some(cut_off));
    assert!(out.gaps.is_empty(), "role scope was asked for");
}

#[tokio::test]
async fn a_rerun_finds_the_instance_listed_and_writes_nothing() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let iam = FakeIam::new(&[("cordon-revoke", &cordon_policy(&[ARN.to_owned()]))]);
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let out = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    assert_eq!(r.put.num_calls(), 0);
    assert!(
        out.actions.iter().all(|a| a.outcome == Outcome::Unchanged),
        "{:?}",
        out.actions
    );
}

#[tokio::test]
async fn a_policy_of_the_earlier_per_instance_design_counts_as_revoked() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let legacy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"CordonRevokeInstanceCredentials","Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"ec2:SourceInstanceARN":"arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"}}}]}"#;
    let iam = FakeIam::new(&[("cordon-revoke-i-0123456789abcdef0", legacy)]);
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let out = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    assert_eq!(r.put.num_calls(), 0, "converges on the old policy");
    assert_eq!(
        out.revoked.unwrap().policy_name,
        "cordon-revoke-i-0123456789abcdef0"
    );
    assert!(out.actions.iter().all(|a| a.outcome == Outcome::Unchanged));
}

#[tokio::test]
async fn a_nearly_full_quota_revokes_the_whole_role_and_records_the_gap() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let earlier = other_arns(3);
    let current = cordon_policy(&earlier);
    // Room for the current policy plus 30 characters: not one more ARN (~67), nor the time
    // statement (~130) beside all three.
    let used = revoke::ROLE_POLICY_QUOTA - revoke::policy_size(&current) - 30;
    let fill = filler(used);
    let iam = FakeIam::new(&[("app-data", &fill), ("cordon-revoke", &current)]);
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));

    let out = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();

    let policy = iam.policy("cordon-revoke").unwrap();
    assert!(issued_before(&policy).is_some(), "{policy}");
    let listed = denied_arns(&policy);
    assert!(
        listed.len() < 4 && listed.last().map(String::as_str) == Some(ARN),
        "{listed:?}"
    );
    let total: usize = iam
        .policies
        .lock()
        .unwrap()
        .values()
        .map(|d| revoke::policy_size(d))
        .sum();
    assert!(total <= revoke::ROLE_POLICY_QUOTA);
    assert_eq!(out.revoked.unwrap().scope, RevokeSessions::Role);
    assert!(
        out.gaps
            .iter()
            .any(|g| g.what == "per-instance credential revocation"
                && g.reason.contains("app-server")),
        "{:?}",
        out.gaps
    );
}

#[tokio::test]
async fn a_quota_with_room_for_nothing_fails_as_credentials_not_revoked() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let fill = filler(revoke::ROLE_POLICY_QUOTA - 40);
    let iam = FakeIam::new(&[("app-data", &fill)]);
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let err = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap_err();
    assert_eq!(err.name(), "CredentialsNotRevoked");
    assert!(err.to_string().contains("app-server"), "{err}");
    assert_eq!(r.put.num_calls(), 0, "nothing that cannot fit is attempted");
}

#[tokio::test]
async fn limit_exceeded_although_the_plan_fitted_falls_back_to_role_wide() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let earlier = other_arns(5);
    let mut iam = FakeIam::new(&[("cordon-revoke", &cordon_policy(&earlier))]);
    // IAM allows less than the step plans with: the listed plan is refused.
    iam.quota = revoke::policy_size(&cordon_policy(&earlier)) + 10;
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let out = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    assert_eq!(
        r.put.num_calls(),
        2,
        "the listed plan, then the minimal one"
    );
    let policy = iam.policy("cordon-revoke").unwrap();
    assert!(issued_before(&policy).is_some());
    assert!(denied_arns(&policy).is_empty());
    assert!(
        out.gaps.iter().any(|g| g.reason.contains("LimitExceeded")),
        "{:?}",
        out.gaps
    );

    // And when even the minimal one is refused: a named containment failure.
    let mut full = FakeIam::new(&[]);
    full.quota = 20;
    let r = full.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let err = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap_err();
    assert_eq!(err.name(), "CredentialsNotRevoked");
    assert_eq!(r.put.num_calls(), 2);
}

#[tokio::test]
async fn a_concurrent_writer_that_drops_our_arn_is_read_back_and_retried() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let theirs = other_arns(1);

    // Another response writes its own list (without us) over our first put: the read-back
    // notices, and the second attempt keeps both ARNs.
    let mut iam = FakeIam::new(&[]);
    iam.interloper = Some((1, cordon_policy(&theirs)));
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    assert_eq!(r.put.num_calls(), 2);
    let mut expected = theirs.clone();
    expected.push(ARN.to_owned());
    assert_eq!(denied_arns(&iam.policy("cordon-revoke").unwrap()), expected);

    // One that overwrites every put: bounded, then Transient for the state machine to retry.
    let mut iam = FakeIam::new(&[]);
    iam.interloper = Some((usize::MAX, cordon_policy(&theirs)));
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let err = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap_err();
    assert_eq!(err.name(), "Transient");
    assert_eq!(err.aws_code(), Some("ConcurrentModification"));
    assert_eq!(r.put.num_calls() as u32, revoke::MAX_ATTEMPTS);
}

#[tokio::test]
async fn a_writer_that_drops_our_arn_after_the_read_back_is_caught_by_the_confirmation() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let theirs = other_arns(1);

    // Another response read the policy before our put and puts its own list (without us) just
    // after our read-back: the second read, later, notices, and the next attempt keeps both.
    let mut iam = FakeIam::new(&[]);
    iam.late_interloper = Some(cordon_policy(&theirs));
    let r = iam.rules();
    let c = clients(&[&assoc], &iam_rules(&r));
    let out = remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    assert_eq!(r.put.num_calls(), 2);
    let mut expected = theirs.clone();
    expected.push(ARN.to_owned());
    assert_eq!(denied_arns(&iam.policy("cordon-revoke").unwrap()), expected);
    assert_eq!(out.revoked.unwrap().scope, RevokeSessions::Instance);
}

#[tokio::test]
async fn revoke_none_is_a_recorded_gap() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let c = clients(&[&assoc], &[]);
    let out = remove(
        &c,
        &config(),
        &incident("none"),
        Some(APP.into()),
        revoke::Channel::Closed,
    )
    .await
    .unwrap();
    assert_eq!(out.gaps.len(), 1);
    assert!(out.revoked.is_none());
}

#[tokio::test]
async fn attaches_the_forensic_profile_and_waits_for_it() {
    let assoc = mock!(aws_sdk_ec2::Client::describe_iam_instance_profile_associations)
        .sequence()
        .output(|| DescribeIamInstanceProfileAssociationsOutput::builder().build())
        .output(|| {
            DescribeIamInstanceProfileAssociationsOutput::builder()
                .iam_instance_profile_associations(
                    IamInstanceProfileAssociation::builder()
                        .state(IamInstanceProfileAssociationState::Associating)
                        .iam_instance_profile(IamInstanceProfile::builder().arn(FORENSIC).build())
                        .build(),
                )
                .build()
        })
        .output(|| {
            DescribeIamInstanceProfileAssociationsOutput::builder()
                .iam_instance_profile_associations(
                    IamInstanceProfileAssociation::builder()
                        .state(IamInstanceProfileAssociationState::Associated)
                        .iam_instance_profile(IamInstanceProfile::builder().arn(FORENSIC).build())
                        .build(),
                )
                .build()
        })
        .build();
    let associate = mock!(aws_sdk_ec2::Client::associate_iam_instance_profile)
        .match_requests(|r| {
            r.instance_id() == Some(ID)
                && r.iam_instance_profile().and_then(|p| p.arn()) == Some(FORENSIC)
        })
        .then_output(|| AssociateIamInstanceProfileOutput::builder().build());
    let c = clients(&[&assoc, &associate], &[]);
    attach_forensic(&c, &config(), &incident("instance"))
        .await
        .unwrap();
    assert_eq!(associate.num_calls(), 1);
    assert_eq!(assoc.num_calls(), 3);
}

#[tokio::test]
async fn a_foreign_profile_at_attach_time_is_profile_reassociated_and_nothing_changes() {
    let assoc = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let associate = mock!(aws_sdk_ec2::Client::associate_iam_instance_profile)
        .then_output(|| AssociateIamInstanceProfileOutput::builder().build());
    let disassociate = disassociate_ok();
    let c = clients(&[&assoc, &associate, &disassociate], &[]);
    let err = attach_forensic(&c, &config(), &incident("instance"))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ProfileReassociated");
    assert!(err.to_string().contains(APP), "{err}");
    assert_eq!(associate.num_calls() + disassociate.num_calls(), 0);
}

#[tokio::test]
async fn remove_reassociated_removes_and_revokes_then_fails_loudly() {
    let assoc = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let disassociate = disassociate_ok();
    let iam = FakeIam::new(&[]);
    let r = iam.rules();
    let c = clients(&[&assoc, &disassociate], &iam_rules(&r));
    let err = handle(
        &c,
        &config(),
        json!({"action": "remove-reassociated", "incident": {"incident_id": "IR-5", "instance_id": ID}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.name(), "ProfileReassociated");
    let message = err.to_string();
    assert!(
        message.contains(APP) && message.contains("app-server") && message.contains("redrive"),
        "{message}"
    );
    assert_eq!(disassociate.num_calls(), 1);
    assert_eq!(denied_arns(&iam.policy("cordon-revoke").unwrap()), [ARN]);
}

#[tokio::test]
async fn remove_reassociated_with_nothing_foreign_succeeds() {
    for arn in [None, Some(FORENSIC)] {
        let assoc = associations(arn, IamInstanceProfileAssociationState::Associated);
        let disassociate = disassociate_ok();
        let c = clients(&[&assoc, &disassociate], &[]);
        let out = remove_reassociated(&c, &config(), &incident("instance"))
            .await
            .unwrap();
        assert_eq!(
            disassociate.num_calls(),
            0,
            "the forensic profile is not foreign"
        );
        assert!(out.actions.iter().all(|a| a.outcome == Outcome::Unchanged));
    }
}

fn instance_with_endpoint(state: InstanceMetadataEndpointState) -> DescribeInstancesOutput {
    DescribeInstancesOutput::builder()
        .reservations(
            Reservation::builder()
                .instances(
                    Instance::builder()
                        .instance_id(ID)
                        .metadata_options(
                            InstanceMetadataOptionsResponse::builder()
                                .http_endpoint(state)
                                .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
                                .state(InstanceMetadataOptionsState::Pending)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build()
}

fn modify_metadata() -> Rule {
    mock!(aws_sdk_ec2::Client::modify_instance_metadata_options)
        .match_requests(|r| {
            r.instance_id() == Some(ID)
                && r.http_endpoint() == Some(&InstanceMetadataEndpointState::Disabled)
                // The token setting is sent back as it was, not left to a default.
                && r.http_tokens() == Some(&aws_sdk_ec2::types::HttpTokensState::Required)
                && r.http_put_response_hop_limit().is_none()
        })
        .then_output(|| ModifyInstanceMetadataOptionsOutput::builder().build())
}

#[tokio::test]
async fn disable_metadata_turns_the_endpoint_off_and_reads_it_back() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .sequence()
        .output(|| instance_with_endpoint(InstanceMetadataEndpointState::Enabled))
        .output(|| instance_with_endpoint(InstanceMetadataEndpointState::Disabled))
        .build();
    let modify = modify_metadata();
    let c = clients(&[&assoc, &describe, &modify], &[]);
    let out = handle(
        &c,
        &config(),
        json!({"action": "disable-metadata", "incident": {"incident_id": "IR-5", "instance_id": ID}}),
    )
    .await
    .unwrap();
    assert_eq!(modify.num_calls(), 1);
    assert_eq!(describe.num_calls(), 2, "read before and read back");
    let action = &out.actions[0];
    assert_eq!(action.action, "disable instance metadata endpoint");
    assert_eq!(action.before["http_endpoint"], "enabled");
    assert_eq!(
        action.before["http_tokens"], "required",
        "recorded for release"
    );
    assert_eq!(action.after["http_endpoint"], "disabled");
    assert_eq!(action.outcome, Outcome::Changed);
}

#[tokio::test]
async fn disable_metadata_when_already_off_changes_nothing() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_with_endpoint(InstanceMetadataEndpointState::Disabled));
    let modify = modify_metadata();
    let c = clients(&[&assoc, &describe, &modify], &[]);
    let out = disable_metadata(&c, &config(), &incident("instance"))
        .await
        .unwrap();
    assert_eq!(modify.num_calls(), 0);
    assert_eq!(out.actions[0].outcome, Outcome::Unchanged);
}

#[tokio::test]
async fn disable_metadata_that_does_not_read_back_is_not_verified() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_with_endpoint(InstanceMetadataEndpointState::Enabled));
    let modify = modify_metadata();
    let c = clients(&[&assoc, &describe, &modify], &[]);
    let err = disable_metadata(&c, &config(), &incident("instance"))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ContainmentNotVerified");
}

#[tokio::test]
async fn disable_metadata_with_a_foreign_profile_turns_the_endpoint_off_and_fails() {
    let assoc = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .sequence()
        .output(|| instance_with_endpoint(InstanceMetadataEndpointState::Enabled))
        .output(|| instance_with_endpoint(InstanceMetadataEndpointState::Disabled))
        .build();
    let disassociate = disassociate_ok();
    let modify = modify_metadata();
    let iam = FakeIam::new(&[]);
    let r = iam.rules();
    let c = clients(&[&assoc, &describe, &disassociate, &modify], &iam_rules(&r));
    let err = disable_metadata(&c, &config(), &incident("instance"))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ProfileReassociated");
    assert!(err.to_string().contains(APP), "{err}");
    assert_eq!(modify.num_calls(), 1, "the endpoint is off first");
    assert_eq!(
        disassociate.num_calls() + r.put.num_calls(),
        0,
        "removal and revocation are remove-reassociated's, the state that follows"
    );
}

#[tokio::test]
async fn removes_only_the_forensic_profile() {
    let assoc = associations(
        Some(FORENSIC),
        IamInstanceProfileAssociationState::Associated,
    );
    let disassociate = mock!(aws_sdk_ec2::Client::disassociate_iam_instance_profile)
        .then_output(|| DisassociateIamInstanceProfileOutput::builder().build());
    let c = clients(&[&assoc, &disassociate], &[]);
    let out = remove_forensic(&c, &config(), &incident("instance"))
        .await
        .unwrap();
    assert_eq!(disassociate.num_calls(), 1);
    assert_eq!(out.actions[0].before, json!(FORENSIC));

    let other = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let c = clients(&[&other, &disassociate], &[]);
    remove_forensic(&c, &config(), &incident("instance"))
        .await
        .unwrap();
    assert_eq!(
        disassociate.num_calls(),
        1,
        "a non-forensic profile is not touched by remove-forensic"
    );
}

#[tokio::test]
async fn errors_are_named_and_bad_arns_rejected_before_any_call() {
    let throttled = mock!(aws_sdk_ec2::Client::describe_iam_instance_profile_associations)
        .then_http_response(ec2_error(503, "RequestLimitExceeded"));
    let c = clients(&[&throttled], &[]);
    assert_eq!(
        remove(
            &c,
            &config(),
            &incident("instance"),
            None,
            revoke::Channel::Closed
        )
        .await
        .unwrap_err()
        .name(),
        "Transient"
    );

    let c = clients(&[], &[]);
    let bad = json!({"action": "remove", "incident": {"incident_id": "IR-5", "instance_id": ID}, "profile_arn": "not-an-arn"});
    assert_eq!(
        handle(&c, &config(), bad).await.unwrap_err().name(),
        "InvalidInput"
    );
    assert_eq!(
        profile_name("arn:aws:iam::1:instance-profile/path/to/name").unwrap(),
        "name"
    );

    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let profile = role_profile();
    let list_denied = mock!(aws_sdk_iam::Client::list_role_policies)
        .then_http_response(query_error(403, "AccessDenied"));
    let c = clients(&[&assoc], &[&profile, &list_denied]);
    assert_eq!(
        remove(
            &c,
            &config(),
            &incident("instance"),
            Some(APP.into()),
            revoke::Channel::Closed
        )
        .await
        .unwrap_err()
        .name(),
        "AccessDenied"
    );
}

#[tokio::test]
async fn with_collection_to_come_the_agent_channel_stays_open_until_closed() {
    let assoc = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let disassociate = disassociate_ok();
    let iam = FakeIam::new(&[]);
    let r = iam.rules();
    let c = clients(&[&assoc, &disassociate], &iam_rules(&r));

    remove(
        &c,
        &config(),
        &incident("instance"),
        Some(APP.into()),
        revoke::Channel::Open,
    )
    .await
    .unwrap();
    let policy = iam.policy("cordon-revoke").expect("policy written");
    assert!(denied_arns(&policy).is_empty(), "{policy}");
    let channel = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "CordonRevokeExceptCollectionChannel")
        .expect("the channel statement");
    assert_eq!(
        channel["Condition"]["StringEquals"]["ec2:SourceInstanceARN"],
        json!([ARN])
    );
    assert!(channel["NotAction"].as_array().unwrap().iter().all(|a| a
        .as_str()
        .unwrap()
        .starts_with("ssm")
        || a.as_str().unwrap().starts_with("ec2messages:")));

    let mut out = Output::default();
    close_channel(&c, &config(), &incident("instance"), Some(APP), &mut out)
        .await
        .unwrap();
    let policy = iam.policy("cordon-revoke").unwrap();
    assert_eq!(denied_arns(&policy), [ARN]);
    assert!(!policy
        .to_string()
        .contains("CordonRevokeExceptCollectionChannel"));
    assert_eq!(out.actions.len(), 1, "{:?}", out.actions);
    assert_eq!(out.actions[0].after["this_instance_collecting"], false);

    // Closing again changes nothing and records nothing.
    let puts = r.put.num_calls();
    let mut again = Output::default();
    close_channel(&c, &config(), &incident("instance"), Some(APP), &mut again)
        .await
        .unwrap();
    assert_eq!(r.put.num_calls(), puts);
    assert!(again.actions.is_empty());
}
