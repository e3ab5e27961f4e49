"""SSM Run Command, run for real: SendCommand, GetCommandInvocation, ListCommandInvocations,
ListCommands, CancelCommand.

Emulator gap: moto 5.2.5 validates nothing in SendCommand, fans ``InstanceIds`` out to every
instance in the region, finishes every invocation as ``Success`` at once with empty output, and
does not implement ListCommandInvocations (HTTP 500). Cordon's collection step needs the real
contract: only managed, online instances are accepted; the command runs for a while; its output is
in the invocation (first 24,000 characters) and, in full, in S3.

What this shim does (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html):

- ``SendCommand`` takes ``DocumentName`` ``AWS-RunShellScript`` (or ``AWS-RunPowerShellScript``)
  and exactly the given ``InstanceIds``; each must be a registered managed node that is online
  (``shims.ManagedNodes``), else ``InvalidInstanceId``, as on AWS. ``Targets`` is not supported.
- Each invocation runs ``Parameters.commands`` with ``bash`` on *this* machine, in a fresh temporary
  directory, stdin closed, with ``executionTimeout`` (default 3600 s) enforced, and the variables the
  agent sets (``AWS_SSM_INSTANCE_ID``, ``AWS_SSM_REGION_NAME``). ``AWS-RunPowerShellScript`` cannot
  run here: it ends ``Failed`` with an explanation in ``StandardErrorContent``.
- With ``OutputS3BucketName``, stdout and stderr (when not empty) are written in full to
  ``<OutputS3KeyPrefix>/<CommandId>/<InstanceId>/awsrunShellScript/0.awsrunShellScript/{stdout,stderr}``,
  the agent's layout (https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-rc-setting-up-cmdsys.html),
  through the local S3 endpoint, before the invocation reports its final status. The agent writes
  them with the instance's own credentials, those of its instance profile's role
  (https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-instance-permissions.html):
  the shim signs the uploads with the credentials of the role of the profile associated with the
  instance at that moment (``principals``), so they are logged as the forensic role's calls.
  ``StandardOutputUrl``/``StandardErrorUrl`` are path-style URLs of the local endpoint.
- ``GetCommandInvocation`` reports ``Pending`` on the first poll, ``InProgress`` on the second (and
  as long as the script runs), then ``Success``, ``Failed`` (exit code != 0, ``ResponseCode`` = exit
  code), ``TimedOut`` (``StatusDetails`` ``ExecutionTimedOut``) or ``Cancelled``; output content is
  the first 24,000 characters
  (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html).
  Unknown command: ``InvalidCommandId``; a known command without that instance: ``InvocationDoesNotExist``.

Behaviour hooks (``POST /_cordon/ssm/behaviour {"instance_id", "mode", "not_found_polls"?}``, applied
to commands sent afterwards): ``run`` (default); ``fail`` ends ``Failed`` with exit code 1 without
running anything; ``hang`` stays ``InProgress`` forever (until cancelled). ``not_found_polls``: N
first GetCommandInvocation calls answer ``InvocationDoesNotExist``, as AWS may right after SendCommand.
``DELETE /_cordon/ssm/behaviour`` resets (one instance, or all without a body).
``GET /_cordon/ssm/commands`` lists what the shim ran.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, UTC
from typing import Any

from .principals import REGISTRY, credentials_for
from .server import ControlError
from .shims import ManagedNodes
from .wire import AwsRequest, Response, aws_error, epoch, json_response

LOG = logging.getLogger("local_aws.ssm")

OUTPUT_LIMIT = 24000  # characters of stdout/stderr in GetCommandInvocation
PLUGIN_OUTPUT_LIMIT = 2500  # characters of Output in ListCommandInvocations' CommandPlugins
PLUGIN = "aws:runShellScript"
DOCUMENTS = {"AWS-RunShellScript", "AWS-RunPowerShellScript"}
TERMINAL = {"Success", "Failed", "TimedOut", "Cancelled"}
MODES = {"run", "fail", "hang"}


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


@dataclass
class Invocation:
    command: Command
    instance_id: str
    mode: str
    not_found_polls: int = 0
    status: str = "Pending"  # the real state; what pollers see lags (see ``observe``)
    status_details: str = "Pending"
    response_code: int = -1
    started: float | None = None
    ended: float | None = None
    stdout: str = ""
    stderr: str = ""
    polls: int = 0
    proc: subprocess.Popen | None = None
    cancelled: bool = False

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


class SsmRunCommandShim:
    name = "SsmRunCommandShim"
    ACTIONS = {"SendCommand", "GetCommandInvocation", "ListCommandInvocations", "ListCommands", "CancelCommand"}

    def __init__(self, nodes: ManagedNodes, endpoint: str) -> None:
        self.nodes = nodes
        self.endpoint = endpoint
        self.commands: dict[str, Command] = {}
        self.behaviour: dict[str, dict] = {}
        self.lock = threading.RLock()

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
        if not 1 <= execution_timeout <= 172800:
            return aws_error(req, "InvalidParameters", "executionTimeout must be between 1 and 172800 seconds.")

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
        answer = json_response({"Command": self._command_view(cmd)}, req)  # Pending, as sent
        for inv in cmd.invocations.values():
            threading.Thread(target=self._execute, args=(inv,), name=f"ssm-{cmd.id[:8]}", daemon=True).start()
        LOG.info("SendCommand %s %s on %s", cmd.id, document, instance_ids)
        return answer

    def _execute(self, inv: Invocation) -> None:
        cmd = inv.command
        with self.lock:
            inv.status = inv.status_details = "InProgress"
            inv.started = time.time()
        if inv.mode == "hang":
            return  # stays InProgress until cancelled
        if inv.mode == "fail":
            return self._finish(inv, "Failed", "Failed", 1, "", "simulated failure (local stack behaviour 'fail')\n")
        if cmd.document == "AWS-RunPowerShellScript":
            return self._finish(
                inv,
                "Failed",
                "Failed",
                1,
                "",
                "AWS-RunPowerShellScript cannot run in the local stack (no Windows managed node here); "
                "only AWS-RunShellScript commands are executed.\n",
            )
        platform = (self.nodes.info(inv.instance_id) or {}).get("PlatformType")
        if platform == "Windows":
            return self._finish(
                inv, "Failed", "Failed", 1, "", "AWS-RunShellScript cannot run on a Windows managed node.\n"
            )

        workdir = tempfile.mkdtemp(prefix=f"ssm-{cmd.id[:8]}-{inv.instance_id}-")
        try:
            script = os.path.join(workdir, "_script.sh")
            with open(script, "w") as f:
                f.write("\n".join(str(c) for c in cmd.parameters["commands"]) + "\n")
            env = {
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": workdir,
                "LANG": "C.UTF-8",
                "AWS_SSM_INSTANCE_ID": inv.instance_id,
                "AWS_SSM_REGION_NAME": cmd.region,
            }
            out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    ["bash", script],
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
                with self.lock:
                    inv.proc = proc
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
        if inv.cancelled:
            return
        if timed_out:
            self._finish(
                inv,
                "TimedOut",
                "ExecutionTimedOut",
                code,
                stdout,
                stderr + "\nfailed to run commands: exit status -1 (execution timed out)\n",
            )
        elif code == 0:
            self._finish(inv, "Success", "Success", 0, stdout, stderr)
        else:
            self._finish(inv, "Failed", "Failed", code if code >= 0 else 128 - code, stdout, stderr)

    def _finish(self, inv: Invocation, status: str, details: str, code: int, stdout: str, stderr: str) -> None:
        """Uploads the output (as the agent does, before reporting) and sets the final status."""
        stderr += self._upload(inv, stdout, stderr)
        with self.lock:
            if inv.cancelled:
                return
            inv.stdout, inv.stderr = stdout, stderr
            inv.response_code = code
            inv.ended = time.time()
            inv.status, inv.status_details = status, details
        LOG.info("command %s on %s: %s (%d)", inv.command.id, inv.instance_id, status, code)

    def _upload(self, inv: Invocation, stdout: str, stderr: str) -> str:
        if not inv.command.bucket:
            return ""
        import boto3

        creds = instance_credentials(inv.instance_id, inv.command.node_region)
        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=inv.command.region,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=creds["AWS_SESSION_TOKEN"],
        )
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            if not text:
                continue
            try:
                s3.put_object(
                    Bucket=inv.command.bucket, Key=inv.s3_key(stream), Body=text.encode(), ChecksumAlgorithm="SHA256"
                )
            except Exception as e:  # the agent reports upload failures in the command's stderr
                LOG.warning("could not upload %s of %s: %s", stream, inv.command.id, e)
                return f"\nfailed to upload {stream} to s3://{inv.command.bucket}/{inv.s3_key(stream)}: {e}\n"
        return ""

    # ------------------------------------------------------------------ polling

    def _observe(self, inv: Invocation) -> tuple[str, str, int]:
        """What a poller sees: Pending on the first poll, InProgress on the second, then the truth."""
        with self.lock:
            inv.polls += 1
            if inv.polls == 1 and inv.status not in ("Cancelled",):
                return "Pending", "Pending", -1
            if inv.status not in TERMINAL or inv.polls == 2 and inv.status != "Cancelled":
                return "InProgress", "InProgress", -1
            return inv.status, inv.status_details, inv.response_code

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
        status, details, code = self._observe(inv)
        final = status in TERMINAL
        started = inv.started if status != "Pending" else None
        ended = inv.ended if final else None
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
                "ExecutionEndDateTime": _iso(ended),
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
            for inv in cmd.invocations.values():
                if instance_id and inv.instance_id != instance_id:
                    continue
                status, details, code = self._observe(inv)
                final = status in TERMINAL
                plugins = []
                if p.get("Details"):
                    plugins.append(
                        {
                            "Name": PLUGIN,
                            "Status": status,
                            "StatusDetails": details,
                            "ResponseCode": code,
                            "ResponseStartDateTime": epoch(inv.started)
                            if inv.started and status != "Pending"
                            else None,
                            "ResponseFinishDateTime": epoch(inv.ended) if final and inv.ended else None,
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
            for inv in cmd.invocations.values():
                if p.get("InstanceIds") and inv.instance_id not in p["InstanceIds"]:
                    continue
                if inv.status in TERMINAL:
                    continue
                inv.cancelled = True
                inv.status = inv.status_details = "Cancelled"
                inv.ended = time.time()
                if inv.proc and inv.proc.poll() is None:
                    _kill_group(inv.proc)
        return json_response({}, req)

    def _command_view(self, cmd: Command) -> dict:
        with self.lock:
            statuses = [i.status for i in cmd.invocations.values()]
        if all(s == "Pending" for s in statuses):
            status = "Pending"
        elif any(s not in TERMINAL for s in statuses):
            status = "InProgress"
        elif all(s == "Success" for s in statuses):
            status = "Success"
        elif all(s == "Cancelled" for s in statuses):
            status = "Cancelled"
        else:
            status = "Failed"
        return {
            "CommandId": cmd.id,
            "DocumentName": cmd.document,
            "DocumentVersion": "$DEFAULT",
            "Comment": cmd.comment,
            "ExpiresAfter": epoch(cmd.requested + cmd.timeout_seconds + cmd.execution_timeout),
            "Parameters": cmd.parameters,
            "InstanceIds": cmd.instance_ids,
            "Targets": [],
            "RequestedDateTime": epoch(cmd.requested),
            "Status": status,
            "StatusDetails": status,
            "OutputS3Region": cmd.region,
            "OutputS3BucketName": cmd.bucket,
            "OutputS3KeyPrefix": cmd.prefix,
            "MaxConcurrency": "50",
            "MaxErrors": "0",
            "TargetCount": len(cmd.instance_ids),
            "CompletedCount": sum(s in TERMINAL for s in statuses),
            "ErrorCount": sum(s in ("Failed", "TimedOut") for s in statuses),
            "DeliveryTimedOutCount": 0,
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
                            "invocations": {
                                i.instance_id: {"status": i.status, "response_code": i.response_code, "polls": i.polls}
                                for i in c.invocations.values()
                            },
                        }
                        for c in self.commands.values()
                    ]
                }

        return {
            ("POST", "/_cordon/ssm/behaviour"): set_behaviour,
            ("DELETE", "/_cordon/ssm/behaviour"): clear_behaviour,
            ("GET", "/_cordon/ssm/commands"): commands,
        }

    def shutdown(self) -> None:
        with self.lock:
            for cmd in self.commands.values():
                for inv in cmd.invocations.values():
                    if inv.proc and inv.proc.poll() is None:
                        _kill_group(inv.proc)


def instance_credentials(instance_id: str, region: str) -> dict[str, str]:
    """What the instance's SDKs get from its metadata service: credentials of the role of the
    instance profile associated now (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_switch-role-ec2.html).
    Without a profile (removed before the command ended) the upload is still made here, under an
    identity that names no principal, so it stays outside the action-coverage check."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    assoc = ec2_backends[DEFAULT_ACCOUNT_ID][region].iam_instance_profile_associations.get(instance_id)
    roles = list(getattr(assoc.iam_instance_profile, "roles", []) or []) if assoc else []
    if roles:
        return REGISTRY.credentials_of_role_arn(roles[0].arn)
    return credentials_for("instance-without-profile", instance_id)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
