"""Unit tests of the EC2 request-throttling shim's bucket arithmetic (``local_aws/ec2_throttling.py``),
against the numbers and rules of "Request throttling for the Amazon EC2 API"
(https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html). No stack needed."""

from __future__ import annotations

import pytest

from local_aws import ec2_throttling as t
from local_aws.wire import AwsRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def buckets(**settings) -> tuple[t.Buckets, Clock]:
    clock = Clock()
    return t.Buckets(settings=t.Settings(**settings), clock=clock), clock


A, R = "123456789012", "us-east-1"


def admitted(b: t.Buckets, n: int, action: str, params: dict | None = None, account: str = A, region: str = R) -> int:
    return sum(b.admit(account, region, action, params or {}) for _ in range(n))


# ------------------------------------------------------------------------------ categories


@pytest.mark.parametrize(
    "action,params,expected",
    [
        ("DescribeRouteTables", {}, "non-mutating"),
        ("GetConsoleOutput", {"InstanceId": "i-1"}, "non-mutating"),
        ("DescribeInstances", {"InstanceId.1": "i-1"}, "unfiltered-non-mutating"),
        ("DescribeInstances", {"Filter.1.Name": "instance-id", "Filter.1.Value.1": "i-1"}, "non-mutating"),
        ("DescribeVolumes", {"MaxResults": "5"}, "non-mutating"),
        ("DescribeSecurityGroups", {"NextToken": "x"}, "non-mutating"),
        ("DescribeNetworkInterfaces", {}, "unfiltered-non-mutating"),
        ("ModifyInstanceAttribute", {}, "mutating"),
        ("CreateSecurityGroup", {}, "mutating"),
        ("StopInstances", {}, "mutating"),
        ("AuthorizeSecurityGroupIngress", {}, "resource-intensive"),
        ("RevokeSecurityGroupIngress", {}, "resource-intensive"),
        ("RevokeSecurityGroupEgress", {}, "mutating"),
        ("CreateSnapshots", {}, "uncategorized"),
        ("ModifyNetworkInterfaceAttribute", {}, "uncategorized"),
        ("DescribeSpotFleetRequests", {}, "uncategorized"),
    ],
)
def test_each_action_falls_in_the_documented_category(action, params, expected):
    assert t.category(action, params) == expected


def test_bucket_sizes_are_the_documented_ones():
    (d,) = t.draws("DescribeRouteTables", {})
    assert (d.capacity, d.refill_per_s) == (100, 20)
    (d,) = t.draws("DescribeInstances", {"InstanceId.1": "i-1"})
    assert (d.bucket, d.capacity, d.refill_per_s) == ("DescribeInstances (unfiltered)", 50, 10)
    (d,) = t.draws("ModifyInstanceAttribute", {})
    assert (d.capacity, d.refill_per_s) == (50, 5)
    (d,) = t.draws("RevokeSecurityGroupIngress", {})
    assert (d.capacity, d.refill_per_s) == (50, 5)
    (d,) = t.draws("CreateTags", {})
    assert (d.capacity, d.refill_per_s) == (100, 10)
    request, resources = t.draws("RunInstances", {"MinCount": "1", "MaxCount": "3"})
    assert (request.capacity, request.refill_per_s) == (5, 2)
    assert (resources.bucket, resources.capacity, resources.refill_per_s, resources.tokens) == (
        "RunInstances (resources)",
        1000,
        2,
        3,
    )
    _, resources = t.draws("StopInstances", {"InstanceId.1": "i-1", "InstanceId.2": "i-2"})
    assert (resources.capacity, resources.refill_per_s, resources.tokens) == (1000, 20, 2)


# ------------------------------------------------------------------------------ arithmetic


def test_a_full_bucket_admits_its_capacity_at_once_then_throttles():
    b, _ = buckets()
    # "you can make up to 100 DescribeHosts requests in one second" (a non-mutating action).
    assert admitted(b, 150, "DescribeHosts") == 100
    assert b.throttled == 50


def test_an_empty_bucket_refills_at_its_rate_and_never_beyond_its_capacity():
    b, clock = buckets()
    assert admitted(b, 50, "ModifyInstanceAttribute") == 50
    assert admitted(b, 1, "ModifyInstanceAttribute") == 0
    clock.advance(1)  # mutating: 5 tokens a second
    assert admitted(b, 10, "ModifyInstanceAttribute") == 5
    clock.advance(0.1)  # half a token: not enough for a request
    assert admitted(b, 1, "ModifyInstanceAttribute") == 0
    clock.advance(0.1)
    assert admitted(b, 1, "ModifyInstanceAttribute") == 1
    clock.advance(3600)  # "The bucket can't hold more than its maximum number of tokens."
    assert admitted(b, 60, "ModifyInstanceAttribute") == 50


def test_the_documented_example_empty_bucket_is_full_again_after_five_seconds():
    b, clock = buckets()
    assert admitted(b, 100, "DescribeHosts") == 100
    clock.advance(5)
    assert admitted(b, 101, "DescribeHosts") == 100


def test_refill_tokens_sustain_the_refill_rate():
    b, clock = buckets()
    assert admitted(b, 100, "DescribeHosts") == 100
    for _ in range(10):  # "you can continue to make 20 API requests per second"
        clock.advance(1)
        assert admitted(b, 25, "DescribeHosts") == 20


