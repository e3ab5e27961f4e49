"""End to end on the local AWS stack: time to containment, transitions, invocations, EC2 calls,
and a fleet of instances at once.

The stack is ``integration-tests/local_aws`` (moto in-process with its Step Functions
interpreter; the step binaries run through its Lambda Runtime API shim, each function's first
invocation starting a fresh process: a cold start). It runs the binaries of ``bin_dir``: the
release build, as deployed.

Times come from the execution history (moto stamps events with the wall clock, to the
millisecond) against the wall clock read just before StartExecution:

- **containment**: StartExecution → the "Quarantine network" task state exited successfully
  (the quarantine step returns only after it has described everything again and verified it);
- **isolated**: StartExecution → the last of the instance's interfaces moved into the isolation
  group (the answer to that ModifyNetworkInterfaceAttribute in the stack's request log), the
  moment the network is cut, before the quarantine step reads it back;
- **end**: StartExecution → the execution's last event.

EC2's request token buckets are on at their documented values (``local_aws/ec2_throttling.py``),
as in AWS; ``burst`` fires a storm of GuardDuty findings through the template's rule and measures
the time from the first finding to the last interface isolated.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
INTEGRATION = ROOT / "integration-tests"
sys.path.insert(0, str(INTEGRATION))

from local_aws import burst as burst_module  # noqa: E402
from local_aws import seed as seed_module  # noqa: E402
from local_aws.envfile import read_env  # noqa: E402

CONTAINMENT_STATE = "Quarantine network"
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
READ_ONLY = re.compile(r"^(Describe|Get|List)")
# EC2 calls that set up the per-VPC isolation and flush groups: made once per VPC, not per instance.
PER_VPC = {
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
}
# The mutating EC2 calls one incident makes, by step, for a single-interface, single-volume
# instance launched with EC2's defaults (shutdown behaviour "stop", root volume deleted on
# termination), with an instance profile, not SSM-managed, in a VPC whose Cordon groups exist.
# Counted from steps/*/src/lib.rs at the commit measured; BENCHMARKS.md explains each.
# "as coded": what the steps make; "floor": what the design cannot do without.
EC2_CALLS_AS_CODED = {
    "snapshot": {"CreateSnapshots": 1, "CreateTags": 1},  # CreateTags: cordon:volume-id, one call per snapshot
    # Termination protection; DeleteOnTermination (every volume in one call). The shutdown
    # behaviour is already "stop" by default: a third call only for an instance set to "terminate".
    "termprotect": {"ModifyInstanceAttribute": 2, "CreateTags": 1},
    "detach-profile": {"DisassociateIamInstanceProfile": 1},
    "quarantine": {"ModifyNetworkInterfaceAttribute": 2, "CreateTags": 1},  # flush group, then isolation group
}
EC2_CALLS_FLOOR = {
    "snapshot": {"CreateSnapshots": 1},  # tags at creation; a snapshot records its VolumeId anyway
    "termprotect": {"ModifyInstanceAttribute": 2},  # one attribute per call (EC2's rule)
    "detach-profile": {"DisassociateIamInstanceProfile": 1},
    "quarantine": {"ModifyNetworkInterfaceAttribute": 2, "CreateTags": 1},  # one tag call can carry every tag
}
EC2_CALLS_SSM_EXTRA = {"AssociateIamInstanceProfile": 1, "DisassociateIamInstanceProfile": 1}  # forensic profile
EC2_CALLS_PER_VPC = {
    "CreateSecurityGroup": 2,  # isolation, flush
    "RevokeSecurityGroupEgress": 1,  # the isolation group's default allow-all egress
    "AuthorizeSecurityGroupIngress": 1,  # flush: all traffic in
    "AuthorizeSecurityGroupEgress": 1,  # flush: ::/0 out (the default egress rule covers 0.0.0.0/0 only)
}


def total(calls: dict[str, dict[str, int]]) -> int:
    return sum(n for step in calls.values() for n in step.values())


MEMORY_GB = 0.25  # the functions' 256 MB (cdk/lib/steps.ts, local_aws/deploy.py)


def _ts(event: dict) -> float:
    return event["timestamp"].timestamp()


class LocalStack:
    def __init__(self, python: Path, bin_dir: Path, state_dir: Path) -> None:
        self.python = python
        self.bin_dir = bin_dir
        self.state_dir = state_dir

    def _cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.python), "-m", "local_aws", *args],
            cwd=INTEGRATION,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._cli("down", "--state-dir", str(self.state_dir))
        up = self._cli("up", "--bin-dir", str(self.bin_dir), "--state-dir", str(self.state_dir), "--timeout", "120")
        if up.returncode != 0:
            raise RuntimeError(f"local AWS stack did not start:\n{up.stdout}\n{up.stderr}")
        self.env = read_env(self.state_dir)
        self.endpoint = self.env["AWS_ENDPOINT_URL"]
        self.control_url = self.env["CORDON_CONTROL_URL"]
        self.state_machine_arn = self.env["CORDON_STATE_MACHINE_ARN"]
        self.seed = json.loads((self.state_dir / "seed.json").read_text())
        self.context = seed_module.SeedContext.from_dict(self.seed["context"])
        self.sfn = self.client("stepfunctions")
        self.ec2 = self.client("ec2")
        self.iam = self.client("iam")

    def down(self) -> None:
        self._cli("down", "--state-dir", str(self.state_dir), timeout=60)

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    # ------------------------------------------------------------------ request log

    def requests(self, since: int = 0) -> list[dict]:
        with urllib.request.urlopen(f"{self.control_url}/requests?since={since}", timeout=60) as resp:
            return json.loads(resp.read())["requests"]

    def last_seq(self) -> int:
        reqs = self.requests()
        return reqs[-1]["seq"] if reqs else 0

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        return seed_module.control(self.control_url, method, path, body)

    def isolated_at(self, instance_id: str, requests: list[dict]) -> float | None:
        """Epoch seconds at which the last of the instance's interfaces was moved into an isolation
        group, from request-log entries; None if one never was."""
        enis = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
        )["NetworkInterfaces"]
        times = burst_module.isolation_times(requests, burst_module.isolation_group_ids(self.ec2))
        ids = [e["NetworkInterfaceId"] for e in enis]
        if not ids or any(i not in times for i in ids):
            return None
        return max(times[i] for i in ids)

    # ------------------------------------------------------------------ executions

    def start(self, instance_id: str) -> tuple[str, float]:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        t0 = time.time()
        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=name,
            input=json.dumps({"instance_id": instance_id, "reason": "make bench"}),
        )["executionArn"]
        return arn, t0

    def wait(self, arns: list[str], timeout: float = 600, poll: float = 0.25) -> dict[str, dict]:
        done: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(arns):
            for arn in arns:
                if arn not in done:
                    desc = self.sfn.describe_execution(executionArn=arn)
                    if desc["status"] in TERMINAL:
                        done[arn] = desc
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(arns) - len(done)} executions still running after {timeout}s")
            if len(done) < len(arns):
                time.sleep(poll)
        return done

    def history(self, arn: str) -> list[dict]:
        events, token = [], None
        while True:
            page = self.sfn.get_execution_history(
                executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {})
            )
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                return events

    def log_offsets(self) -> dict[str, int]:
        logs = self.state_dir / "logs"
        return {p.name: p.stat().st_size for p in logs.glob("*.log")} if logs.is_dir() else {}

    def lambda_reports(self, offsets: dict[str, int]) -> list[dict]:
        """The REPORT lines the Lambda shim wrote since ``offsets``: per invocation, the function,
        its duration and its init duration (cold starts only)."""
        out = []
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            with open(path, "rb") as f:
                f.seek(offsets.get(path.name, 0))
                text = f.read().decode(errors="replace")
            for line in text.splitlines():
                if not line.startswith("REPORT RequestId:"):
                    continue
                dur = re.search(r"\tDuration: ([\d.]+) ms", line)
                init = re.search(r"Init Duration: ([\d.]+) ms", line)
                out.append(
                    {
                        "function": path.stem,
                        "duration_ms": float(dur.group(1)) if dur else 0.0,
                        "init_ms": float(init.group(1)) if init else 0.0,
                    }
                )
        return out


# ---------------------------------------------------------------------- analysis


def analyse(events: list[dict], t0: float, desc: dict) -> dict:
    """Times, state transitions and Lambda invocations of one execution, from its history."""
    entered = [e for e in events if e["type"].endswith("StateEntered")]
    task_entered = [e for e in events if e["type"] == "TaskStateEntered"]
    scheduled = [e for e in events if e["type"] in ("TaskScheduled", "LambdaFunctionScheduled")]
    contained = [
        e
        for e in events
        if e["type"] == "TaskStateExited" and e.get("stateExitedEventDetails", {}).get("name") == CONTAINMENT_STATE
    ]
    # Time spent in each state (entered → exited), summed over repeats (the collection loop).
    open_states: dict[str, float] = {}
    state_seconds: dict[str, float] = {}
    for e in events:
        if e["type"].endswith("StateEntered"):
            open_states[e["stateEnteredEventDetails"]["name"]] = _ts(e)
        elif e["type"].endswith("StateExited"):
            name = e["stateExitedEventDetails"]["name"]
            if name in open_states:
                state_seconds[name] = state_seconds.get(name, 0.0) + _ts(e) - open_states.pop(name)
    # A retry re-runs the task inside the same state: each attempt after the first is a transition too.
    retries = len(scheduled) - len(task_entered)
    output = json.loads(desc.get("output") or "null")
    failed_state = None
    if desc["status"] != "SUCCEEDED":
        task_failures = [e for e in events if e["type"] in ("TaskFailed", "LambdaFunctionFailed")]
        failed_state = task_failures[0].get("taskFailedEventDetails", {}) if task_failures else None
    return {
        "status": desc["status"],
        "error": desc.get("error"),
        "cause": (desc.get("cause") or "")[:600] or None,
        "first_task_failure": failed_state,
        "outcome": output.get("outcome") if isinstance(output, dict) else None,
        "containment_s": _ts(contained[0]) - t0 if contained else None,
        "end_s": _ts(events[-1]) - t0,
        "start_latency_s": _ts(events[0]) - t0,
        "state_transitions": len(entered) + retries,
        "states_entered": len(entered),
        "retries": retries,
        "lambda_invocations": len(scheduled),
        "states": [e["stateEnteredEventDetails"]["name"] for e in entered],
        "state_seconds": {k: round(v, 3) for k, v in state_seconds.items()},
    }


def ec2_mutations(requests: list[dict]) -> dict:
    """The step binaries' mutating EC2 calls in a request-log window, by action."""
    mutating = [
        r
        for r in requests
        if r["service"] == "ec2" and not READ_ONLY.match(r["action"]) and "rust" in r.get("user_agent", "")
    ]
    calls = Counter(r["action"] for r in mutating)
    rejected = Counter(f"{r['action']} {r.get('status')}" for r in mutating if (r.get("status") or 0) >= 400)
    per_vpc = {a: n for a, n in calls.items() if a in PER_VPC}
    per_instance = {a: n for a, n in calls.items() if a not in PER_VPC}
    return {
        "total": sum(calls.values()),
        "per_instance_total": sum(per_instance.values()),
        "per_vpc_total": sum(per_vpc.values()),
        "per_instance": dict(sorted(per_instance.items())),
        "per_vpc": dict(sorted(per_vpc.items())),
        "rejected": dict(sorted(rejected.items())),
    }


