//! The state machine routes on exactly the error names the steps emit.

use std::collections::BTreeSet;

use cordon_common::error::ERROR_NAMES;
use serde_json::Value;

/// Errors that Lambda and Step Functions themselves raise, which the state machine may name too.
const PLATFORM: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "States.ALL",
    "States.TaskFailed",
    "States.Timeout",
];

const THROTTLE: &str = "Lambda.TooManyRequestsException";

fn collect(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "ErrorEquals" {
                    out.extend(
                        v.as_array()
                            .unwrap()
                            .iter()
                            .map(|s| s.as_str().unwrap().to_owned()),
                    );
                } else {
                    collect(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        _ => {}
    }
}

#[test]
fn error_equals_names_are_exactly_the_names_steps_emit() {
    let asl: Value = serde_json::from_str(include_str!("../../../statemachine.asl.json")).unwrap();
    let mut used = BTreeSet::new();
    collect(&asl, &mut used);
    let ours: BTreeSet<String> = used
        .iter()
        .filter(|n| !PLATFORM.contains(&n.as_str()))
        .cloned()
        .collect();
    let unknown: Vec<_> = ours
        .iter()
        .filter(|n| !ERROR_NAMES.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "ErrorEquals names no step emits: {unknown:?}"
    );
    // The routing the design promises: Transient retried everywhere, InstanceNotFound turned
    // into a rejection. Everything else is caught by States.ALL and, being deterministic, not retried.
    assert!(
        ours.contains("Transient") && ours.contains("InstanceNotFound"),
        "{ours:?}"
    );
    for retry in find_all(&asl, "Retry") {
        for r in retry.as_array().unwrap() {
            let names: Vec<&str> = r["ErrorEquals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            for deterministic in [
                "InvalidInput",
                "InstanceNotFound",
                "AccessDenied",
                "NotSsmManaged",
                "EvidenceConflict",
                "AwsRequestFailed",
                "ContainmentNotVerified",
                "ProfileReassociated",
                "CredentialsNotRevoked",
                "States.ALL",
            ] {
                assert!(
                    !names.contains(&deterministic),
                    "{deterministic} must never be retried"
                );
            }
            // Bounded: a few attempts, or (only for Lambda's throttling, which waits for a
            // reserved-concurrency slot) more attempts under a MaxDelaySeconds cap.
            if names == [THROTTLE] {
                assert!(
                    r["MaxAttempts"].as_u64().unwrap() <= 15,
                    "retries are bounded"
                );
                assert!(
                    r["MaxDelaySeconds"].as_u64().unwrap() <= 60,
                    "delays are capped"
                );
            } else {
                assert!(
                    r["MaxAttempts"].as_u64().unwrap() <= 6,
                    "retries are bounded"
                );
            }
        }
    }
}

#[test]
fn every_task_retries_transient_failures_with_full_jitter() {
    let asl: Value = serde_json::from_str(include_str!("../../../statemachine.asl.json")).unwrap();
    let mut checked = 0;
    walk_states(&asl["States"], &mut |name, state| {
        if state["Type"] == "Task" {
            let retriers = state["Retry"].as_array().expect("Retry on every task");
            let names_of = |r: &Value| -> Vec<String> {
                r["ErrorEquals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            };
            for n in [
                "Lambda.ServiceException",
                "Lambda.AWSLambdaException",
                "Lambda.SdkClientException",
                THROTTLE,
                "Transient",
            ] {
                // The first retrier that names an error is the one that applies: each name in
                // exactly one, so that none is shadowed by another retrier's budget.
                let holders = retriers
                    .iter()
                    .filter(|r| names_of(r).iter().any(|x| x == n))
                    .count();
                assert_eq!(holders, 1, "{name} retries {n} in {holders} retriers");
            }
            for retry in retriers {
                assert_eq!(retry["JitterStrategy"], "FULL", "{name}");
                assert!(retry["BackoffRate"].as_f64().unwrap() > 1.0, "{name}");
            }
            checked += 1;
        }
    });
    assert!(checked >= 10, "only {checked} tasks found");
}

/// Lambda answers an invocation beyond a function's reserved concurrency with
/// `Lambda.TooManyRequestsException` (the README's `maxConcurrentResponses`: executions started
/// through the API are not queued). Such a Task waits for a slot: its own retrier must outlast a
/// queue of invocations, five function timeouts (60 s) at the least, and stay bounded (15 min).
#[test]
fn lambda_throttling_is_retried_long_enough_for_a_slot_to_free_up() {
    let asl: Value = serde_json::from_str(include_str!("../../../statemachine.asl.json")).unwrap();
    let mut checked = 0;
    walk_states(&asl["States"], &mut |name, state| {
        if state["Type"] == "Task" {
            let r = state["Retry"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["ErrorEquals"] == serde_json::json!([THROTTLE]))
                .unwrap_or_else(|| panic!("{name} has no retrier of its own for {THROTTLE}"));
            let interval = r["IntervalSeconds"].as_f64().unwrap_or(1.0);
            let rate = r["BackoffRate"].as_f64().unwrap_or(2.0);
            let cap = r["MaxDelaySeconds"].as_f64().expect("MaxDelaySeconds");
            // The longest wait: every delay at its ceiling (FULL jitter draws each from 0 to it).
            let ceiling: f64 = (0..r["MaxAttempts"].as_u64().unwrap() as i32)
                .map(|k| (interval * rate.powi(k)).min(cap))
                .sum();
            assert!(
                (300.0..=900.0).contains(&ceiling),
                "{name}: {ceiling} s of throttling retries"
            );
            checked += 1;
        }
    });
    assert!(checked >= 10, "only {checked} tasks found");
}

fn find_all<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    fn go<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == key {
                        out.push(v);
                    }
                    go(v, key, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| go(i, key, out)),
            _ => {}
        }
    }
    go(v, key, &mut out);
    out
}

fn walk_states(states: &Value, f: &mut dyn FnMut(&str, &Value)) {
    for (name, state) in states.as_object().unwrap() {
        f(name, state);
        for branch in state["Branches"].as_array().into_iter().flatten() {
            walk_states(&branch["States"], f);
        }
    }
}