def test_fractional_refill_rates():
    b, clock = buckets()
    assert admitted(b, 2, "AdvertiseByoipCidr") == 1  # 1 token, 0.1 per second
    clock.advance(9.9)
    assert admitted(b, 1, "AdvertiseByoipCidr") == 0
    clock.advance(0.1)
    assert admitted(b, 1, "AdvertiseByoipCidr") == 1


def test_each_action_has_its_own_bucket():
    b, _ = buckets()
    assert admitted(b, 60, "ModifyInstanceAttribute") == 50
    # "requests for other API are not affected", even in the same category.
    assert admitted(b, 60, "CreateSecurityGroup") == 50


def test_unfiltered_requests_use_a_smaller_bucket_of_their_own():
    b, _ = buckets()
    by_id = {"InstanceId.1": "i-1"}
    filtered = {"Filter.1.Name": "instance-id", "Filter.1.Value.1": "i-1"}
    assert admitted(b, 60, "DescribeInstances", by_id) == 50
    assert admitted(b, 120, "DescribeInstances", filtered) == 100


def test_buckets_are_per_account_and_region():
    b, _ = buckets()
    assert admitted(b, 60, "ModifyInstanceAttribute") == 50
    assert admitted(b, 60, "ModifyInstanceAttribute", account="210987654321") == 50
    assert admitted(b, 60, "ModifyInstanceAttribute", region="eu-west-1") == 50


def test_a_throttled_request_takes_no_token():
    b, clock = buckets()
    assert admitted(b, 50, "ModifyInstanceAttribute") == 50
    assert admitted(b, 100, "ModifyInstanceAttribute") == 0
    clock.advance(1)
    assert admitted(b, 10, "ModifyInstanceAttribute") == 5


def test_resource_bucket_limits_the_action_even_with_request_tokens_left():
    b, clock = buckets()
    # StopInstances: request bucket 50 (mutating), resource bucket 1000 at 20 / s.
    many = {f"InstanceId.{i}": f"i-{i}" for i in range(1, 401)}
    assert admitted(b, 3, "StopInstances", many) == 2  # 800 of 1000 instance tokens used
    one = {"InstanceId.1": "i-1"}
    assert admitted(b, 300, "StopInstances", one) == 48  # the request bucket (50) runs out first
    b, clock = buckets()
    assert admitted(b, 2, "StopInstances", many) == 2
    assert admitted(b, 1, "StopInstances", many) == 0  # 200 instance tokens left, 400 asked
    clock.advance(10)  # +200 instance tokens, +50 request tokens
    assert admitted(b, 1, "StopInstances", many) == 1
    # The throttled StopInstances took no request token either.
    assert b.describe()["throttled"] == 1


def test_scale_multiplies_capacities_and_rates():
    b, clock = buckets(capacity_scale=0.1, refill_scale=0.1)
    assert admitted(b, 10, "ModifyInstanceAttribute") == 5  # 50 × 0.1
    clock.advance(2)  # 5 × 0.1 = 0.5 / s
    assert admitted(b, 10, "ModifyInstanceAttribute") == 1
    b, clock = buckets(capacity_scale=0.001, refill_scale=1)
    assert admitted(b, 3, "ModifyInstanceAttribute") == 1  # never below one token


def test_disabled_admits_everything():
    b, _ = buckets(enabled=False)
    assert admitted(b, 1000, "RunInstances") == 1000


def test_reconfiguring_starts_every_bucket_full():
    b, _ = buckets()
    assert admitted(b, 60, "ModifyInstanceAttribute") == 50
    b.configure(t.Settings(capacity_scale=0.2, refill_scale=0.2))
    assert admitted(b, 20, "ModifyInstanceAttribute") == 10
    assert b.describe()["buckets"][0]["capacity"] == 10


def test_settings_from_the_environment():
    assert t.settings_from_env({}) == t.Settings(True, 1.0, 1.0)
    assert t.settings_from_env({"CORDON_EC2_THROTTLING": "off"}).enabled is False
    assert t.settings_from_env({"CORDON_EC2_THROTTLING_SCALE": "0.5"}) == t.Settings(True, 0.5, 0.5)
    with pytest.raises(ValueError):
        t.settings_from_env({"CORDON_EC2_THROTTLING_SCALE": "0"})


# ------------------------------------------------------------------------------ the shim


def _ec2(action: str, body: str = "") -> AwsRequest:
    req = AwsRequest(
        method="POST",
        path="/",
        query_string="",
        headers={"authorization": "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/ec2/aws4_request"},
        body=f"Action={action}{body}".encode(),
        service="ec2",
        region="us-east-1",
        action=action,
        protocol="ec2",
        params={"Action": action},
    )
    return req


def test_the_shim_answers_request_limit_exceeded_in_ec2s_shape():
    clock = Clock()
    shim = t.Ec2ThrottlingShim(t.Settings(capacity_scale=0.02, refill_scale=0.02), clock=clock)
    req = _ec2("ModifyInstanceAttribute")
    assert shim.handles(req) is False  # one token (50 × 0.02): passed on to moto
    assert shim.handles(req) is True
    status, headers, body = shim.handle(req)
    assert status == 503
    assert b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>" in body
    assert b"<Message>Request limit exceeded.</Message>" in body
    assert not shim.handles(_ec2("CreateTags"))  # another action, another bucket


def test_the_shim_ignores_other_services():
    shim = t.Ec2ThrottlingShim(t.Settings(capacity_scale=0.001, refill_scale=0.001), clock=Clock())
    req = _ec2("ModifyInstanceAttribute")
    req.service = "iam"
    assert not any(shim.handles(req) for _ in range(10))
