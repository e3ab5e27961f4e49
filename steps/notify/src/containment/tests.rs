//! The containment table from realistic step results: a private instance behind a NAT gateway.

use super::*;
use serde_json::json;

const ID: &str = "i-0123456789abcdef0";

fn incident(network: &str) -> Incident {
    Incident::from_value(json!({
        "incident_id": "IR-8", "instance_id": ID,
        "options": {"network": network}
    }))
    .unwrap()
}

/// A private instance in `subnet-private` whose default route leads to `nat-1` in `nat_subnet`.
fn facts(nat_subnet: &str, ipv6: bool) -> Value {
    let mut routes = vec![
        json!({"destination": "10.0.0.0/16", "target": "local", "kind": "local", "state": "active"}),
        json!({"destination": "0.0.0.0/0", "target": "nat-1", "kind": "nat-gateway", "state": "active"}),
    ];
    if ipv6 {
        routes.push(json!({"destination": "::/0", "target": "eigw-1", "kind": "egress-only-internet-gateway", "state": "active"}));
    }
    json!({
        "vpc_id": "vpc-1",
        "interfaces": [{
            "network_interface_id": "eni-a", "subnet_id": "subnet-private",
            "private_ipv4": ["10.0.3.17"],
            "ipv6": if ipv6 { json!(["2600:1f18:1::5"]) } else { json!([]) },
            "route_table_id": "rtb-private"
        }],
        "route_tables": [{"route_table_id": "rtb-private", "main": false, "routes": routes}],
        "nat_gateways": [{"id": "nat-1", "subnet_ids": [nat_subnet]}],
        "network_acls": {"subnet-private": "acl-private", "subnet-public": "acl-public"}
    })
}

fn results(facts: Value) -> Value {
    json!({
        "incident": {"incident_id": "IR-8", "instance_id": ID},
        "contain": [
            {"result": {"isolation_group_id": "sg-iso", "flush_group_id": "sg-flush",
                        "network_interface_ids": ["eni-a"], "deregistered": [], "verified": true,
                        "network": facts, "actions": [], "gaps": []}}
        ]
    })
}

fn action(step: &str, action: &str, target: &str, before: Value, after: Value) -> Action {
    serde_json::from_value(json!({
        "step": step, "action": action, "target": target, "before": before, "after": after,
        "outcome": "changed", "at": "2026-11-29T10:00:01Z"
    }))
    .unwrap()
}

fn isolated() -> Action {
    action(
        "quarantine",
        actions::ISOLATE,
        "eni-a",
        json!(["sg-web"]),
        json!(["sg-iso"]),
    )
}

fn lowered() -> Action {
    action(
        "quarantine",
        actions::CONNTRACK,
        "eni-a",
        json!({"timeouts": {"tcp_established": 432000, "udp_stream": 180, "udp": 30}, "source": "instance type default"}),
        json!({"timeouts": {"tcp_established": 60, "udp_stream": 60, "udp": 30}, "source": "interface"}),
    )
}

fn deny(acl: &str, egress: bool, cidr: &str) -> Action {
    action(
        "quarantine",
        actions::NACL_DENY,
        acl,
        json!(null),
        json!({"rule_number": 7, "egress": egress, "cidr": cidr, "rule_action": "deny", "protocol": "-1"}),
    )
}

fn find<'a>(rows: &'a [Row], path: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.path.starts_with(path))
        .unwrap_or_else(|| panic!("no row {path:?} in {rows:#?}"))
}

const NAT: &str = "existing flows through NAT gateways";

#[test]
fn the_nat_path_is_cut_by_the_network_acl_of_the_nat_gateway_subnet() {
    let acts = [
        isolated(),
        lowered(),
        deny("acl-public", false, "10.0.3.17/32"),
        deny("acl-public", true, "10.0.3.17/32"),
    ];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &acts,
    );
    let nat = find(&rows, NAT);
    assert_eq!(nat.status, Status::Cut, "{nat:#?}");
    assert!(nat.done.contains("cut by network ACL"), "{}", nat.done);
    assert!(
        nat.done.contains("acl-public (subnet-public)"),
        "{}",
        nat.done
    );
    assert!(nat.done.contains("configuration verified"), "{}", nat.done);
    assert_eq!(nat.source, source::NACL);
    assert_eq!(find(&rows, "new inbound connections").status, Status::Cut);
    assert_eq!(
        find(&rows, "existing TCP and UDP flows not tracked").status,
        Status::Cut
    );
}