def lambda_cost(reports: list[dict], prices: dict) -> float:
    """Lambda arm64 compute for these invocations: billed per ms, init included (a custom
    runtime's init phase is billed), at 256 MB."""
    ms = sum(math.ceil(r["duration_ms"] + r["init_ms"]) for r in reports)
    return ms / 1000 * MEMORY_GB * prices["lambda_arm64_gb_second"]


def cost(run: dict, reports: list[dict], prices: dict) -> dict:
    transitions = run["state_transitions"] * prices["sfn_standard_transition"]
    requests = run["lambda_invocations"] * prices["lambda_request"]
    compute = lambda_cost(reports, prices)
    return {
        "sfn_transitions_usd": transitions,
        "lambda_requests_usd": requests,
        "lambda_compute_usd": compute,
        "total_usd": transitions + requests + compute,
        "lambda_billed_ms": sum(math.ceil(r["duration_ms"] + r["init_ms"]) for r in reports),
    }


def _summary(values: list[float | None]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# ---------------------------------------------------------------------- scenarios


def single_runs(stack: LocalStack, instances: list[str], prices: dict) -> list[dict]:
    """One execution at a time, each on its own instance; per run: times, counts, EC2 calls, cost."""
    runs = []
    for instance_id in instances:
        seq = stack.last_seq()
        offsets = stack.log_offsets()
        arn, t0 = stack.start(instance_id)
        desc = stack.wait([arn])[arn]
        run = analyse(stack.history(arn), t0, desc)
        run["instance_id"] = instance_id
        reports = stack.lambda_reports(offsets)
        run["cold_starts"] = sum(1 for r in reports if r["init_ms"])
        window = stack.requests(seq)
        isolated = stack.isolated_at(instance_id, window)
        run["isolated_s"] = isolated - t0 if isolated is not None else None
        run["ec2_throttled"] = len(burst_module.throttled(window))
        run["ec2_mutations"] = ec2_mutations(window)
        run["cost"] = cost(run, reports, prices)
        runs.append(run)
    return runs


def summarise(runs: list[dict]) -> dict:
    return {
        "runs": len(runs),
        "all_contained": all(r["status"] == "SUCCEEDED" and r["outcome"] == "contained" for r in runs),
        "containment_s": _summary([r["containment_s"] for r in runs]),
        "isolated_s": _summary([r["isolated_s"] for r in runs]),
        "end_s": _summary([r["end_s"] for r in runs]),
        "state_transitions": _summary([r["state_transitions"] for r in runs]),
        "lambda_invocations": _summary([r["lambda_invocations"] for r in runs]),
        "ec2_mutations_per_instance": _summary([r["ec2_mutations"]["per_instance_total"] for r in runs]),
        "cost_usd": _summary([r["cost"]["total_usd"] for r in runs]),
    }


def end_to_end(stack: LocalStack, runs: int, prices: dict) -> dict:
    """Non-SSM: the seeded web-02 first (every function cold), then fresh instances of the same
    shape (warm functions). SSM-managed: the seeded web-01 (Auto Scaling group, target group),
    then fresh SSM-managed instances (target group only: the seeded group's MaxSize is 4)."""
    ctx = stack.context
    unmanaged = [stack.env["CORDON_UNMANAGED_INSTANCE_ID"]] + [
        seed_module.seed_instance(ctx, name=f"bench-u{i}", ssm=False, subnet_index=1, control_url=stack.control_url).instance_id
        for i in range(runs - 1)
    ]
    non_ssm = single_runs(stack, unmanaged, prices)
    managed = [stack.env["CORDON_DEMO_INSTANCE_ID"]] + [
        seed_module.seed_instance(ctx, name=f"bench-m{i}", ssm=True, target_group=True, control_url=stack.control_url).instance_id
        for i in range(runs - 1)
    ]
    ssm = single_runs(stack, managed, prices)
    # The shape the EC2-call minimum is worked out for: one interface, one (root) volume.
    single = seed_module.seed_instance(
        ctx, name="bench-single", ssm=False, extra_volumes=0, second_interface=False, control_url=stack.control_url
    )
    single_interface = single_runs(stack, [single.instance_id], prices)[0]
    return {
        "single_interface": single_interface,
        "non_ssm": {"cold": non_ssm[0], "warm": summarise(non_ssm[1:]), "all": summarise(non_ssm), "runs": non_ssm},
        "ssm": {"cold": ssm[0], "warm": summarise(ssm[1:]), "all": summarise(ssm), "runs": ssm},
        # Wait states run CORDON_WAIT_SCALE (15) times faster on the local stack (local_aws/wait_scale.py).
        "wait_scale": float(os.environ.get("CORDON_WAIT_SCALE", "15")),
    }


def fleet_vpc(stack: LocalStack) -> seed_module.SeedContext:
    """A VPC of its own, so that the fleet's first executions create the isolation and flush
    groups (concurrently, as the first incidents of a VPC would)."""
    ec2 = stack.ec2
    vpc_id = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.1.0.0/20", AvailabilityZone="us-east-1a")["Subnet"][
        "SubnetId"
    ]
    sg = ec2.create_security_group(GroupName="fleet-web", Description="fleet web tier", VpcId=vpc_id)["GroupId"]
    return replace(
        stack.context, vpc_id=vpc_id, subnet_ids=[subnet_id], availability_zones=["us-east-1a"], security_group_id=sg
    )


