"""A local AWS for Cordon: moto 5.2.5 in-process, plus the pieces moto lacks.

moto answers EC2, IAM, S3, SNS, SQS, Auto Scaling, ELBv2 and Step Functions (with its real ASL
interpreter switched on). What moto lacks or gets wrong for Cordon is bridged here, in named shims
that answer in the real API's wire format, never in the step code:

- ``server``       moto's WSGI app on 127.0.0.1, request log and control endpoints (``/_cordon``)
- ``faults``       fault injection: answer chosen actions with correctly shaped AWS errors
- ``runtime_api``  Lambda invocations run the real Rust binaries through the Lambda Runtime API
- ``shims``        EC2 GetConsoleScreenshot, SSM DescribeInstanceInformation, S3 Object Lock checksums
- ``ssm_run_command``  SSM SendCommand / GetCommandInvocation / ListCommandInvocations, run for real
- ``model_fixes``  moto's EC2 model made to replace (not add to) an interface's security groups
- ``redrive``      Step Functions RedriveExecution and the executions' status-change events
- ``strict``       where moto is kinder than AWS: ELBv2 draining, shutdown behaviour, Spot
                   termination protection, DetachInstances lifecycle states
- ``deploy``       the Cordon stack: bucket, topic, roles, the 8 functions, the state machine
- ``iam_roles``    the template's roles, instance profiles and policies, created in moto
- ``principals``   one set of credentials per function and per role; who signed a request
- ``journal``      every request of the run with its caller, IAM actions and scenario (``requests.jsonl``)
- ``coverage``     action coverage: every call allowed by its caller's role in the template
                   (``iam_actions``: operation -> IAM actions; ``iam_policies``: IAM matching)
- ``policy_lint``  parliament over every policy of the template, with written acknowledgements
- ``seed``         a realistic compromised-instance environment
- ``apigateway``   the template's SecurityResponse REST API served on loopback (``vtl``: its
                   mapping-template language; ``envfile``: the ``export NAME=value`` env file)
- ``demo``         one execution, started through the API and narrated

Run it with ``python -m local_aws serve|up|down|demo`` from ``integration-tests/``.
"""

REGION = "us-east-1"
ACCESS_KEY = "test"
SECRET_KEY = "test"