#[test]
fn a_rule_in_one_direction_only_does_not_cut() {
    let acts = [isolated(), deny("acl-public", false, "10.0.3.17/32")];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &acts,
    );
    let nat = find(&rows, NAT);
    assert_eq!(nat.status, Status::StillPossible, "{nat:#?}");
    assert!(
        nat.done.contains("no outbound deny rule for 10.0.3.17/32"),
        "{}",
        nat.done
    );
    assert!(nat.done.contains("432000 s"), "{}", nat.done);
}

#[test]
fn with_security_groups_only_the_nat_path_is_bounded_by_connection_tracking_timeouts() {
    let acts = [isolated(), lowered()];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg"),
        &acts,
    );
    let nat = find(&rows, NAT);
    assert_eq!(nat.status, Status::Bounded, "{nat:#?}");
    let bound = nat.bound.as_deref().unwrap();
    assert!(
        bound.contains("idle for 60 s (TCP established), 60 s (UDP stream) or 30 s (UDP)"),
        "{bound}"
    );
    assert!(
        nat.done.contains("options.network is \"sg\""),
        "{}",
        nat.done
    );
    assert_eq!(nat.source, source::CONNTRACK);
}

#[test]
fn a_nat_gateway_in_the_instance_subnet_cannot_be_cut_by_an_acl() {
    let acts = [
        isolated(),
        lowered(),
        deny("acl-private", false, "10.0.3.17/32"),
        deny("acl-private", true, "10.0.3.17/32"),
    ];
    let rows = table(
        &results(facts("subnet-private", false)),
        &incident("sg+nacl"),
        &acts,
    );
    let nat = find(&rows, NAT);
    assert_eq!(nat.status, Status::Bounded, "{nat:#?}");
    assert!(nat.done.contains("instance's own subnet"), "{}", nat.done);
}

#[test]
fn without_ipv6_the_egress_only_gateway_row_is_not_applicable() {
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &[isolated()],
    );
    let eigw = find(
        &rows,
        "existing IPv6 flows through egress-only internet gateways",
    );
    assert_eq!(eigw.status, Status::NotApplicable);
    assert!(eigw.done.contains("no IPv6 address"), "{}", eigw.done);
}

#[test]
fn with_ipv6_the_egress_only_gateway_path_is_only_bounded_even_with_acl_rules() {
    let acts = [
        isolated(),
        lowered(),
        deny("acl-public", false, "2600:1f18:1::5/128"),
        deny("acl-public", true, "2600:1f18:1::5/128"),
        deny("acl-public", false, "10.0.3.17/32"),
        deny("acl-public", true, "10.0.3.17/32"),
    ];
    let rows = table(
        &results(facts("subnet-public", true)),
        &incident("sg+nacl"),
        &acts,
    );
    let eigw = find(
        &rows,
        "existing IPv6 flows through egress-only internet gateways",
    );
    assert_eq!(eigw.status, Status::Bounded, "{eigw:#?}");
    assert!(
        eigw.done.contains("egress-only internet gateway eigw-1"),
        "{}",
        eigw.done
    );
    assert_eq!(find(&rows, NAT).status, Status::Cut);
}

#[test]
fn dns_through_the_resolver_stays_possible_unless_the_instance_is_stopped() {
    let acts = [
        isolated(),
        lowered(),
        deny("acl-public", false, "10.0.3.17/32"),
        deny("acl-public", true, "10.0.3.17/32"),
    ];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &acts,
    );
    let dns = find(&rows, "DNS queries through the Route 53 Resolver");
    assert_eq!(dns.status, Status::StillPossible);
    assert!(dns.done.contains("DNS Firewall"), "{}", dns.done);
    assert!(dns.source.contains(source::NACL) && dns.source.contains(source::CONNTRACK));

    let mut stopping = acts.to_vec();
    stopping.push(action(
        "termprotect",
        actions::STOP,
        ID,
        json!("running"),
        json!("stopping"),
    ));
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &stopping,
    );
    let dns = find(&rows, "DNS queries through the Route 53 Resolver");
    assert_eq!(
        dns.status,
        Status::Bounded,
        "stopping is not stopped: {dns:#?}"
    );
    assert_eq!(dns.source, source::STOP);

    let mut stopped = acts.to_vec();
    stopped.push(action(
        "termprotect",
        actions::STOP,
        ID,
        json!("running"),
        json!("stopped"),
    ));
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &stopped,
    );
    assert_eq!(
        find(&rows, "DNS queries through the Route 53 Resolver").status,
        Status::Cut
    );
}

#[test]
fn icmp_is_never_claimed_bounded_by_the_tcp_and_udp_timeouts() {
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &[isolated(), lowered()],
    );
    assert_eq!(
        find(&rows, "existing ICMP flows").status,
        Status::StillPossible
    );
}

