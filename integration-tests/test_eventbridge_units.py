"""Unit tests of the local EventBridge's pure parts: pattern matching, JSON paths, the input
transformer and the small policy evaluator (``local_aws/eventbridge.py``). No stack needed.

The expected outcomes are the documented ones (the EventBridge user guide's pages on event
patterns, comparison operators, arrays, null values and input transformation, the event-ruler
README), each case named after the behaviour it pins down.
"""

from __future__ import annotations

import json

import pytest

from local_aws.eventbridge import (
    InputTransformerError,
    InvalidEventPattern,
    compile_pattern,
    json_path,
    policy_decision,
    putevents_entry_size,
    render_input_transformer,
    validate_input_transformer,
)
from local_aws.template import Template, TemplateError

EVENT = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2015-11-11T21:29:54Z",
    "region": "us-east-1",
    "resources": [
        "arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111",
        "arn:aws:ec2:us-east-1:123456789012:volume/vol-1",
    ],
    "detail": {
        "instance-id": "i-0123456789",
        "state": "RUNNING",
        "c-count": 5,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
        "file": "dir/init/file.PNG",
        "flag": False,
        "nothing": None,
        "empty": "",
        "tags": [],
        "findings": [
            {"Type": "AwsEc2Instance", "Id": "i-1", "Severity": {"Label": "HIGH"}},
            {"Type": "AwsIamAccessKey", "Id": "AKIA1", "Severity": {"Label": "LOW"}},
        ],
    },
}


def matches(pattern, event=EVENT) -> bool:
    return compile_pattern(pattern).matches(event)


