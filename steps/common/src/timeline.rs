//! The incident's timeline: every change a step makes, with the value before and after and when.
//!
//! A step logs each change twice (intent before the call, result after it) so that CloudWatch
//! Logs hold the change even when the step dies half-way, and returns the [`Action`]s in its
//! result so that "Notify" can write them all to `manifest.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One change (or a change found already made) on one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub step: String,
    /// What was done, as a verb phrase: "enable termination protection".
    pub action: String,
    /// The resource changed: an instance, interface, group or role ID or ARN.
    pub target: String,
    pub before: Value,
    pub after: Value,
    /// `changed`, or `unchanged` when a retry found the change already made.
    pub outcome: Outcome,
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Changed,
    Unchanged,
}

/// Something Cordon could not do or chose not to do, and why: part of every result and of the
/// notification, never only a log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub step: String,
    /// What is missing: "console screenshot", "OS-level collection".
    pub what: String,
    /// Why, with the AWS error code where there is one.
    pub reason: String,
}

impl Gap {
    pub fn new(step: &str, what: impl Into<String>, reason: impl Into<String>) -> Self {
        let gap = Gap {
            step: step.to_owned(),
            what: what.into(),
            reason: reason.into(),
        };
        tracing::warn!(step, what = %gap.what, reason = %gap.reason, "gap");
        gap
    }
}

/// Collects a step's actions in order.
#[derive(Debug, Default)]
pub struct Timeline {
    step: &'static str,
    actions: Vec<Action>,
}

impl Timeline {
    pub fn new(step: &'static str) -> Self {
        Timeline {
            step,
            actions: Vec::new(),
        }
    }

    /// Logs the intent to change `target` from `before`; call before the AWS call.
    pub fn intend(&self, action: &str, target: &str, before: &Value, after: &Value) {
        tracing::info!(step = self.step, action, target, %before, %after, "changing");
    }

    /// Records a change made (or found made) after the AWS call returned.
    pub fn record(&mut self, action: &str, target: &str, before: Value, after: Value) {
        let outcome = if before == after {
            Outcome::Unchanged
        } else {
            Outcome::Changed
        };
        tracing::info!(step = self.step, action, target, %before, %after, ?outcome, "changed");
        self.actions.push(Action {
            step: self.step.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            before,
            after,
            outcome,
            at: now(),
        });
    }

    pub fn into_actions(self) -> Vec<Action> {
        self.actions
    }
}

/// The current time as RFC 3339 (UTC), the format of every time Cordon records.
pub fn now() -> String {
    use aws_smithy_types::date_time::{DateTime, Format};
    DateTime::from(std::time::SystemTime::now())
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_found_already_made_is_recorded_as_unchanged() {
        let mut t = Timeline::new("termprotect");
        t.record(
            "enable termination protection",
            "i-1",
            json!(false),
            json!(true),
        );
        t.record(
            "enable termination protection",
            "i-1",
            json!(true),
            json!(true),
        );
        let a = t.into_actions();
        assert_eq!(a[0].outcome, Outcome::Changed);
        assert_eq!(a[1].outcome, Outcome::Unchanged);
        assert_eq!(a[0].step, "termprotect");
        assert!(a[0].at.ends_with('Z'));
    }
}

/// Names of the actions that other code reads back (notify's containment table, release): one
/// spelling, so that renaming an action in a step cannot silently empty a row of the table.
pub mod actions {
    pub const ISOLATE: &str = "isolate network interface";
    pub const DEREGISTER: &str = "deregister from target group";
    pub const CONNTRACK: &str = "lower connection-tracking timeouts";
    pub const NACL_DENY: &str = "deny instance address in network ACL";
    pub const REMOVE_PROFILE: &str = "remove instance profile";
    pub const REVOKE: &str = "revoke issued credentials";
    pub const DISABLE_METADATA: &str = "disable instance metadata endpoint";
    pub const ATTACH_FORENSIC: &str = "attach forensic instance profile";
    pub const CLOSE_CHANNEL: &str = "close SSM agent channel";
    pub const COLLECTION_MOVE: &str = "move network interface to collection group";
    pub const COLLECTION_ACL_ALLOW: &str = "allow collection path in network ACL";
    pub const COLLECTION_ACL_REMOVE: &str = "remove collection path from network ACL";
    pub const REVOKE_FORENSIC: &str = "revoke forensic sessions";
    pub const STOP: &str = "stop instance";
    pub const HIBERNATE: &str = "hibernate instance";
}