def fleet(stack: LocalStack, n: int) -> dict:
    """``n`` single-interface, single-volume instances with an instance profile, not SSM-managed,
    in a new VPC; ``n`` executions started at once."""
    ctx = fleet_vpc(stack)
    seeded = [
        seed_module.seed_instance(
            ctx, name=f"fleet-{i}", ssm=False, extra_volumes=0, second_interface=False, control_url=stack.control_url
        )
        for i in range(n)
    ]
    # What the emulator reports for the root volume decides termprotect's third ModifyInstanceAttribute.
    first = stack.ec2.describe_instances(InstanceIds=[seeded[0].instance_id])["Reservations"][0]["Instances"][0]
    delete_on_termination = [m["Ebs"].get("DeleteOnTermination") for m in first.get("BlockDeviceMappings", [])]
    seq = stack.last_seq()
    offsets = stack.log_offsets()
    t0 = time.time()
    with ThreadPoolExecutor(min(n, 32)) as pool:
        started = list(pool.map(lambda s: stack.start(s.instance_id), seeded))
    start_spread = max(t for _, t in started) - t0
    arns = [arn for arn, _ in started]
    descs = stack.wait(arns, timeout=900, poll=1.0)
    runs = [analyse(stack.history(arn), t, descs[arn]) for arn, t in started]
    # Containment as EC2 reports it, independently of the executions' own verification.
    isolated = 0
    for s in seeded:
        enis = stack.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [s.instance_id]}]
        )["NetworkInterfaces"]
        names = {g["GroupName"] for eni in enis for g in eni["Groups"]}
        isolated += bool(enis) and names == {"cordon-isolation"}
    mutations = ec2_mutations(stack.requests(seq))
    reports = stack.lambda_reports(offsets)
    contained_at = [t + r["containment_s"] for r, (_, t) in zip(runs, started) if r["containment_s"] is not None]
    # The shared role's inline policies after the fleet: IAM caps their aggregate size per role.
    role = ctx.instance_profile_name
    policy_chars = 0
    policy_names = stack.iam.list_role_policies(RoleName=role)["PolicyNames"]
    for name in policy_names:
        doc = stack.iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        policy_chars += len(json.dumps(doc, separators=(",", ":")))
    return {
        "instances": n,
        "succeeded": sum(r["status"] == "SUCCEEDED" and r["outcome"] == "contained" for r in runs),
        "isolated_per_ec2": isolated,
        "all_contained": isolated == n and all(r["status"] == "SUCCEEDED" for r in runs),
        "start_spread_s": start_spread,
        "last_containment_s": (max(contained_at) - t0) if contained_at else None,
        "last_end_s": max(r["end_s"] + t for r, (_, t) in zip(runs, started)) - t0,
        "containment_s": _summary([r["containment_s"] for r in runs]),
        "state_transitions": _summary([r["state_transitions"] for r in runs]),
        "retries": sum(r["retries"] for r in runs),
        "lambda_invocations": _summary([r["lambda_invocations"] for r in runs]),
        "ec2_mutations": mutations,
        "ec2_mutations_per_instance": mutations["per_instance_total"] / n,
        "ec2_mutations_per_instance_with_vpc_setup": mutations["total"] / n,
        "shared_role": role,
        "shared_role_inline_policies": len(policy_names),
        "shared_role_inline_policy_chars": policy_chars,
        "statuses": dict(Counter(r["status"] for r in runs)),
        "failures": [
            {"error": r["error"], "cause": r["cause"], "first_task_failure": r["first_task_failure"], "states": r["states"]}
            for r in runs
            if r["status"] != "SUCCEEDED"
        ],
        "reported_delete_on_termination": delete_on_termination,
        # How long the steps themselves ran (Runtime API: event fetched → answer), under the load.
        "lambda": {
            "invocations": len(reports),
            "cold_starts": sum(1 for r in reports if r["init_ms"]),
            "duration_ms": _summary([r["duration_ms"] for r in reports]),
            "init_ms": _summary([r["init_ms"] for r in reports if r["init_ms"]]),
        },
    }