# ------------------------------------------------------------------------------------ matching


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ({"source": ["aws.ec2"]}, True),
        ({"source": ["aws.ec2", "aws.fargate"]}, True),
        ({"source": ["AWS.EC2"]}, False),  # exact values are case-sensitive
        ({"detail": {"state": ["RUNNING"]}, "source": ["aws.s3"]}, False),  # every field must match
        ({"detail": {"missing": ["x"]}}, False),
        ({"resources": ["arn:aws:ec2:us-east-1:123456789012:volume/vol-1"]}, True),  # arrays: any element
        ({"detail": {"c-count": [5.0]}}, True),  # numbers by value
        ({"detail": {"c-count": ["5"]}}, False),  # a string is not a number
        ({"detail": {"flag": [False]}}, True),
        ({"detail": {"flag": [0]}}, False),  # false is not 0
        ({"detail": {"nothing": [None]}}, True),
        ({"detail": {"empty": [None]}}, False),  # null and "" are not interchangeable
        ({"detail": {"empty": [""]}}, True),
        ({"detail.state": ["RUNNING"]}, True),  # keys are joined with dots
        ({"time": [{"prefix": "2015-11-11"}]}, True),
        ({"time": [{"prefix": ""}]}, True),
        ({"detail": {"c-count": [{"prefix": "5"}]}}, False),  # prefix only on strings
        ({"detail": {"file": [{"suffix": ".png"}]}}, False),
        ({"detail": {"file": [{"suffix": {"equals-ignore-case": ".png"}}]}}, True),
        ({"detail": {"state": [{"prefix": {"equals-ignore-case": "run"}}]}}, True),
        ({"detail": {"state": [{"equals-ignore-case": "running"}]}}, True),
        ({"detail": {"file": [{"wildcard": "dir/*/file.PNG"}]}}, True),
        ({"detail": {"file": [{"wildcard": "dir/*.png"}]}}, False),
        ({"detail": {"file": [{"wildcard": ""}]}}, False),
        ({"detail": {"state": [{"anything-but": "initializing"}]}}, True),
        ({"detail": {"state": [{"anything-but": ["RUNNING", "stopped"]}]}}, False),
        ({"detail": {"nothing": [{"anything-but": "x"}]}}, True),  # null is "anything but x"
        ({"detail": {"missing": [{"anything-but": "x"}]}}, False),  # but a missing field is not
        ({"detail": {"c-count": [{"anything-but": [100, 200]}]}}, True),
        ({"detail": {"state": [{"anything-but": {"prefix": "RUN"}}]}}, False),
        ({"detail": {"file": [{"anything-but": {"wildcard": "*/lib/*"}}]}}, True),
        ({"detail": {"c-count": [{"anything-but": {"prefix": "5"}}]}}, True),
        ({"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}, True),
        ({"detail": {"c-count": [{"numeric": ["<", 5]}]}}, False),
        ({"detail": {"x-limit": [{"numeric": ["=", 3.018e2]}]}}, True),
        ({"detail": {"state": [{"numeric": [">", 0]}]}}, False),  # numeric only on JSON numbers
        ({"detail": {"flag": [{"numeric": ["<", 1]}]}}, False),  # false is not a number
        ({"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}, True),
        ({"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}, False),
        ({"detail": {"state": [{"exists": True}]}}, True),
        ({"detail": {"missing": [{"exists": False}]}}, True),
        ({"detail": {"state": [{"exists": False}]}}, False),
        ({"detail": {"findings": [{"exists": True}]}}, False),  # exists only on leaves
        ({"detail": {"findings": [{"exists": False}]}}, True),
        ({"detail": {"tags": [{"exists": True}]}}, False),  # an empty array has no value
        ({"detail": {"missing": [{"anything-but": "x"}, {"exists": False}]}}, True),  # any of the list
        ({"$or": [{"source": ["aws.s3"]}, {"detail": {"c-count": [5]}}]}, True),
        ({"$or": [{"source": ["aws.s3"]}, {"detail": {"c-count": [6]}}]}, False),
        ({"detail": {"$or": [{"state": ["x"]}, {"state": ["RUNNING"]}]}, "source": ["aws.ec2"]}, True),
        ({"detail": {"findings": {"Type": ["AwsEc2Instance"]}}}, True),  # arrays of objects are crushed
        ({"detail": {"findings": {"Severity": {"Label": ["LOW"]}}}}, True),
        # Array-consistent: both fields from the same element only.
        ({"detail": {"findings": {"Type": ["AwsEc2Instance"], "Id": ["i-1"]}}}, True),
        ({"detail": {"findings": {"Type": ["AwsEc2Instance"], "Id": ["AKIA1"]}}}, False),
    ],
)
def test_event_patterns_match_as_documented(pattern, expected):
    assert matches(pattern) is expected, pattern


@pytest.mark.parametrize(
    "pattern",
    [
        {"source": "aws.ec2"},  # values are arrays
        {"source": 42},
        {"source": []},
        {"source": [{"NUMERIC": ["=", 5]}]},  # operators are case-sensitive
        {"source": [{"prefix": ["a"]}]},  # prefix takes one string
        {"source": [{"prefix": 1}]},
        {"source": [{"suffix": ["a"]}]},
        {"source": [{"equals-ignore-case": ["a"]}]},
        {"source": [{"wildcard": "a**b"}]},
        {"source": [{"wildcard": "a\\b"}]},
        {"source": [{"anything-but": None}]},
        {"source": [{"anything-but": ["a", None]}]},
        {"source": [{"anything-but": ["a", 1]}]},
        {"source": [{"anything-but": {"prefix": ""}}]},
        {"source": [{"anything-but": {"prefix": {"equals-ignore-case": "a"}}}]},
        {"source": [{"numeric": 10}]},
        {"source": [{"numeric": [">", 0, ">", 0]}]},
        {"source": [{"numeric": [">", 0, "<"]}]},
        {"source": [{"numeric": ["<", 10, ">", 0]}]},
        {"source": [{"cidr": "bad-filter"}]},
        {"source": [{"exists": "yes"}]},
        {"source": [{"prefix": "a", "suffix": "b"}]},
        {"$or": [{"source": ["a"]}]},
    ],
)
def test_malformed_patterns_are_refused_as_putrule_refuses_them(pattern):
    with pytest.raises(InvalidEventPattern):
        compile_pattern(pattern)


def test_a_pattern_given_as_json_text_is_accepted():
    assert compile_pattern('{"source": ["aws.ec2"]}').matches(EVENT)
    with pytest.raises(InvalidEventPattern):
        compile_pattern("{not json")


def _template_rule_pattern() -> dict:
    try:
        template = Template.load()
    except TemplateError:
        pytest.skip("no synthesized template (make local-template)")
    rules = [res["Properties"] for _, res in template.of_type("AWS::Events::Rule")]
    gd = [r for r in rules if "aws.guardduty" in json.dumps(r.get("EventPattern"))]
    assert len(gd) == 1, rules
    return gd[0]["EventPattern"]


@pytest.mark.parametrize(
    "severity, resource_type, expected",
    [
        (8, "Instance", True),
        (4, "Instance", True),
        (4.0, "Instance", True),
        (3.9, "Instance", False),
        (2, "Instance", False),
        ("8", "Instance", False),
        (8, "AccessKey", False),
        (8, "S3Bucket", False),
    ],
)
def test_the_deployed_guardduty_rule_selects_instance_findings_at_or_above_the_threshold(
    severity, resource_type, expected
):
    pattern = _template_rule_pattern()
    event = {
        "source": "aws.guardduty",
        "detail-type": "GuardDuty Finding",
        "detail": {
            "severity": severity,
            "type": "Backdoor:EC2/C&CActivity.B!DNS",
            "resource": {"resourceType": resource_type, "instanceDetails": {"instanceId": "i-0123456789abcdef0"}},
        },
    }
    assert compile_pattern(pattern).matches(event) is expected


# ------------------------------------------------------------------------------------ JSON paths


def test_json_paths_select_as_eventbridge_does():
    assert json_path(EVENT, "$.detail.state") == (True, "RUNNING")
    assert json_path(EVENT, "$.detail-type") == (True, EVENT["detail-type"])
    assert json_path(EVENT, "$.resources[1]") == (True, EVENT["resources"][1])
    assert json_path(EVENT, "$.detail.findings[*].Id") == (True, ["i-1", "AKIA1"])
    assert json_path(EVENT, "$") == (True, EVENT)
    assert json_path(EVENT, "$.detail.nope") == (False, None)
    assert json_path(EVENT, "$.resources[7]") == (False, None)
    with pytest.raises(ValueError):
        json_path(EVENT, "detail.state")


# ------------------------------------------------------------------------------------ input transformer

PATHS = {
    "instance": "$.detail.instance-id",
    "state": "$.detail.state",
    "count": "$.detail.c-count",
    "finding": "$.detail.findings[0].Severity",
    "resources": "$.resources",
    "missing": "$.detail.nope",
    "flag": "$.detail.flag",
}


def render(template: str, paths: dict | None = None) -> str:
    return render_input_transformer(
        {"InputPathsMap": paths or PATHS, "InputTemplate": template},
        EVENT,
        "arn:aws:events:us-east-1:123456789012:rule/r",
        "r",
    )


@pytest.mark.parametrize(
    "template, expected",
    [
        # The user guide's examples (eb-transform-target-input.html).
        ('"instance <instance> is in <state>"', '"instance i-0123456789 is in RUNNING"'),
        ('{"instance" : <instance>, "state": <state>}', '{"instance":"i-0123456789","state":"RUNNING"}'),
        (
            '{"instance" : <instance>, "state": [ 9, <state>, true ], "Transformed" : "Yes"}',
            '{"instance":"i-0123456789","state":[9,"RUNNING",true],"Transformed":"Yes"}',
        ),
        ('{"s": "instance \\"<instance>\\" is in <state>"}', '{"s":"instance \\"i-0123456789\\" is in RUNNING"}'),
        ('"<aws.events.rule-name> triggered"', '"r triggered"'),
        ('{"rule": <aws.events.rule-arn>}', '{"rule":"arn:aws:events:us-east-1:123456789012:rule/r"}'),
        # Values keep their JSON type outside quotes, and become bare text inside them.
        ('{"n": <count>, "f": <flag>, "o": <finding>}', '{"n":5,"f":false,"o":{"Label":"HIGH"}}'),
        (
            '"count <count> flag <flag> finding <finding> resources <resources>"',
            '"count 5 flag false finding {Label:HIGH} resources [arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111,'
            'arn:aws:ec2:us-east-1:123456789012:volume/vol-1]"',
        ),
        # A path that is not in the event gives an empty value.
        ('{"m": <missing>}', '{"m":""}'),
        ('"m=<missing>."', '"m=."'),
        # Text (the API reference's "<instance> is in state <status>"): values as text.
        ("instance <instance>", "instance i-0123456789"),
        ('{"event": <aws.events.event.json>}', json.dumps({"event": EVENT}, separators=(",", ":"))),
    ],
)
def test_the_input_transformer_fills_placeholders_as_documented(template, expected):
    assert render(template) == expected


def test_a_string_value_outside_quotes_is_quoted_and_escaped_and_inside_quotes_is_not():
    event = {**EVENT, "detail": {"type": 'Back"door\\:EC2/é'}}
    paths = {"t": "$.detail.type"}
    out = render_input_transformer({"InputPathsMap": paths, "InputTemplate": '{"reason":<t>}'}, event, "a", "r")
    assert json.loads(out) == {"reason": 'Back"door\\:EC2/é'}
    # Inside quotes the text is inserted unescaped ("EventBridge doesn't escape values"): here
    # that breaks the JSON of an object template, which is then not delivered.
    with pytest.raises(InputTransformerError):
        render_input_transformer({"InputPathsMap": paths, "InputTemplate": '{"reason":"<t>"}'}, event, "a", "r")


def test_the_deployed_guardduty_target_input_is_the_documented_request():
    try:
        template = Template.load()
    except TemplateError:
        pytest.skip("no synthesized template (make local-template)")
    (target,) = next(
        res["Properties"]["Targets"]
        for _, res in template.of_type("AWS::Events::Rule")
        if "aws.guardduty" in json.dumps(res["Properties"].get("EventPattern"))
    )
    event = {
        "source": "aws.guardduty",
        "detail-type": "GuardDuty Finding",
        "detail": {
            "id": "60baffd3f9042e38640f2300d5c5a631",
            "type": "CryptoCurrency:EC2/BitcoinTool.B!DNS",
            "severity": 8,
            "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": "i-0123456789abcdef0"}},
        },
    }
    out = render_input_transformer(target["InputTransformer"], event, "arn", "r")
    # The message the findings queue gets: the execution's input plus the finding id, which the
    # dispatcher makes the execution's name (steps/dispatch).
    assert json.loads(out) == {
        "finding_id": "60baffd3f9042e38640f2300d5c5a631",
        "instance_id": "i-0123456789abcdef0",
        "reason": "CryptoCurrency:EC2/BitcoinTool.B!DNS",
        "requested_by": "guardduty",
    }


@pytest.mark.parametrize(
    "transformer",
    [
        {"InputPathsMap": {"a": "$.a"}, "InputTemplate": '"<b>"'},  # not in the map
        {"InputPathsMap": {"a": "$.a"}, "InputTemplate": "{<a>: 1}"},  # placeholder as a key
        {"InputPathsMap": {"aws.x": "$.a"}, "InputTemplate": '"x"'},
        {"InputPathsMap": {"a": "detail"}, "InputTemplate": '"<a>"'},
        {"InputPathsMap": {}, "InputTemplate": ""},
    ],
)
def test_transformers_that_puttargets_refuses_are_refused(transformer):
    with pytest.raises(InputTransformerError):
        validate_input_transformer("Target0", transformer)


# ------------------------------------------------------------------------------------ policies


def test_a_role_policy_allows_only_what_it_names():
    doc = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "states:StartExecution",
                "Resource": "arn:aws:states:us-east-1:123456789012:stateMachine:cordon-*",
            }
        ]
    }
    sm = "arn:aws:states:us-east-1:123456789012:stateMachine:cordon-incident-response"
    assert policy_decision([doc], "states:StartExecution", sm) == "allow"
    assert policy_decision([doc], "States:startexecution", sm) == "allow"  # actions are case-insensitive
    assert policy_decision([doc], "states:StopExecution", sm) == "implicit-deny"
    assert policy_decision([doc], "states:StartExecution", sm.replace("cordon-", "other-")) == "implicit-deny"
    deny = {"Statement": [{"Effect": "Deny", "Action": "states:*", "Resource": "*"}]}
    assert policy_decision([doc, deny], "states:StartExecution", sm) == "deny"


