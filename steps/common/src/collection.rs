//! One collection budget, from which every collection timeout is derived, so that they agree.
//!
//! A responder (or the deployment's default) gives the collection `B` seconds from the moment
//! the command is sent. Inside it:
//!
//! - **Delivery**: SSM gives the agent [`Budget::delivery_timeout`] seconds to take the command
//!   ("If this time is reached and the command hasn't already started running, it won't run",
//!   SendCommand `TimeoutSeconds`, 30 s minimum,
//!   <https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html>).
//!   When SSM then *reports* `DeliveryTimedOut` is not stated the same way everywhere: the
//!   monitor-commands page and `Command.ExpiresAfter` say at the total timeout (delivery plus
//!   execution, see below), GetCommandInvocation's `StatusDetails` says "before the delivery
//!   timeout expired". Cordon does not rely on either: an invocation still `Pending` at the
//!   deadline is cancelled and named as never taken (README, "Not verified").
//! - **Execution**: the rest, `executionTimeout` of `AWS-RunShellScript` /
//!   `AWS-RunPowerShellScript`, after which SSM stops the script ("ExecutionTimedOut", same page).
//! - **The script's own budget**: one minute less, so that the script ends and uploads what it
//!   has before SSM stops it; memory capture (AVML, hash, upload) gets three fifths of it.
//! - **SSM's own end**: a command that has not reached a final status by `TimeoutSeconds` plus
//!   the execution timeout, i.e. by `B` after the send, is ended by SSM as `DeliveryTimedOut`
//!   (delivery and total timeouts, <https://docs.aws.amazon.com/systems-manager/latest/userguide/monitor-commands.html>).
//! - **The state machine**: polls with a growing interval ([`Budget::next_wait`]) until the
//!   deadline, [`DEADLINE_MARGIN_SECONDS`] before SSM's own end; then the command is cancelled
//!   (CancelCommand) and its terminal status awaited, at most [`CANCEL_WAIT_SECONDS`], before the
//!   profile or the agent's channel is removed. Cancelling before SSM gives up means Cordon, not
//!   SSM's expiry, decides when the collection stops, and knows that it has stopped.

/// The smallest budget: one minute of delivery, three of execution.
pub const MIN_BUDGET_SECONDS: u32 = 300;
/// The largest budget any deployment may allow: one hour.
pub const MAX_BUDGET_SECONDS: u32 = 3600;
/// Kept between the script's own end and SSM's execution timeout, for its upload to finish.
pub const UPLOAD_MARGIN_SECONDS: u32 = 60;
/// How long before SSM's own end of the command (the budget) Cordon cancels it. The script's own
/// budget ends [`UPLOAD_MARGIN_SECONDS`] before the execution timeout, so a script that kept to it
/// has finished by then.
pub const DEADLINE_MARGIN_SECONDS: u32 = 30;
/// After CancelCommand, how long the poll waits for the invocation to reach a terminal status.
pub const CANCEL_WAIT_SECONDS: u32 = 60;
/// The poll intervals, in order; the last repeats.
pub const POLL_INTERVALS: [u32; 6] = [15, 30, 60, 120, 240, 300];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub seconds: u32,
}

impl Budget {
    /// A budget within [`MIN_BUDGET_SECONDS`]..=[`MAX_BUDGET_SECONDS`] (clamped).
    pub fn new(seconds: u32) -> Self {
        Budget {
            seconds: seconds.clamp(MIN_BUDGET_SECONDS, MAX_BUDGET_SECONDS),
        }
    }

    /// SendCommand `TimeoutSeconds`: a fifth of the budget, between one and ten minutes.
    pub fn delivery_timeout(&self) -> u32 {
        (self.seconds / 5).clamp(60, 600)
    }

    /// `executionTimeout` of the shell document: what delivery leaves.
    pub fn execution_timeout(&self) -> u32 {
        self.seconds - self.delivery_timeout()
    }

    /// `CORDON_BUDGET_SECONDS` for the script.
    pub fn script_budget(&self) -> u32 {
        self.execution_timeout() - UPLOAD_MARGIN_SECONDS
    }

    /// `CORDON_MEMORY_BUDGET_SECONDS`: capture, hash and upload of the memory image.
    pub fn memory_budget(&self) -> u32 {
        self.script_budget() * 3 / 5
    }

    /// Seconds after the send when an unfinished command is cancelled.
    pub fn deadline(&self) -> u32 {
        self.seconds - DEADLINE_MARGIN_SECONDS
    }

    /// How long to wait before poll number `polls` (0 for the first), `elapsed` seconds after the
    /// send: the growing interval, never past the deadline (0 once it is reached).
    pub fn next_wait(&self, polls: u32, elapsed: u32) -> u32 {
        let step = POLL_INTERVALS[(polls as usize).min(POLL_INTERVALS.len() - 1)];
        step.min(self.deadline().saturating_sub(elapsed))
    }

    /// The number of polls a command that never ends gets before the deadline (for tests and the
    /// state-transition bound).
    pub fn polls_to_deadline(&self) -> u32 {
        let (mut elapsed, mut polls) = (0, 0);
        loop {
            let wait = self.next_wait(polls, elapsed);
            if wait == 0 {
                return polls;
            }
            elapsed += wait;
            polls += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_timeouts_always_agree() {
        for seconds in (MIN_BUDGET_SECONDS..=MAX_BUDGET_SECONDS).step_by(30) {
            let b = Budget::new(seconds);
            // SSM's own bounds: delivery at least 30 s; the two timeouts add up to the budget.
            assert!(b.delivery_timeout() >= 30, "{b:?}");
            assert_eq!(b.delivery_timeout() + b.execution_timeout(), b.seconds);
            // The script ends, upload included, before SSM stops it.
            assert!(b.script_budget() + UPLOAD_MARGIN_SECONDS <= b.execution_timeout());
            assert!(b.memory_budget() < b.script_budget());
            // Cordon cancels before SSM itself would end the command (delivery + execution)...
            assert!(b.deadline() < b.delivery_timeout() + b.execution_timeout());
            // ...and after a script delivered at the last moment has spent its own budget.
            assert!(b.deadline() > b.delivery_timeout() + b.script_budget());
        }
    }

    #[test]
    fn a_twenty_minute_collection_takes_few_polls() {
        // Three states per poll (Wait, Check, Choice): under 30 transitions for 20 minutes.
        let b = Budget::new(1200);
        assert!(b.polls_to_deadline() * 3 < 30, "{}", b.polls_to_deadline());
        assert_eq!(b.next_wait(0, 0), 15);
        assert_eq!(b.next_wait(3, 105), 120);
        assert_eq!(b.next_wait(9, 1140), 30);
        assert_eq!(b.next_wait(10, 1170), 0);
    }

    #[test]
    fn budgets_outside_the_bounds_are_clamped() {
        assert_eq!(Budget::new(10).seconds, MIN_BUDGET_SECONDS);
        assert_eq!(Budget::new(100_000).seconds, MAX_BUDGET_SECONDS);
        assert_eq!(Budget::new(300).delivery_timeout(), 60);
        assert_eq!(Budget::new(3600).delivery_timeout(), 600);
    }
}
