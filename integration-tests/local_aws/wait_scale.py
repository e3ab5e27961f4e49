"""Wait states run faster on the local stack: a local-time compression, not a change of behaviour.

The state machine waits between collection checks with a growing interval that "Check collection"
computes from the collection budget (15 s, 30 s, 1 min, ... ``steps/common/src/collection.rs``). On
AWS that keeps a 20-minute collection to about 24 state transitions; on the local stack, where the
collection script runs in seconds, it would make every scenario with a collection wait at least
15 s per check. So moto's Step Functions interpreter waits ``ceil(seconds / scale)`` instead of
``seconds`` for every ``Wait`` state (``CORDON_WAIT_SCALE``, default 15; ``1`` turns it off).

What stays real: the step functions measure the budget with the real clock (``sent_at`` and now),
and the SSM shim enforces the delivery and execution timeouts in real seconds, so a deadline, a
cancellation or a ``DeliveryTimedOut`` happens at the same real time as on AWS; only the number of
checks before it is larger here. Nothing in a step knows about this.
"""

from __future__ import annotations

import math
import os

from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

_applied = False


def scale() -> float:
    return max(1.0, float(os.environ.get("CORDON_WAIT_SCALE", "15")))


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    factor = scale()

    def _eval_body(self, env) -> None:
        seconds = self._get_wait_seconds(env=env)
        self._wait_interval(env=env, wait_seconds=math.ceil(seconds / factor) if seconds > 0 else 0)

    WaitFunction._eval_body = _eval_body