def burst(stack: LocalStack, n: int, timeout: float = 1800) -> dict:
    """``n`` GuardDuty findings at once, for ``n`` instances of one fleet (one interface, root
    volume only, instance profile, not SSM-managed) in a VPC of their own, put on the local bus
    together: the template's rule and whatever it holds (a queue, a bound on running executions)
    start the responses. EC2's request buckets at their documented values, as AWS would apply them.
    Reports the time from the first finding to the last interface isolated and to the last
    execution's end, the mutating EC2 calls per instance and the RequestLimitExceeded answers."""
    stack.control("DELETE", "/ec2/throttling")  # documented values, full buckets
    throttling = {k: v for k, v in stack.control("GET", "/ec2/throttling").items() if k != "buckets"}
    ctx = seed_module.seed_vpc(stack.context, f"burst-{uuid.uuid4().hex[:6]}", ipv6=False, private_acl=False)
    fleet_ = burst_module.seed_fleet(ctx, n)
    ids = [f.instance_id for f in fleet_]
    events = burst_module.finding_events(stack.endpoint, stack.env["AWS_REGION"], ids)
    tap = burst_module.RequestTap(stack.control_url, stack.last_seq())
    stack.control("DELETE", "/ec2/throttling")  # full again after the seeding
    t0 = time.time()
    put = burst_module.fire(stack.control_url, events)
    done = burst_module.wait_responses(
        stack.sfn, stack.state_machine_arn, ids, since=t0, timeout=timeout, poll=1.0, tap=tap
    )
    requests = tap.poll()
    isolation = burst_module.isolation_group_ids(stack.ec2)
    times = burst_module.isolation_times(requests, isolation)
    enis = [e for f in fleet_ for e in f.network_interface_ids]
    isolated = [times[e] for e in enis if e in times]
    # Per instance: its last interface isolated (None unless every one was).
    instance_isolated = {
        f.instance_id: max(times[e] for e in f.network_interface_ids)
        for f in fleet_
        if f.network_interface_ids and all(e in times for e in f.network_interface_ids)
    }
    histories = {i: stack.history(d["executionArn"]) for i, d in done.items()}
    started = {i: h[0]["timestamp"].timestamp() for i, h in histories.items() if h}
    ended = [h[-1]["timestamp"].timestamp() for h in histories.values() if h]
    mutating = burst_module.mutating_ec2(requests)
    throttled = burst_module.throttled(requests)
    statuses = Counter(d["status"] for d in done.values())
    outcomes = Counter((json.loads(d.get("output") or "null") or {}).get("outcome") for d in done.values())
    return {
        "instances": n,
        "throttling": throttling,
        "findings_matched": sum(1 for p in put if p.get("rules")),
        "statuses": dict(statuses),
        "outcomes": dict(outcomes),
        "interfaces": len(enis),
        "interfaces_isolated": len(isolated),
        "all_contained": statuses.get("SUCCEEDED", 0) == n and outcomes.get("contained", 0) == n and len(isolated) == len(enis),
        "last_isolated_s": (max(isolated) - t0) if isolated else None,
        "first_start_s": (min(started.values()) - t0) if started else None,
        "last_start_s": (max(started.values()) - t0) if started else None,
        "last_end_s": (max(ended) - t0) if ended else None,
        # Each response on its own: its StartExecution (as the history stamps it) to its last
        # interface isolated; the queue's wait is not in it.
        "isolated_after_start_s": _summary(
            [at - started[i] for i, at in instance_isolated.items() if i in started]
        ),
        "ec2_mutations_per_instance": sum(1 for r in mutating if r.get("status") != 503) / n,
        "ec2_mutating_attempts_per_instance": len(mutating) / n,
        "ec2_mutations_by_action": dict(sorted(Counter(r["action"] for r in mutating if r.get("status") != 503).items())),
        "ec2_throttled": len(throttled),
        "ec2_throttled_by_action": dict(Counter(r["action"] for r in throttled).most_common()),
        "failures": [
            {"instance_id": i, "error": d.get("error"), "cause": (d.get("cause") or "")[:300]}
            for i, d in done.items()
            if d["status"] != "SUCCEEDED"
        ],
    }


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
