use super::*;
use aws_sdk_ec2::operation::associate_iam_instance_profile::AssociateIamInstanceProfileOutput;
use aws_sdk_ec2::operation::describe_iam_instance_profile_associations::DescribeIamInstanceProfileAssociationsOutput;
use aws_sdk_ec2::operation::disassociate_iam_instance_profile::DisassociateIamInstanceProfileOutput;
use aws_sdk_ec2::types::{IamInstanceProfile, IamInstanceProfileAssociationState};
use aws_sdk_iam::operation::get_instance_profile::GetInstanceProfileOutput;
use aws_sdk_iam::operation::get_role_policy::GetRolePolicyOutput;
use aws_sdk_iam::operation::put_role_policy::PutRolePolicyOutput;
use aws_sdk_iam::types::{InstanceProfile, Role};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::{ec2_error, query_error};
use cordon_common::timeline::Outcome;

const ID: &str = "i-0123456789abcdef0";
const APP: &str = "arn:aws:iam::123456789012:instance-profile/app-server";
const FORENSIC: &str = "arn:aws:iam::123456789012:instance-profile/cordon-forensic";

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

fn clients(ec2: &[&Rule], iam: &[&Rule]) -> Clients {
    Clients {
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, ec2, |c| c
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())),
        iam: mock_client!(aws_sdk_iam, RuleMode::MatchAny, iam, |c| c
            .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled())),
    }
}

#[tokio::test]
async fn removes_the_profile_and_denies_this_instance_credentials_only() {
    let assoc = associations(Some(APP), IamInstanceProfileAssociationState::Associated);
    let disassociate = mock!(aws_sdk_ec2::Client::disassociate_iam_instance_profile)
        .match_requests(|r| r.association_id() == Some("iip-assoc-1"))
        .then_output(|| DisassociateIamInstanceProfileOutput::builder().build());
    let profile = role_profile();
    let no_policy = mock!(aws_sdk_iam::Client::get_role_policy)
        .then_http_response(query_error(404, "NoSuchEntity"));
    let put = mock!(aws_sdk_iam::Client::put_role_policy)
        .match_requests(|r| {
            let doc: serde_json::Value =
                serde_json::from_str(r.policy_document().unwrap()).unwrap();
            r.role_name() == Some("app-server")
                && r.policy_name() == Some("cordon-revoke-i-0123456789abcdef0")
                && doc["Statement"][0]["Effect"] == "Deny"
                && doc["Statement"][0]["Condition"]["StringEquals"]["ec2:SourceInstanceARN"]
                    == "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
        })
        .then_output(|| PutRolePolicyOutput::builder().build());
    let c = clients(&[&assoc, &disassociate], &[&profile, &no_policy, &put]);

    let out = remove(&c, &config(), &incident("instance"), Some(APP.into()))
        .await
        .unwrap();

    assert_eq!(disassociate.num_calls(), 1);
    assert_eq!(put.num_calls(), 1);
    assert_eq!(out.removed_profile_arn.as_deref(), Some(APP));
    assert_eq!(out.revoked.unwrap().role_name, "app-server");
    assert!(out.actions.iter().all(|a| a.outcome == Outcome::Changed));
}

#[tokio::test]
async fn role_wide_revocation_denies_older_tokens() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let profile = role_profile();
    let no_policy = mock!(aws_sdk_iam::Client::get_role_policy)
        .then_http_response(query_error(404, "NoSuchEntity"));
    let put = mock!(aws_sdk_iam::Client::put_role_policy)
        .match_requests(|r| {
            r.policy_name() == Some("cordon-revoke-sessions-IR-5")
                && r.policy_document().unwrap().contains("aws:TokenIssueTime")
        })
        .then_output(|| PutRolePolicyOutput::builder().build());
    let c = clients(&[&assoc], &[&profile, &no_policy, &put]);
    remove(&c, &config(), &incident("role"), Some(APP.into()))
        .await
        .unwrap();
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn a_rerun_finds_the_profile_gone_and_the_policy_in_place() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let profile = role_profile();
    let policy = mock!(aws_sdk_iam::Client::get_role_policy).then_output(|| {
        GetRolePolicyOutput::builder()
            .role_name("app-server")
            .policy_name("p")
            .policy_document("{}")
            .build()
            .unwrap()
    });
    let put = mock!(aws_sdk_iam::Client::put_role_policy)
        .then_output(|| PutRolePolicyOutput::builder().build());
    let c = clients(&[&assoc], &[&profile, &policy, &put]);
    let out = remove(&c, &config(), &incident("instance"), Some(APP.into()))
        .await
        .unwrap();
    assert_eq!(put.num_calls(), 0);
    assert!(
        out.actions.iter().all(|a| a.outcome == Outcome::Unchanged),
        "{:?}",
        out.actions
    );
}

#[tokio::test]
async fn revoke_none_is_a_recorded_gap() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let c = clients(&[&assoc], &[]);
    let out = remove(&c, &config(), &incident("none"), Some(APP.into()))
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
        remove(&c, &config(), &incident("instance"), None)
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
}

#[tokio::test]
async fn a_full_inline_policy_quota_falls_back_to_revoking_the_whole_role() {
    let assoc = associations(None, IamInstanceProfileAssociationState::Associated);
    let profile = role_profile();
    let no_policy = mock!(aws_sdk_iam::Client::get_role_policy)
        .then_http_response(query_error(404, "NoSuchEntity"));
    let full = mock!(aws_sdk_iam::Client::put_role_policy)
        .match_requests(|r| r.policy_name() == Some("cordon-revoke-i-0123456789abcdef0"))
        .then_http_response(query_error(409, "LimitExceeded"));
    let role_wide = mock!(aws_sdk_iam::Client::put_role_policy)
        .match_requests(|r| r.policy_name() == Some("cordon-revoke-sessions-IR-5"))
        .then_output(|| PutRolePolicyOutput::builder().build());
    let c = clients(&[&assoc], &[&profile, &no_policy, &full, &role_wide]);

    let out = remove(&c, &config(), &incident("instance"), Some(APP.into()))
        .await
        .unwrap();

    assert_eq!(role_wide.num_calls(), 1);
    assert_eq!(out.revoked.unwrap().scope, RevokeSessions::Role);
    assert!(
        out.gaps.iter().any(|g| g.reason.contains("quota")),
        "{:?}",
        out.gaps
    );
}
