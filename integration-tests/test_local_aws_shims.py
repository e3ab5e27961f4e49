"""The local stack's own behaviour: fault injection and the emulator-gap shims, through boto3.

These pin the wire contract the steps rely on, so a change in a shim that would make it answer
unlike AWS shows up here rather than as a confusing step failure.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import sha256

# ----------------------------------------------------------------------------- fault injection


@pytest.fixture
def faults(stack):
    yield lambda **rule: stack.control("/faults", rule)
    stack.control("/faults", method="DELETE")


def error_of(call) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as info:
        call()
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


@pytest.mark.parametrize(
    "service, action, code, status, call",
    [
        pytest.param(
            "ec2", "DescribeInstances", "RequestLimitExceeded", 503, lambda c: c.describe_instances(), id="ec2 xml"
        ),
        pytest.param(
            "iam", "GetRole", "Throttling", 400, lambda c: c.get_role(RoleName="app-server"), id="iam query xml"
        ),
        pytest.param(
            "autoscaling",
            "DescribeAutoScalingGroups",
            "Throttling",
            400,
            lambda c: c.describe_auto_scaling_groups(),
            id="autoscaling query xml",
        ),
        pytest.param(
            "ssm",
            "DescribeInstanceInformation",
            "ThrottlingException",
            400,
            lambda c: c.describe_instance_information(),
            id="ssm json",
        ),
        pytest.param(
            "stepfunctions",
            "ListStateMachines",
            "ThrottlingException",
            400,
            lambda c: c.list_state_machines(),
            id="sfn json",
        ),
        pytest.param(
            "sqs", "ListQueues", "RequestThrottled", 403, lambda c: c.list_queues(), id="sqs json, query-compatible"
        ),
        pytest.param(
            "s3",
            "ListObjectsV2",
            "SlowDown",
            503,
            lambda c: c.list_objects_v2(Bucket="cordon-evidence-local"),
            id="s3 xml",
        ),
        pytest.param(
            "lambda",
            "GetFunction",
            "TooManyRequestsException",
            429,
            lambda c: c.get_function(FunctionName="cordon-metadata"),
            id="lambda rest-json",
        ),
    ],
)
def test_injected_faults_are_shaped_as_the_service_answers(stack, faults, service, action, code, status, call):
    client = stack.client(service, retries=0)
    faults(service=service, action=action, code=code, status=status, count=2, message="injected for the test")
    assert error_of(lambda: call(client)) == (code, status, "injected for the test")
    assert error_of(lambda: call(client))[0] == code
    call(client)  # the third call is not faulted: count was 2


def test_a_fault_rule_can_target_one_instance(stack, faults):
    ec2 = stack.client("ec2", retries=0)
    faults(
        service="ec2",
        action="DescribeInstances",
        code="UnauthorizedOperation",
        count=-1,
        instance_id=stack.demo_instance_id,
    )
    code, status, _ = error_of(lambda: ec2.describe_instances(InstanceIds=[stack.demo_instance_id]))
    assert (code, status) == ("UnauthorizedOperation", 403)
    ec2.describe_instances(InstanceIds=[stack.unmanaged_instance_id])
    rules = stack.control("/faults")["rules"]
    assert rules[0]["fired"] == 1 and rules[0]["count"] == -1


def test_the_request_log_records_faulted_and_passed_requests(stack, faults):
    ec2 = stack.client("ec2", retries=0)
    before = stack.last_request_seq()
    faults(service="ec2", action="DescribeVolumes", code="InternalError", count=1)
    with pytest.raises(ClientError):
        ec2.describe_volumes()
    ec2.describe_volumes()
    log = stack.requests(service="ec2", action="DescribeVolumes", since=before)
    assert [(r["status"], r["fault"] is not None) for r in log] == [(500, True), (200, False)]


# ----------------------------------------------------------------------------- console screenshot


def test_console_screenshot_is_a_jpeg_of_the_instance(stack):
    shot = stack.ec2.get_console_screenshot(InstanceId=stack.demo_instance_id)
    assert shot["InstanceId"] == stack.demo_instance_id
    jpeg = base64.b64decode(shot["ImageData"])
    assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9"
    assert 1000 < len(jpeg) < 20000


def test_console_screenshot_of_an_unknown_instance_is_not_found(stack):
    code, status, _ = error_of(lambda: stack.ec2.get_console_screenshot(InstanceId="i-0000000000000dead"))
    assert (code, status) == ("InvalidInstanceID.NotFound", 400)


def test_console_screenshot_gap_can_be_simulated(stack):
    inst = stack.seed_instance(ssm=False, extra_volumes=0, second_interface=False)
    stack.control("/ec2/screenshot-unsupported", {"instance_id": inst.instance_id})
    try:
        code, _, message = error_of(lambda: stack.ec2.get_console_screenshot(InstanceId=inst.instance_id))
        assert code == "UnsupportedOperation" and "screenshot" in message
    finally:
        stack.control("/ec2/screenshot-unsupported", {"instance_id": inst.instance_id}, method="DELETE")
    stack.ec2.get_console_screenshot(InstanceId=inst.instance_id)


# ----------------------------------------------------------------------------- SSM inventory


def test_describe_instance_information_lists_managed_nodes_only(stack):
    listed = {i["InstanceId"]: i for i in stack.ssm.describe_instance_information()["InstanceInformationList"]}
    node = listed[stack.demo_instance_id]
    assert (node["PingStatus"], node["PlatformType"], node["ResourceType"]) == ("Online", "Linux", "EC2Instance")
    assert node["AgentVersion"] and node["PlatformName"] and node["LastPingDateTime"]
    assert stack.unmanaged_instance_id not in listed


def test_describe_instance_information_filters(stack):
    ids = [stack.demo_instance_id, stack.unmanaged_instance_id]
    by_filters = stack.ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": ids}])
    assert [i["InstanceId"] for i in by_filters["InstanceInformationList"]] == [stack.demo_instance_id]
    by_list = stack.ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": ids}]
    )
    assert [i["InstanceId"] for i in by_list["InstanceInformationList"]] == [stack.demo_instance_id]
    windows = stack.ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": ids}, {"Key": "PlatformTypes", "Values": ["Windows"]}]
    )
    assert windows["InstanceInformationList"] == []
    code, _, _ = error_of(lambda: stack.ssm.describe_instance_information(Filters=[{"Key": "Nope", "Values": ["x"]}]))
    assert code == "InvalidFilterKey"


def test_a_stopped_managed_instance_loses_its_connection(stack):
    inst = stack.seed_instance(ssm=True, extra_volumes=0, second_interface=False)
    stack.ec2.stop_instances(InstanceIds=[inst.instance_id])
    info = stack.ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [inst.instance_id]}])
    assert info["InstanceInformationList"][0]["PingStatus"] == "ConnectionLost"
    code, _, _ = error_of(
        lambda: stack.ssm.send_command(
            InstanceIds=[inst.instance_id], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
        )
    )
    assert code == "InvalidInstanceId"


# ----------------------------------------------------------------------------- SSM Run Command


@pytest.fixture(scope="module")
def output_bucket(stack):
    name = f"ssm-output-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=name)
    # The agent writes command output with the instance's own role, which must allow it
    # (https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-instance-profile.html).
    stack.iam.put_role_policy(
        RoleName="app-server",
        PolicyName=name,
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:PutObjectAcl"], "Resource": f"arn:aws:s3:::{name}/*"}
        ]}),
    )
    yield name
    stack.iam.delete_role_policy(RoleName="app-server", PolicyName=name)


def poll(stack, command_id, instance_id, until=("Success", "Failed", "TimedOut", "Cancelled"), limit=60):
    seen = []
    for _ in range(limit):
        inv = stack.ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        if not seen or seen[-1] != inv["Status"]:
            seen.append(inv["Status"])
        if inv["Status"] in until:
            return inv, seen
        time.sleep(0.1)
    return inv, seen


def test_run_shell_script_runs_and_reports_like_ssm(stack, output_bucket):
    iid = stack.demo_instance_id
    sent = stack.ssm.send_command(
        InstanceIds=[iid],
        DocumentName="AWS-RunShellScript",
        Parameters={
            "commands": ["echo hello from $AWS_SSM_INSTANCE_ID", "pwd >/dev/null", "echo oops >&2"],
            "executionTimeout": ["30"],
        },
        OutputS3BucketName=output_bucket,
        OutputS3KeyPrefix="collect",
        TimeoutSeconds=60,
    )["Command"]
    assert sent["Status"] == "Pending" and sent["InstanceIds"] == [iid]
    inv, seen = poll(stack, sent["CommandId"], iid)
    assert seen == ["Pending", "InProgress", "Success"]
    assert inv["ResponseCode"] == 0
    assert inv["StandardOutputContent"] == f"hello from {iid}\n"
    assert inv["StandardErrorContent"] == "oops\n"
    prefix = f"collect/{sent['CommandId']}/{iid}/awsrunShellScript/0.awsrunShellScript/"
    body, _ = stack.get_object(prefix + "stdout", bucket=output_bucket)
    assert body == f"hello from {iid}\n".encode()
    assert stack.get_object(prefix + "stderr", bucket=output_bucket)[0] == b"oops\n"
    assert inv["StandardOutputUrl"].endswith(f"/{output_bucket}/{prefix}stdout")

    listed = stack.ssm.list_command_invocations(CommandId=sent["CommandId"], Details=True)["CommandInvocations"]
    assert [(i["InstanceId"], i["Status"]) for i in listed] == [(iid, "Success")]
    assert listed[0]["CommandPlugins"][0]["Name"] == "aws:runShellScript"


def test_a_failing_script_reports_its_exit_code(stack):
    iid = stack.demo_instance_id
    cid = stack.ssm.send_command(
        InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters={"commands": ["echo partial", "exit 3"]}
    )["Command"]["CommandId"]
    inv, _ = poll(stack, cid, iid)
    assert (inv["Status"], inv["StatusDetails"], inv["ResponseCode"]) == ("Failed", "Failed", 3)
    assert inv["StandardOutputContent"] == "partial\n"


def test_a_script_over_its_execution_timeout_is_timed_out(stack):
    iid = stack.demo_instance_id
    cid = stack.ssm.send_command(
        InstanceIds=[iid],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["sleep 30"], "executionTimeout": ["1"]},
    )["Command"]["CommandId"]
    inv, _ = poll(stack, cid, iid, limit=100)
    assert (inv["Status"], inv["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")


def test_output_content_is_truncated_but_s3_has_all_of_it(stack, output_bucket):
    iid = stack.demo_instance_id
    sent = stack.ssm.send_command(
        InstanceIds=[iid],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["head -c 30000 /dev/zero | tr '\\0' x"]},
        OutputS3BucketName=output_bucket,
    )["Command"]
    inv, _ = poll(stack, sent["CommandId"], iid)
    assert len(inv["StandardOutputContent"]) == 24000
    key = f"{sent['CommandId']}/{iid}/awsrunShellScript/0.awsrunShellScript/stdout"
    assert len(stack.get_object(key, bucket=output_bucket)[0]) == 30000


def test_send_command_accepts_only_online_managed_instances(stack):
    code, _, _ = error_of(
        lambda: stack.ssm.send_command(
            InstanceIds=[stack.unmanaged_instance_id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": ["true"]},
        )
    )
    assert code == "InvalidInstanceId"


def test_powershell_cannot_run_here_and_says_so(stack):
    iid = stack.demo_instance_id
    cid = stack.ssm.send_command(
        InstanceIds=[iid], DocumentName="AWS-RunPowerShellScript", Parameters={"commands": ["Get-Process"]}
    )["Command"]["CommandId"]
    inv, _ = poll(stack, cid, iid)
    assert inv["Status"] == "Failed" and "PowerShell" in inv["StandardErrorContent"]


def test_behaviour_hooks_fail_and_hang(stack):
    inst = stack.seed_instance(ssm=True, extra_volumes=0, second_interface=False)
    iid = inst.instance_id
    try:
        stack.control("/ssm/behaviour", {"instance_id": iid, "mode": "fail"})
        cid = stack.ssm.send_command(
            InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters={"commands": ["touch /tmp/should-not-run"]}
        )["Command"]["CommandId"]
        inv, _ = poll(stack, cid, iid)
        assert (inv["Status"], inv["ResponseCode"]) == ("Failed", 1)

        stack.control("/ssm/behaviour", {"instance_id": iid, "mode": "hang"})
        cid = stack.ssm.send_command(
            InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
        )["Command"]["CommandId"]
        inv, seen = poll(stack, cid, iid, limit=15)
        assert seen == ["Pending", "InProgress"]
        stack.ssm.cancel_command(CommandId=cid)
        assert stack.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] == "Cancelled"
    finally:
        stack.control("/ssm/behaviour", {"instance_id": iid}, method="DELETE")


def test_unknown_commands_and_invocations(stack):
    iid = stack.demo_instance_id
    code, _, _ = error_of(lambda: stack.ssm.get_command_invocation(CommandId=str(uuid.uuid4()), InstanceId=iid))
    assert code == "InvalidCommandId"
    cid = stack.ssm.send_command(
        InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
    )["Command"]["CommandId"]
    code, _, _ = error_of(
        lambda: stack.ssm.get_command_invocation(CommandId=cid, InstanceId=stack.unmanaged_instance_id)
    )
    assert code == "InvocationDoesNotExist"


def test_evidence_writes_need_a_checksum_as_on_s3(stack):
    """Object Lock bucket with default retention: a checksum header (any algorithm) is required."""
    key = f"checksum-test/{uuid.uuid4().hex}"
    data = b"evidence"
    checksum = base64.b64encode(bytes.fromhex(sha256(data))).decode()
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=data, ChecksumSHA256=checksum)

    def strip_integrity_headers(request, **_):
        for header in list(request.headers.keys()):
            name = header.lower()
            if name.startswith("x-amz-checksum") or name in ("x-amz-sdk-checksum-algorithm", "content-md5"):
                del request.headers[header]

    bare = stack.client("s3")
    bare.meta.events.register("before-sign.s3.PutObject", strip_integrity_headers)
    code, status, message = error_of(lambda: bare.put_object(Bucket=stack.bucket, Key=key + "-bare", Body=data))
    assert (code, status) == ("InvalidRequest", 400) and "Object Lock" in message
