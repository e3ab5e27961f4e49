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
                "States.ALL",
            ] {
                assert!(
                    !names.contains(&deterministic),
                    "{deterministic} must never be retried"
                );
            }
            assert!(
                r["MaxAttempts"].as_u64().unwrap() <= 6,
                "retries are bounded"
            );
        }
    }
}

#[test]
fn every_task_retries_transient_failures_with_full_jitter() {
    let asl: Value = serde_json::from_str(include_str!("../../../statemachine.asl.json")).unwrap();
    let mut checked = 0;
    walk_states(&asl["States"], &mut |name, state| {
        if state["Type"] == "Task" {
            let retry = &state["Retry"][0];
            let names: Vec<&str> = retry["ErrorEquals"]
                .as_array()
                .expect("Retry on every task")
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            for n in [
                "Lambda.ServiceException",
                "Lambda.AWSLambdaException",
                "Lambda.SdkClientException",
                "Lambda.TooManyRequestsException",
                "Transient",
            ] {
                assert!(names.contains(&n), "{name} does not retry {n}");
            }
            assert_eq!(retry["JitterStrategy"], "FULL", "{name}");
            assert!(retry["BackoffRate"].as_f64().unwrap() > 1.0, "{name}");
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