def test_a_queue_policy_lets_only_the_named_rule_send_over_tls():
    queue = "arn:aws:sqs:us-east-1:123456789012:dlq"
    rule = "arn:aws:events:us-east-1:123456789012:rule/r"
    doc = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "sqs:*",
                "Resource": queue,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule}},
            },
        ]
    }
    ctx = {"aws:SourceArn": rule, "aws:SecureTransport": "true"}
    svc = "events.amazonaws.com"
    assert policy_decision([doc], "sqs:SendMessage", queue, ctx, service_principal=svc) == "allow"
    assert (
        policy_decision([doc], "sqs:SendMessage", queue, {**ctx, "aws:SourceArn": rule + "2"}, service_principal=svc)
        == "implicit-deny"
    )
    assert (
        policy_decision([doc], "sqs:SendMessage", queue, {**ctx, "aws:SecureTransport": "false"}, service_principal=svc)
        == "deny"
    )
    assert (
        policy_decision([doc], "sqs:SendMessage", queue, {"aws:SecureTransport": "true"}, service_principal=svc)
        == "implicit-deny"
    )
    assert (
        policy_decision([doc], "sqs:SendMessage", queue, ctx, service_principal="sns.amazonaws.com") == "implicit-deny"
    )


def test_putevents_entry_size_is_counted_as_documented():
    entry = {"Time": 1, "Source": "my.app", "DetailType": "Thing", "Detail": '{"k":"é"}', "Resources": ["arn:x"]}
    assert putevents_entry_size(entry) == 14 + 6 + 5 + len('{"k":"é"}'.encode()) + 5