#[test]
fn nothing_is_claimed_cut_when_quarantine_did_not_complete() {
    let results = json!({"incident": {"incident_id": "IR-8", "instance_id": ID},
                         "contain": [{"failed": {"Error": "AccessDenied", "Cause": "no"}}]});
    let rows = table(&results, &incident("sg+nacl"), &[]);
    for r in &rows {
        assert!(
            matches!(
                r.status,
                Status::StillPossible | Status::NotApplicable | Status::Bounded
            ),
            "{r:#?}"
        );
    }
    assert_eq!(
        find(&rows, "new inbound connections").status,
        Status::StillPossible
    );
    let tracked = find(&rows, "existing flows tracked automatically");
    assert!(tracked.done.contains("not gathered"), "{}", tracked.done);
}

#[test]
fn a_failed_lookup_keeps_its_path_open_in_the_table() {
    let mut f = facts("subnet-public", false);
    f["vpc_endpoints"] = json!([]);
    f["unknown"] = json!([{"lookup": "vpc-endpoints", "reason": "DescribeVpcEndpoints failed (UnauthorizedOperation)"}]);
    let rows = table(&results(f), &incident("sg+nacl"), &[isolated()]);
    let pl = find(&rows, "existing flows through interface VPC endpoints");
    assert_eq!(pl.status, Status::StillPossible, "{pl:#?}");
    assert!(pl.done.contains("UnauthorizedOperation"), "{}", pl.done);
}

#[test]
fn metadata_and_credentials_rows_follow_what_detach_profile_did() {
    let arn = "arn:aws:iam::123456789012:instance-profile/app-server";
    let acts = [
        isolated(),
        action(
            "detach-profile",
            actions::REMOVE_PROFILE,
            ID,
            json!(arn),
            json!(null),
        ),
        action(
            "detach-profile",
            actions::REVOKE,
            "role/app-server",
            json!(null),
            json!({"policy_name": "cordon-revoke", "instances_denied": 1,
                   "this_instance_denied": true, "sessions_issued_before": null}),
        ),
        action(
            "detach-profile",
            actions::DISABLE_METADATA,
            ID,
            json!({"http_endpoint": "enabled"}),
            json!({"http_endpoint": "disabled"}),
        ),
    ];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &acts,
    );
    let imds = find(&rows, "credentials from the instance metadata service");
    assert_eq!(imds.status, Status::Cut);
    assert!(!imds.done.contains("pending"), "{}", imds.done);
    // A change EC2 had not applied yet at the read-back is said to be pending.
    let mut pending = acts.to_vec();
    pending[3] = action(
        "detach-profile",
        actions::DISABLE_METADATA,
        ID,
        json!({"http_endpoint": "enabled", "state": "applied"}),
        json!({"http_endpoint": "disabled", "state": "pending"}),
    );
    let rows_pending = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &pending,
    );
    let imds_pending = find(
        &rows_pending,
        "credentials from the instance metadata service",
    );
    assert!(
        imds_pending.done.contains("still pending at the read-back"),
        "{}",
        imds_pending.done
    );
    let issued = find(&rows, "credentials already issued to the instance's role");
    assert_eq!(issued.status, Status::Cut);
    assert!(
        issued.done.contains("ec2:SourceInstanceARN"),
        "{}",
        issued.done
    );
    assert_eq!(
        find(&rows, "sessions obtained with those credentials").status,
        Status::StillPossible
    );
    assert_eq!(
        find(&rows, "credentials of the forensic profile").status,
        Status::NotApplicable
    );

    // Profile removed, nothing revoked at the responder's request, metadata left on.
    let none = Incident::from_value(json!({"incident_id": "IR-8", "instance_id": ID,
                                           "options": {"revoke_sessions": "none"}}))
    .unwrap();
    let rows = table(&results(facts("subnet-public", false)), &none, &acts[..2]);
    assert_eq!(
        find(&rows, "credentials from the instance metadata service").status,
        Status::StillPossible
    );
    let issued = find(&rows, "credentials already issued to the instance's role");
    assert_eq!(issued.status, Status::StillPossible);
    assert!(
        issued.done.contains("revoke_sessions = none"),
        "{}",
        issued.done
    );
}

