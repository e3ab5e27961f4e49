"""SSM Run Command, run for real by a modelled agent: SendCommand, GetCommandInvocation,
ListCommandInvocations, ListCommands, CancelCommand.

Emulator gap: moto 5.2.5 validates nothing in SendCommand, fans ``InstanceIds`` out to every
instance in the region, finishes every invocation as ``Success`` at once with empty output, and
does not implement ListCommandInvocations (HTTP 500) nor CancelCommand. Cordon's collection step
needs the real contract, including what happens inside containment: a command reaches the host
only through the agent's channel, with the credentials the agent holds, over a network path that
Cordon's own quarantine may have cut. This shim is the service side; ``ssm_agent`` is the agent
(its credentials, its channel's IAM decisions, its network path), asked every time the agent polls.

What this shim does (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html):

- ``SendCommand`` takes ``DocumentName`` ``AWS-RunShellScript`` (or ``AWS-RunPowerShellScript``)
  and exactly the given ``InstanceIds``; each must be a registered managed node that is online
  (``shims.ManagedNodes``: its agent registered and its last health ping got through), else
  ``InvalidInstanceId``, as on AWS. ``Targets`` is not supported. ``TimeoutSeconds`` (the delivery
  timeout, 30 to 2592000, default 3600) and the ``executionTimeout`` parameter (1 to 172800,
  default 3600) are validated as the API documents them.
- **Delivery.** An invocation stays ``Pending`` until the agent takes it: the agent polls about
  every quarter second (first after half a second), and takes it only if its channel works *at
  that moment* (``ssm_agent.AgentFleet.channel``: it holds credentials, IAM allows the MDS or MGS
  actions for that session, the network path to the endpoint is open). "If this time
  [TimeoutSeconds] is reached and the command hasn't already started running, it won't run"
  (SendCommand). Still undelivered at the command's expiry, the sum of ``TimeoutSeconds`` and the
  execution timeout, it ends ``TimedOut`` with ``StatusDetails`` ``DeliveryTimedOut``: "If the
  command isn't received by the agent before the length of time passes that is equal to the sum of
  the Timeout (seconds) parameter and the Execution timeout parameter, the status changes to
  Delivery Timed Out" (https://docs.aws.amazon.com/systems-manager/latest/userguide/monitor-commands.html),
  and "If a command expires, it changes status to DeliveryTimedOut for all invocations that have
  the status InProgress, Pending, or Delayed" (``Command.ExpiresAfter``,
  https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_Command.html). So a command
  that never reaches its host is reported ``DeliveryTimedOut`` only at ``ExpiresAfter``, not at
  ``TimeoutSeconds``. ``Delayed`` is not modelled.
- **Execution.** Once taken (``InProgress``), ``Parameters.commands`` run with ``bash`` on *this*
  machine, in a fresh temporary directory, stdin closed, in a process group of their own, with
  the execution timeout enforced by the agent (``TimedOut`` / ``ExecutionTimedOut``) and only the
  variables the agent sets (``AWS_SSM_INSTANCE_ID``, ``AWS_SSM_REGION_NAME``) plus ``PATH``,
  ``HOME``, ``LANG``; whatever else the script needs, its command lines set themselves. When the
  host cannot reach S3 (``ssm_agent.reach(..., "s3")`` when the process starts: no S3 endpoint or
  route, or groups/ACLs that block TCP 443 to it), the process also gets ``http_proxy``,
  ``https_proxy``, ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``all_proxy`` pointing at a
  closed port on 127.0.0.1, so that ``curl`` to a presigned URL fails as it would on the host
  (the URLs point at this machine, which is otherwise always reachable). ``POST /_cordon/ssm/agent
  {"extra_path": [dir]}`` puts directories (a fake ``avml``) in front of ``PATH``;
  ``{"memory_kib": N}`` gives the host that much memory as its ``/proc/meminfo`` says (``MemTotal``,
  bound over the real file in a private mount namespace; needs root).
  ``AWS-RunPowerShellScript`` cannot run here: it ends ``Failed`` with an explanation in
  ``StandardErrorContent``.
- **Reporting.** The final status reaches the service only through the agent's reply, which needs
  the channel too: a script that ended while the channel is closed stays ``InProgress`` until the
  agent can reply (the agent keeps failed replies and sends them again, ``agent/runcommand/mds``
  ``PersistFailedReply``), or until the command expires (``DeliveryTimedOut``, above). The reply
  goes at the agent's next poll at least half a second after the command started. Then:
  ``Success``, ``Failed`` (exit code != 0, ``ResponseCode`` = exit code) or ``TimedOut``
  (``ExecutionTimedOut``). Output content is the first 24,000 characters
  (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html).
  Unknown command: ``InvalidCommandId``; a known command without that instance: ``InvocationDoesNotExist``.
- **Output in S3** (``OutputS3BucketName``): before replying, the agent uploads stdout and stderr
  (when not empty) to ``<OutputS3KeyPrefix>/<CommandId>/<InstanceId>/awsrunShellScript/0.awsrunShellScript/{stdout,stderr}``
  (https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-rc-setting-up-cmdsys.html)
  with the credentials *it holds* (``ssm_agent``, rule 1: during a response still the compromised
  role's), as ``PutObject`` with ACL ``bucket-owner-full-control`` (``agent/s3util/s3util.go``), so
  ``s3:PutObject`` and ``s3:PutObjectAcl`` are decided for that session (identity policies, the
  bucket policy, the S3 endpoint's policy) and S3 must be reachable. Allowed: the upload is made
  through the local endpoint signed with that role's local credentials (``principals``), so the
  journal shows it as that role's call. Denied or unreachable: nothing is uploaded, the agent logs
  "Failed to upload the output to s3" and the invocation reports its status anyway, as the agent
  does (``agent/framework/processor/executer/iohandler/iomodule/fileS3.go``: the error is only
  logged); ``GET /_cordon/ssm/agent`` shows the log line, ``GET /_cordon/ssm/commands`` the upload
  results. ``StandardOutputUrl``/``StandardErrorUrl`` are path-style URLs of the local endpoint.
- **CancelCommand** (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_CancelCommand.html):
  a ``Pending`` invocation becomes ``Cancelled`` at once (it never reached the host). A running one
  is cancelled by a message to the agent over the same channel (``aws.ssm.cancelCommand``,
  ``agent/messageservice/interactor/mdsinteractor``): when the channel works the agent kills the
  process group at once and the invocation is ``Cancelled``; when it does not, the invocation is
  ``Cancelling`` (a documented ``Status`` value of GetCommandInvocation) until the agent can take
  the cancel, and the script keeps running on the host meanwhile; at the command's expiry it ends
  ``DeliveryTimedOut`` like any invocation that never got its final reply (how AWS ends a
  ``Cancelling`` invocation is not documented). Cancelling a finished invocation changes nothing.

Behaviour hooks (``POST /_cordon/ssm/behaviour {"instance_id", "mode", "not_found_polls"?}``, applied
to commands sent afterwards): ``run`` (default); ``fail`` ends ``Failed`` with exit code 1 without
running anything; ``hang`` stays ``InProgress`` forever (until cancelled). All three still need the
agent to take the command. ``not_found_polls``: N first GetCommandInvocation calls answer
``InvocationDoesNotExist``, as AWS may right after SendCommand.
``DELETE /_cordon/ssm/behaviour`` resets (one instance, or all without a body).
``GET /_cordon/ssm/commands`` lists what the shim ran: each invocation's status, details, the
agent's last delivery verdict, upload results.

The agent (``ssm_agent``): ``GET /_cordon/ssm/agent?instance_id=`` shows the credentials it holds
(role, ``aws:TokenIssueTime``, next refresh, the role associated now), its health, whether it can
take commands now and why (each IAM decision with the statements that decided it, the network path
to each endpoint), and its log. ``POST /_cordon/ssm/agent {"instance_id", "refresh"?: true,
"ping"?: true, "refresh_after_seconds"?, "health_interval_seconds"?, "extra_path"?}`` forces a
credential refresh or a health ping, changes its timers, or puts directories in front of the
script's ``PATH``; it answers what ``GET`` answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .principals import REGISTRY
from .server import ControlError
from .shims import ManagedNodes
from .ssm_agent import Verdict, apply_vpc_endpoint_fix
from .wire import AwsRequest, Response, aws_error, epoch, json_response

LOG = logging.getLogger("local_aws.ssm")

OUTPUT_LIMIT = 24000  # characters of stdout/stderr in GetCommandInvocation
PLUGIN_OUTPUT_LIMIT = 2500  # characters of Output in ListCommandInvocations' CommandPlugins
PLUGIN = "aws:runShellScript"
DOCUMENTS = {"AWS-RunShellScript", "AWS-RunPowerShellScript"}
TERMINAL = {"Success", "Failed", "TimedOut", "Cancelled"}
MODES = {"run", "fail", "hang"}
# SendCommand: TimeoutSeconds "Valid Range: Minimum value of 30. Maximum value of 2592000";
# AWS-RunShellScript's executionTimeout: 1 to 172800 seconds.
TIMEOUT_RANGE = (30, 2592000)
EXECUTION_TIMEOUT_RANGE = (1, 172800)
# The agent takes a command at its first poll after this long, and replies at least this long
# after it started: statuses a poller can see, as on AWS (never Success at the first poll).
DELIVERY_LATENCY = 0.5
REPLY_LATENCY = 0.5
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Invocation:
    command: Command
    instance_id: str
    mode: str
    not_found_polls: int = 0
    # What the service reports.
    status: str = "Pending"
    status_details: str = "Pending"
    response_code: int = -1
    started: float | None = None
    ended: float | None = None
    stdout: str = ""
    stderr: str = ""
    polls: int = 0
    # The host's side: the process and what it left.
    proc: subprocess.Popen | None = None
    host_done: bool = False
    host_result: tuple[str, str, int, str, str] | None = None  # status, details, code, stdout, stderr
    cancelled_on_host: bool = False
    # The agent's last verdict on delivering/replying, and the uploads it made.
    delivery: str = ""
    uploads: dict[str, str] = field(default_factory=dict)

    def s3_key(self, stream: str) -> str | None:
        cmd = self.command
        if not cmd.bucket:
            return None
        parts = [cmd.prefix.rstrip("/")] if cmd.prefix else []
        parts += [cmd.id, self.instance_id, "awsrunShellScript", "0.awsrunShellScript", stream]
        return "/".join(parts)

    def url(self, stream: str, endpoint: str) -> str:
        key = self.s3_key(stream)
        return f"{endpoint}/{self.command.bucket}/{key}" if key else ""


@dataclass
class Command:
    id: str
    document: str
    comment: str
    instance_ids: list[str]
    parameters: dict[str, list[str]]
    bucket: str
    prefix: str
    region: str  # the output bucket's region
    timeout_seconds: int
    execution_timeout: int
    requested: float = field(default_factory=time.time)
    invocations: dict[str, Invocation] = field(default_factory=dict)
    node_region: str = "us-east-1"  # the managed nodes' region (the request's)

    @property
    def expires_at(self) -> float:
        return self.requested + self.timeout_seconds + self.execution_timeout


class SsmRunCommandShim:
    name = "SsmRunCommandShim"
    ACTIONS = {"SendCommand", "GetCommandInvocation", "ListCommandInvocations", "ListCommands", "CancelCommand"}

    def __init__(self, nodes: ManagedNodes, endpoint: str) -> None:
        self.nodes = nodes
        self.agents = nodes.agents
        self.endpoint = endpoint
        self.commands: dict[str, Command] = {}
        self.behaviour: dict[str, dict] = {}
        self.lock = threading.RLock()
        self.closed_port = _closed_port()
        apply_vpc_endpoint_fix()  # endpoint interfaces get addresses of their subnets (ssm_agent)
        self.agents.add_listener(self._poll)

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "ssm" and req.action in self.ACTIONS

    def handle(self, req: AwsRequest) -> Response:
        return getattr(self, "_" + req.action)(req)

    # ------------------------------------------------------------------ SendCommand

    def _SendCommand(self, req: AwsRequest) -> Response:
        p = req.params
        document = p.get("DocumentName")
        if not document:
            return aws_error(
                req,
                "ValidationException",
                "1 validation error detected: Value null at 'documentName' failed to satisfy constraint: Member must not be null",
            )
        if document not in DOCUMENTS:
            return aws_error(
                req,
                "InvalidDocument",
                f"Document with name {document} does not exist (local stack: only {sorted(DOCUMENTS)}).",
            )
        if p.get("Targets"):
            return aws_error(
                req, "ValidationException", "The local stack's SSM shim supports InstanceIds only, not Targets."
            )
        instance_ids = p.get("InstanceIds") or []
        if not instance_ids or len(instance_ids) > 50:
            return aws_error(req, "ValidationException", "InstanceIds must list 1 to 50 managed node IDs.")
        offline = [i for i in instance_ids if (self.nodes.info(i, req.region) or {}).get("PingStatus") != "Online"]
        if offline:
            return aws_error(
                req, "InvalidInstanceId", f"Instances [{offline}] not in a valid state for account 123456789012"
            )
        parameters = p.get("Parameters") or {}
        commands = parameters.get("commands")
        if not commands or not isinstance(commands, list):
            return aws_error(
                req, "InvalidParameters", 'Parameter "commands" is required and must be a list of strings.'
            )
        try:
            execution_timeout = int((parameters.get("executionTimeout") or ["3600"])[0])
            timeout_seconds = int(p.get("TimeoutSeconds") or 3600)
        except (TypeError, ValueError):
            return aws_error(
                req, "InvalidParameters", "executionTimeout and TimeoutSeconds must be whole numbers of seconds."
            )
        if not EXECUTION_TIMEOUT_RANGE[0] <= execution_timeout <= EXECUTION_TIMEOUT_RANGE[1]:
            return aws_error(req, "InvalidParameters", "executionTimeout must be between 1 and 172800 seconds.")
        if not TIMEOUT_RANGE[0] <= timeout_seconds <= TIMEOUT_RANGE[1]:
            return aws_error(
                req,
                "ValidationException",
                f"1 validation error detected: Value '{timeout_seconds}' at 'timeoutSeconds' failed to satisfy "
                "constraint: Member must have value between 30 and 2592000",
            )

        cmd = Command(
            id=str(uuid.uuid4()),
            document=document,
            comment=p.get("Comment", ""),
            instance_ids=list(instance_ids),
            parameters=parameters,
            bucket=p.get("OutputS3BucketName", ""),
            prefix=p.get("OutputS3KeyPrefix", ""),
            region=p.get("OutputS3Region") or req.region,
            timeout_seconds=timeout_seconds,
            execution_timeout=execution_timeout,
            node_region=req.region,
        )
        with self.lock:
            for instance_id in instance_ids:
                b = self.behaviour.get(instance_id, {})
                inv = Invocation(cmd, instance_id, b.get("mode", "run"), int(b.get("not_found_polls", 0)))
                cmd.invocations[instance_id] = inv
            self.commands[cmd.id] = cmd
        LOG.info("SendCommand %s %s on %s", cmd.id, document, instance_ids)
        return json_response({"Command": self._command_view(cmd)}, req)  # Pending, as sent

    # ------------------------------------------------------------------ the agent's polls

    def _poll(self) -> None:
        """One poll of every agent with work: delivery, cancels, replies, expiry."""
        now = time.time()
        with self.lock:
            open_invocations = [
                inv for cmd in self.commands.values() for inv in cmd.invocations.values() if inv.status not in TERMINAL
            ]
        channels: dict[str, Verdict] = {}

        def channel(instance_id: str) -> Verdict:
            if instance_id not in channels:
                channels[instance_id] = self._channel(instance_id)
            return channels[instance_id]

        for inv in open_invocations:
            cmd = inv.command
            if now >= cmd.expires_at:
                self._expire(inv, now)
                continue
            if inv.status == "Pending":
                if now - cmd.requested < DELIVERY_LATENCY or now > cmd.requested + cmd.timeout_seconds:
                    continue
                verdict = channel(inv.instance_id)
                inv.delivery = verdict.reason
                if verdict.ok:
                    self._take(inv)
            elif inv.status == "Cancelling":
                verdict = channel(inv.instance_id)
                inv.delivery = verdict.reason
                if verdict.ok:
                    self._cancel_on_host(inv)
            elif inv.status == "InProgress" and inv.host_done and now - (inv.started or now) >= REPLY_LATENCY:
                verdict = channel(inv.instance_id)
                inv.delivery = verdict.reason
                if verdict.ok:
                    self._reply(inv)

    def _channel(self, instance_id: str) -> Verdict:
        """The agent's channel now; a failure to evaluate it (moto's state changing under the
        reader) counts as closed until the next poll."""
        try:
            return self.agents.channel(instance_id)
        except Exception as e:
            LOG.warning("could not evaluate the agent's channel on %s: %r", instance_id, e)
            return Verdict(False, f"not evaluated ({e!r}); next poll")

    def _expire(self, inv: Invocation, now: float) -> None:
        with self.lock:
            if inv.status in TERMINAL:
                return
            inv.status, inv.status_details, inv.response_code, inv.ended = "TimedOut", "DeliveryTimedOut", -1, now
            proc = inv.proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
        LOG.info("command %s on %s: TimedOut (DeliveryTimedOut): %s", inv.command.id, inv.instance_id, inv.delivery)

    def _take(self, inv: Invocation) -> None:
        """The agent received the command (acknowledged it): InProgress, and the host starts it."""
        with self.lock:
            if inv.status != "Pending":
                return
            inv.status = inv.status_details = "InProgress"
            inv.started = time.time()
        agent = self.agents.get(inv.instance_id)
        if agent is not None:
            agent.note(f"received command {inv.command.id} ({inv.delivery})")
        threading.Thread(target=self._execute, args=(inv,), name=f"ssm-{inv.command.id[:8]}", daemon=True).start()

    def _host_result(self, inv: Invocation, *result: Any) -> None:
        with self.lock:
            inv.host_result = result  # type: ignore[assignment]
            inv.host_done = True

    def _execute(self, inv: Invocation) -> None:
        """On the host: runs the script (or what the behaviour says) and keeps the result for the
        agent's reply."""
        cmd = inv.command
        if inv.mode == "hang":
            return  # stays InProgress until cancelled or expired
        if inv.mode == "fail":
            return self._host_result(
                inv, "Failed", "Failed", 1, "", "simulated failure (local stack behaviour 'fail')\n"
            )
        if cmd.document == "AWS-RunPowerShellScript":
            return self._host_result(
                inv,
                "Failed",
                "Failed",
                1,
                "",
                "AWS-RunPowerShellScript cannot run in the local stack (no Windows managed node here); "
                "only AWS-RunShellScript commands are executed.\n",
            )
        platform = (self.nodes.info(inv.instance_id, cmd.node_region) or {}).get("PlatformType")
        if platform == "Windows":
            return self._host_result(
                inv, "Failed", "Failed", 1, "", "AWS-RunShellScript cannot run on a Windows managed node.\n"
            )

        agent = self.agents.get(inv.instance_id)
        workdir = tempfile.mkdtemp(prefix=f"ssm-{cmd.id[:8]}-{inv.instance_id}-")
        try:
            script = os.path.join(workdir, "_script.sh")
            with open(script, "w") as f:
                f.write("\n".join(str(c) for c in cmd.parameters["commands"]) + "\n")
            extra_path = list(agent.extra_path) if agent is not None else []
            env = {
                "PATH": ":".join(extra_path + [BASE_PATH]),
                "HOME": workdir,
                "LANG": "C.UTF-8",
                "AWS_SSM_INSTANCE_ID": inv.instance_id,
                "AWS_SSM_REGION_NAME": cmd.node_region,
            }
            s3 = self.agents.s3_reachable(inv.instance_id)
            if not s3.ok:
                # The host cannot reach S3: its uploads fail as they would (see the module docstring).
                env.update({v: f"http://127.0.0.1:{self.closed_port}" for v in PROXY_VARIABLES})
                if agent is not None:
                    agent.note(f"S3 unreachable from the host while {cmd.id} runs: {s3.reason}")
            out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
            argv = ["bash", script]
            if agent is not None and agent.memory_kib is not None:
                # The emulated host's memory size: the script sees a /proc/meminfo whose MemTotal is
                # the instance's, bound over the real one in a private mount namespace (needs root,
                # as the collection's memory capture does on a real host).
                fake = os.path.join(workdir, ".meminfo")
                with open("/proc/meminfo") as real, open(fake, "w") as f:
                    for line in real:
                        f.write(f"MemTotal:       {agent.memory_kib} kB\n" if line.startswith("MemTotal:") else line)
                argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c",
                        'mount --bind "$0" /proc/meminfo && exec bash "$1"', fake, script]
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
                with self.lock:
                    inv.proc = proc
                    cancelled = inv.cancelled_on_host
                if cancelled:
                    _kill_group(proc)
                try:
                    code = proc.wait(timeout=cmd.execution_timeout)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    code, timed_out = -1, True
            stdout = open(out_path, "rb").read().decode("utf-8", "replace")
            stderr = open(err_path, "rb").read().decode("utf-8", "replace")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if timed_out:
            self._host_result(
                inv,
                "TimedOut",
                "ExecutionTimedOut",
                code,
                stdout,
                stderr + "\nfailed to run commands: exit status -1 (execution timed out)\n",
            )
        elif code == 0:
            self._host_result(inv, "Success", "Success", 0, stdout, stderr)
        else:
            self._host_result(inv, "Failed", "Failed", code if code >= 0 else 128 - code, stdout, stderr)

    def _reply(self, inv: Invocation) -> None:
        """The agent uploads the output (if asked) and replies with the final status."""
        with self.lock:
            if inv.status != "InProgress" or inv.host_result is None:
                return
            status, details, code, stdout, stderr = inv.host_result
        self._upload(inv, stdout, stderr)
        with self.lock:
            if inv.status != "InProgress":
                return
            inv.stdout, inv.stderr = stdout, stderr
            inv.response_code = code
            inv.ended = time.time()
            inv.status, inv.status_details = status, details
        LOG.info("command %s on %s: %s (%d)", inv.command.id, inv.instance_id, status, code)

    def _cancel_on_host(self, inv: Invocation) -> None:
        """The agent took the cancel message: kills the process group, replies Cancelled."""
        with self.lock:
            if inv.status in TERMINAL:
                return
            inv.cancelled_on_host = True
            proc = inv.proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
        with self.lock:
            inv.status = inv.status_details = "Cancelled"
            inv.ended = time.time()
        agent = self.agents.get(inv.instance_id)
        if agent is not None:
            agent.note(f"cancelled command {inv.command.id}")

    def _upload(self, inv: Invocation, stdout: str, stderr: str) -> None:
        cmd = inv.command
        if not cmd.bucket:
            return
        agent = self.agents.get(inv.instance_id)
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            if not text:
                continue
            key = inv.s3_key(stream)
            verdict = self.agents.s3_upload(inv.instance_id, cmd.bucket, key)
            if not verdict.ok or agent is None or not agent.role_arn:
                inv.uploads[stream] = f"not uploaded: {verdict.reason}"
                message = f"Failed to upload the output to s3: s3://{cmd.bucket}/{key}: {verdict.reason}"
                LOG.warning("agent %s: %s", inv.instance_id, message)
                if agent is not None:
                    agent.note(message)
                continue
            inv.uploads[stream] = self._put(agent.role_arn, cmd, key, text)

    def _put(self, role_arn: str, cmd: Command, key: str, text: str) -> str:
        import boto3

        creds = REGISTRY.credentials_of_role_arn(role_arn)
        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=cmd.region,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=creds["AWS_SESSION_TOKEN"],
        )
        try:
            s3.put_object(
                Bucket=cmd.bucket,
                Key=key,
                Body=text.encode(),
                ContentType="text/plain",
                ACL="bucket-owner-full-control",
                ChecksumAlgorithm="SHA256",
            )
            return "uploaded"
        except Exception as e:
            LOG.warning("could not upload s3://%s/%s: %s", cmd.bucket, key, e)
            return f"upload failed: {e}"

    # ------------------------------------------------------------------ polling

    def _GetCommandInvocation(self, req: AwsRequest) -> Response:
        p = req.params
        command_id, instance_id = p.get("CommandId", ""), p.get("InstanceId", "")
        plugin = p.get("PluginName")
        with self.lock:
            cmd = self.commands.get(command_id)
        if cmd is None:
            return aws_error(req, "InvalidCommandId", "")
        inv = cmd.invocations.get(instance_id)
        if inv is None:
            return aws_error(req, "InvocationDoesNotExist", "")
        if plugin and plugin not in (PLUGIN, "runShellScript"):
            return aws_error(req, "InvalidPluginName", "")
        with self.lock:
            if inv.not_found_polls > 0:
                inv.not_found_polls -= 1
                return aws_error(req, "InvocationDoesNotExist", "")
            inv.polls += 1
            status, details, code = inv.status, inv.status_details, inv.response_code
            started, ended = inv.started, inv.ended
        final = status in TERMINAL
        return json_response(
            {
                "CommandId": cmd.id,
                "InstanceId": instance_id,
                "Comment": cmd.comment,
                "DocumentName": cmd.document,
                "DocumentVersion": "$DEFAULT",
                "PluginName": PLUGIN,
                "ResponseCode": code,
                "ExecutionStartDateTime": _iso(started),
                "ExecutionElapsedTime": f"PT{((ended or time.time()) - started):.3f}S" if started else "",
                "ExecutionEndDateTime": _iso(ended if started else None),
                "Status": status,
                "StatusDetails": details,
                "StandardOutputContent": inv.stdout[:OUTPUT_LIMIT] if final else "",
                "StandardOutputUrl": inv.url("stdout", self.endpoint),
                "StandardErrorContent": inv.stderr[:OUTPUT_LIMIT] if final else "",
                "StandardErrorUrl": inv.url("stderr", self.endpoint),
                "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
            },
            req,
        )

    def _select(self, command_id: str | None) -> list | None:
        """The command named, or every command newest first; None for an unknown ID. Hold the lock."""
        if command_id:
            return [self.commands[command_id]] if command_id in self.commands else None
        return sorted(self.commands.values(), key=lambda c: -c.requested)

    def _ListCommandInvocations(self, req: AwsRequest) -> Response:
        p = req.params
        command_id, instance_id = p.get("CommandId"), p.get("InstanceId")
        with self.lock:
            cmds = self._select(command_id)
            if cmds is None:
                return aws_error(req, "InvalidCommandId", "")
        out = []
        for cmd in cmds:
            for inv in list(cmd.invocations.values()):
                if instance_id and inv.instance_id != instance_id:
                    continue
                with self.lock:
                    status, details, code = inv.status, inv.status_details, inv.response_code
                final = status in TERMINAL
                plugins = []
                if p.get("Details"):
                    plugins.append(
                        {
                            "Name": PLUGIN,
                            "Status": status,
                            "StatusDetails": details,
                            "ResponseCode": code,
                            "ResponseStartDateTime": epoch(inv.started) if inv.started else None,
                            "ResponseFinishDateTime": epoch(inv.ended) if final and inv.ended and inv.started else None,
                            "Output": (inv.stdout + inv.stderr)[:PLUGIN_OUTPUT_LIMIT] if final else "",
                            "StandardOutputUrl": inv.url("stdout", self.endpoint),
                            "StandardErrorUrl": inv.url("stderr", self.endpoint),
                            "OutputS3Region": cmd.region,
                            "OutputS3BucketName": cmd.bucket,
                            "OutputS3KeyPrefix": cmd.prefix,
                        }
                    )
                    plugins = [{k: v for k, v in pl.items() if v is not None} for pl in plugins]
                out.append(
                    {
                        "CommandId": cmd.id,
                        "InstanceId": inv.instance_id,
                        "InstanceName": "",
                        "Comment": cmd.comment,
                        "DocumentName": cmd.document,
                        "DocumentVersion": "$DEFAULT",
                        "RequestedDateTime": epoch(cmd.requested),
                        "Status": status,
                        "StatusDetails": details,
                        "TraceOutput": "",
                        "StandardOutputUrl": inv.url("stdout", self.endpoint),
                        "StandardErrorUrl": inv.url("stderr", self.endpoint),
                        "CommandPlugins": plugins,
                        "ServiceRole": "",
                        "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
                        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
                    }
                )
        return json_response({"CommandInvocations": out}, req)

    def _ListCommands(self, req: AwsRequest) -> Response:
        p = req.params
        command_id, instance_id = p.get("CommandId"), p.get("InstanceId")
        with self.lock:
            cmds = self._select(command_id)
            if cmds is None:
                return aws_error(req, "InvalidCommandId", "")
            cmds = [c for c in cmds if not instance_id or instance_id in c.invocations]
            return json_response({"Commands": [self._command_view(c) for c in cmds]}, req)

    def _CancelCommand(self, req: AwsRequest) -> Response:
        p = req.params
        with self.lock:
            cmd = self.commands.get(p.get("CommandId", ""))
            if cmd is None:
                return aws_error(req, "InvalidCommandId", "")
            targets = [
                inv
                for inv in cmd.invocations.values()
                if not (p.get("InstanceIds") and inv.instance_id not in p["InstanceIds"]) and inv.status not in TERMINAL
            ]
            running = []
            for inv in targets:
                if inv.status == "Pending":  # never reached the host
                    inv.status = inv.status_details = "Cancelled"
                    inv.ended = time.time()
                elif inv.status == "InProgress":
                    inv.status = inv.status_details = "Cancelling"
                    running.append(inv)
        for inv in running:
            # The cancel goes to the agent over its channel: at once if the channel works now.
            verdict = self._channel(inv.instance_id)
            inv.delivery = verdict.reason
            if verdict.ok:
                self._cancel_on_host(inv)
        return json_response({}, req)

    def _command_view(self, cmd: Command) -> dict:
        with self.lock:
            invocations = list(cmd.invocations.values())
            statuses = [i.status for i in invocations]
            details = [i.status_details for i in invocations]
        if all(s == "Pending" for s in statuses):
            status = "Pending"
        elif any(s == "Cancelling" for s in statuses):
            status = "Cancelling"
        elif any(s not in TERMINAL for s in statuses):
            status = "InProgress"
        elif all(s == "Success" for s in statuses):
            status = "Success"
        elif all(s == "Cancelled" for s in statuses):
            status = "Cancelled"
        elif all(s == "TimedOut" for s in statuses):
            status = "TimedOut"
        else:
            status = "Failed"
        if status == "TimedOut":
            status_details = (
                "DeliveryTimedOut" if all(d == "DeliveryTimedOut" for d in details) else "ExecutionTimedOut"
            )
        else:
            status_details = status
        return {
            "CommandId": cmd.id,
            "DocumentName": cmd.document,
            "DocumentVersion": "$DEFAULT",
            "Comment": cmd.comment,
            "ExpiresAfter": epoch(cmd.expires_at),
            "Parameters": cmd.parameters,
            "InstanceIds": cmd.instance_ids,
            "Targets": [],
            "RequestedDateTime": epoch(cmd.requested),
            "Status": status,
            "StatusDetails": status_details,
            "OutputS3Region": cmd.region,
            "OutputS3BucketName": cmd.bucket,
            "OutputS3KeyPrefix": cmd.prefix,
            "MaxConcurrency": "50",
            "MaxErrors": "0",
            "TargetCount": len(cmd.instance_ids),
            "CompletedCount": sum(s in TERMINAL for s in statuses),
            "ErrorCount": sum(
                s == "Failed" or d == "ExecutionTimedOut" for s, d in zip(statuses, details, strict=True)
            ),
            "DeliveryTimedOutCount": sum(d == "DeliveryTimedOut" for d in details),
            "ServiceRole": "",
            "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
            "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
            "TimeoutSeconds": cmd.timeout_seconds,
        }

    # ------------------------------------------------------------------ control

    def control_routes(self) -> dict:
        def set_behaviour(body: Any, q: dict) -> tuple[int, Any]:
            if not isinstance(body, dict) or not isinstance(body.get("instance_id"), str):
                raise ControlError(400, "a JSON body with a string 'instance_id' is required")
            mode = body.get("mode", "run")
            if mode not in MODES:
                raise ControlError(400, f"mode must be one of {sorted(MODES)}")
            with self.lock:
                self.behaviour[body["instance_id"]] = {
                    "mode": mode,
                    "not_found_polls": int(body.get("not_found_polls", 0)),
                }
            return 201, self.behaviour[body["instance_id"]]

        def clear_behaviour(body: Any, q: dict) -> tuple[int, Any]:
            with self.lock:
                if isinstance(body, dict) and body.get("instance_id"):
                    self.behaviour.pop(body["instance_id"], None)
                else:
                    self.behaviour.clear()
                return 200, {"behaviour": dict(self.behaviour)}

        def commands(body: Any, q: dict) -> tuple[int, Any]:
            with self.lock:
                return 200, {
                    "commands": [
                        {
                            "command_id": c.id,
                            "document": c.document,
                            "requested": _iso(c.requested),
                            "expires_after": _iso(c.expires_at),
                            "invocations": {
                                i.instance_id: {
                                    "status": i.status,
                                    "status_details": i.status_details,
                                    "response_code": i.response_code,
                                    "polls": i.polls,
                                    "delivery": i.delivery,
                                    "uploads": dict(i.uploads),
                                }
                                for i in c.invocations.values()
                            },
                        }
                        for c in self.commands.values()
                    ]
                }

        def get_agent(body: Any, q: dict) -> tuple[int, Any]:
            instance_id = (q.get("instance_id") or [""])[0]
            if not instance_id:
                raise ControlError(400, "?instance_id= is required")
            return 200, self.agents.describe(instance_id)

        def post_agent(body: Any, q: dict) -> tuple[int, Any]:
            if not isinstance(body, dict) or not isinstance(body.get("instance_id"), str):
                raise ControlError(400, "a JSON body with a string 'instance_id' is required")
            instance_id = body["instance_id"]
            agent = self.agents.get(instance_id)
            if agent is None:
                raise ControlError(404, f"no SSM Agent on {instance_id}: register it with /ssm/managed-instances")
            for name in ("refresh_after_seconds", "health_interval_seconds"):
                if name in body:
                    value = body[name]
                    if not isinstance(value, int | float) or value <= 0:
                        raise ControlError(400, f"{name} must be a positive number")
                    setattr(agent, name, float(value))
            if "refresh_after_seconds" in body and agent.issued_at:
                agent.next_refresh = agent.issued_at + agent.refresh_after_seconds
            if "memory_kib" in body:
                kib = body["memory_kib"]
                if kib is not None and (not isinstance(kib, int) or kib <= 0):
                    raise ControlError(400, "memory_kib must be a positive integer or null")
                agent.memory_kib = kib
            if "extra_path" in body:
                dirs = body["extra_path"]
                dirs = [dirs] if isinstance(dirs, str) else dirs
                if not isinstance(dirs, list) or not all(isinstance(d, str) and d.startswith("/") for d in dirs):
                    raise ControlError(400, "extra_path must be an absolute directory or a list of them")
                agent.extra_path = list(dirs)
            if body.get("refresh"):
                self.agents.refresh(instance_id)
            if body.get("ping"):
                self.agents.ping(instance_id)
            return 200, self.agents.describe(instance_id)

        return {
            ("POST", "/_cordon/ssm/behaviour"): set_behaviour,
            ("DELETE", "/_cordon/ssm/behaviour"): clear_behaviour,
            ("GET", "/_cordon/ssm/commands"): commands,
            ("GET", "/_cordon/ssm/agent"): get_agent,
            ("POST", "/_cordon/ssm/agent"): post_agent,
        }

    def shutdown(self) -> None:
        self.agents.shutdown()
        with self.lock:
            for cmd in self.commands.values():
                for inv in cmd.invocations.values():
                    if inv.proc and inv.proc.poll() is None:
                        _kill_group(inv.proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