#[test]
fn the_message_section_lists_applicable_rows_and_sums_up_the_rest() {
    let acts = [
        isolated(),
        lowered(),
        deny("acl-public", false, "10.0.3.17/32"),
        deny("acl-public", true, "10.0.3.17/32"),
    ];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &acts,
    );
    let text = render(&rows);
    assert!(
        text.contains("- CUT: existing flows through NAT gateways"),
        "{text}"
    );
    assert!(
        text.contains("- STILL POSSIBLE: DNS queries through the Route 53 Resolver"),
        "{text}"
    );
    assert!(text.contains("Not applicable here: "), "{text}");
    assert!(
        text.contains("source: https://docs.aws.amazon.com/"),
        "{text}"
    );
    // Every row, as the manifest stores it.
    let v = serde_json::to_value(&rows).unwrap();
    for r in v.as_array().unwrap() {
        assert!(r["path"].is_string() && r["done"].is_string() && r["source"].is_string());
        assert!(["cut", "bounded", "still possible", "not applicable"]
            .contains(&r["status"].as_str().unwrap()));
    }
}

#[test]
fn the_revocation_scope_is_read_from_detach_profiles_output() {
    let mut r = results(facts("subnet-public", false));
    r["contain"].as_array_mut().unwrap().push(json!({"result": {
        "removed_profile_arn": "arn:aws:iam::123456789012:instance-profile/app-server",
        "revoked": {"role_name": "app-server", "policy_name": "cordon-revoke", "scope": "role",
                    "sessions_issued_before": "2026-11-29T10:00:00Z"},
        "actions": [], "gaps": []}}));
    let rows = table(&r, &incident("sg+nacl"), &[isolated()]);
    let issued = find(&rows, "credentials already issued to the instance's role");
    assert_eq!(issued.status, Status::Cut);
    assert!(
        issued.done.contains("every session issued before"),
        "{}",
        issued.done
    );
    assert!(issued.done.contains("role/app-server"), "{}", issued.done);
}

fn at(mut a: Action, time: &str) -> Action {
    a.at = time.to_owned();
    a
}

#[test]
fn the_collection_rows_say_what_was_opened_and_whether_it_was_closed() {
    let channel_open = action(
        "detach-profile",
        actions::REVOKE,
        "role/app-server",
        json!(null),
        json!({"policy_name": "cordon-revoke", "instances_denied": 0, "this_instance_denied": false,
               "this_instance_collecting": true, "sessions_issued_before": null}),
    );
    let moved = at(
        action(
            "quarantine",
            actions::COLLECTION_MOVE,
            "eni-a",
            json!(["sg-iso"]),
            json!(["sg-col"]),
        ),
        "2026-11-29T10:00:05Z",
    );
    let attached = action(
        "detach-profile",
        actions::ATTACH_FORENSIC,
        ID,
        json!(null),
        json!("arn"),
    );
    let during = [
        isolated(),
        channel_open.clone(),
        moved.clone(),
        attached.clone(),
    ];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &during,
    );
    assert_eq!(
        find(&rows, "outbound TCP 443 to the SSM").status,
        Status::StillPossible
    );
    assert_eq!(
        find(&rows, "the instance's own credentials: the SSM agent").status,
        Status::StillPossible
    );
    // The revocation with the channel open is still a per-instance revocation, not role-wide.
    assert_ne!(
        find(&rows, "credentials already issued").status,
        Status::StillPossible
    );
    assert_eq!(
        find(&rows, "credentials of the forensic profile").status,
        Status::StillPossible
    );

    let closed = [
        isolated(),
        channel_open,
        moved,
        attached,
        at(isolated(), "2026-11-29T10:09:00Z"),
        action(
            "detach-profile",
            actions::REVOKE_FORENSIC,
            "role/forensic",
            json!(null),
            json!({"policy_name": "cordon-forensic-i-1", "sessions_issued_before": "2026-11-29T10:09:01Z"}),
        ),
        action(
            "detach-profile",
            actions::CLOSE_CHANNEL,
            "role/app-server",
            json!({"this_instance_collecting": true}),
            json!({"this_instance_denied": true, "this_instance_collecting": false}),
        ),
    ];
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &closed,
    );
    assert_eq!(
        find(&rows, "outbound TCP 443 to the SSM").status,
        Status::Cut
    );
    assert_eq!(
        find(&rows, "the instance's own credentials: the SSM agent").status,
        Status::Cut
    );
    let forensic = find(&rows, "credentials of the forensic profile");
    assert_eq!(forensic.status, Status::Cut);
    assert!(
        forensic.done.contains("2026-11-29T10:09:01Z"),
        "{}",
        forensic.done
    );

    // No collection at all: the three rows do not apply.
    let rows = table(
        &results(facts("subnet-public", false)),
        &incident("sg+nacl"),
        &[isolated()],
    );
    for path in [
        "outbound TCP 443 to the SSM",
        "the instance's own credentials: the SSM agent",
        "credentials of the forensic profile",
    ] {
        assert_eq!(find(&rows, path).status, Status::NotApplicable, "{path}");
    }
}
