"""AWS wire formats: which service and action a request is, and how each protocol spells an error.

Both the fault injector and the shims must answer exactly as the real service would, or the SDK on
the other side (the Rust SDK in the steps, boto3 in the tests, boto3 inside moto's Step Functions
interpreter) would not parse the answer the way it parses AWS's. AWS has five wire protocols:

- ``ec2``        EC2 query: form-encoded request, ``<Response><Errors><Error>`` error body
                 https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
- ``query``      IAM, SNS, STS, Auto Scaling, ELBv2 (and SQS's legacy form): ``<ErrorResponse>``
                 https://docs.aws.amazon.com/IAM/latest/APIReference/CommonErrors.html
- ``json``       SSM, Step Functions, SQS (JSON 1.0/1.1, ``X-Amz-Target``): ``{"__type", "message"}``
                 https://smithy.io/2.0/aws/protocols/aws-json-1_1-protocol.html#operation-error-serialization
- ``rest-json``  Lambda: error code in the ``x-amzn-ErrorType`` header
                 https://smithy.io/2.0/aws/protocols/aws-restjson1-protocol.html#operation-error-serialization
- ``rest-xml``   S3: ``<Error><Code>`` body (none for HEAD)
                 https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html

The service is read from the SigV4 credential scope (``Credential=AKID/date/region/SERVICE/...``),
which every SDK sends, so it does not depend on host names (everything is 127.0.0.1 here).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from werkzeug.wsgi import get_input_stream

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")

# SigV4 signing names of the services, with a few names people use for them in fault rules.
SERVICE_ALIASES = {
    "sfn": "states",
    "stepfunctions": "states",
    "elbv2": "elasticloadbalancing",
    "elb": "elasticloadbalancing",
    "awslambda": "lambda",
    "asg": "autoscaling",
}

QUERY_NAMESPACES = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sns": "http://sns.amazonaws.com/doc/2010-03-31/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "autoscaling": "http://autoscaling.amazonaws.com/doc/2011-01-01/",
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
    "sqs": "http://queue.amazonaws.com/doc/2012-11-05/",
}


def canonical_service(name: str) -> str:
    name = (name or "").lower()
    return SERVICE_ALIASES.get(name, name)


@dataclass
class AwsRequest:
    """One request as the middleware sees it, body already read (and put back for moto)."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    service: str = "unknown"
    region: str = "us-east-1"
    action: str = ""
    protocol: str = "query"
    params: dict[str, Any] = field(default_factory=dict)
    # The WSGI environ, for shims that fix a request up before moto sees it.
    environ: dict = field(default_factory=dict, repr=False)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string, keep_blank_values=True)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def mentions(self, needle: str) -> bool:
        """Whether the request names ``needle`` anywhere: body, path or query string."""
        return needle in self.text() or needle in unquote(self.path) or needle in unquote(self.query_string)


def read_request(environ: dict) -> AwsRequest:
    """Reads the body (de-chunked by werkzeug) and puts it back so moto can read it again."""
    import io

    # Without Content-Length and not chunked there is no body (safe_fallback), never a blocking read.
    body = get_input_stream(environ, safe_fallback=True).read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ.pop("wsgi.input_terminated", None)

    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    req = AwsRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=environ.get("PATH_INFO", "/"),
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        body=body,
        environ=environ,
    )
    _classify(req)
    return req


def _classify(req: AwsRequest) -> None:
    auth = req.headers.get("authorization", "") or unquote(req.query.get("X-Amz-Credential", [""])[0])
    m = _SCOPE.search(auth) or _SCOPE.search("Credential=" + unquote(req.query.get("X-Amz-Credential", [""])[0]))
    if m:
        req.region, req.service = m.group(1), m.group(2)
    target = req.headers.get("x-amz-target")
    if target:
        req.protocol = "json"
        req.action = target.rsplit(".", 1)[-1]
        try:
            req.params = json.loads(req.body or b"{}")
        except ValueError:
            req.params = {}
    elif req.service == "s3":
        req.protocol = "rest-xml"
        req.action = s3_operation(req)
    elif req.service == "lambda":
        req.protocol = "rest-json"
        req.action = lambda_operation(req)
    else:
        form = parse_qs(req.text(), keep_blank_values=True) if req.method == "POST" else {}
        if not form:
            form = req.query
        req.params = {k: v[0] for k, v in form.items()}
        req.action = req.params.get("Action", "")
        req.protocol = "ec2" if req.service == "ec2" else "query"
    if not req.action:
        req.action = f"{req.method} {req.path}"


_S3_BUCKET_SUBRESOURCES = {
    "versioning": "BucketVersioning",
    "policy": "BucketPolicy",
    "tagging": "BucketTagging",
    "encryption": "BucketEncryption",
    "acl": "BucketAcl",
    "lifecycle": "BucketLifecycleConfiguration",
    "notification": "BucketNotificationConfiguration",
    "cors": "BucketCors",
    "ownershipControls": "BucketOwnershipControls",
    "publicAccessBlock": "PublicAccessBlock",
}
_S3_OBJECT_SUBRESOURCES = {
    "tagging": "ObjectTagging",
    "retention": "ObjectRetention",
    "legal-hold": "ObjectLegalHold",
    "acl": "ObjectAcl",
}
_VERB = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Head"}


def s3_operation(req: AwsRequest) -> str:
    """The S3 operation name of a path-style request (the REST API has no action parameter)."""
    q = req.query
    parts = req.path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    m = req.method
    if not bucket:
        return "ListBuckets"
    if not key:
        if "object-lock" in q:
            return {"GET": "GetObjectLockConfiguration", "PUT": "PutObjectLockConfiguration"}.get(m, "")
        if m == "POST" and "delete" in q:
            return "DeleteObjects"
        if m == "GET":
            if "location" in q:
                return "GetBucketLocation"
            if "versions" in q:
                return "ListObjectVersions"
            if "uploads" in q:
                return "ListMultipartUploads"
        for sub, name in _S3_BUCKET_SUBRESOURCES.items():
            if sub in q and m in _VERB:
                return _VERB[m] + name
        if m == "GET":
            return "ListObjectsV2" if q.get("list-type") == ["2"] else "ListObjects"
        return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(m, "")
    if m == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        return ""
    if "uploadId" in q:
        return {"PUT": "UploadPart", "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(m, "")
    for sub, name in _S3_OBJECT_SUBRESOURCES.items():
        if sub in q and m in _VERB:
            return _VERB[m] + name
    if "attributes" in q and m == "GET":
        return "GetObjectAttributes"
    if m == "PUT" and "x-amz-copy-source" in req.headers:
        return "CopyObject"
    return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(m, "")


def lambda_operation(req: AwsRequest) -> str:
    """The Lambda operation of the common REST paths (``/2015-03-31/functions/...``)."""
    segs = [unquote(s) for s in req.path.strip("/").split("/")]
    if len(segs) < 2 or segs[1] != "functions":
        return ""
    m = req.method
    if len(segs) == 2:
        return {"POST": "CreateFunction", "GET": "ListFunctions"}.get(m, "")
    if len(segs) == 3:
        return {"GET": "GetFunction", "DELETE": "DeleteFunction"}.get(m, "")
    sub = segs[3]
    if sub == "invocations" and m == "POST":
        return "Invoke"
    if sub == "configuration":
        return {"GET": "GetFunctionConfiguration", "PUT": "UpdateFunctionConfiguration"}.get(m, "")
    if sub == "code" and m == "PUT":
        return "UpdateFunctionCode"
    return ""


# ----------------------------------------------------------------------------------- responses

Response = tuple[int, list[tuple[str, str]], bytes]


def request_id() -> str:
    return str(uuid.uuid4())


def xml_response(body: str, status: int = 200) -> Response:
    data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
    return status, [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", request_id())], data


def json_response(obj: Any, req: AwsRequest | None = None, status: int = 200) -> Response:
    ctype = (req.headers.get("content-type") if req else None) or "application/x-amz-json-1.1"
    return status, [("Content-Type", ctype), ("x-amzn-RequestId", request_id())], json.dumps(obj).encode()


def epoch(t: float | None = None) -> float:
    """JSON-protocol timestamps are epoch seconds (https://smithy.io/2.0/aws/protocols/aws-json-1_1-protocol.html)."""
    return round(time.time() if t is None else t, 3)


def aws_error(req: AwsRequest, code: str, message: str, status: int = 400) -> Response:
    """``code``/``message`` shaped for the protocol of ``req``'s service."""
    rid = request_id()
    if req.protocol == "json":
        headers = [
            ("Content-Type", req.headers.get("content-type") or "application/x-amz-json-1.1"),
            ("x-amzn-RequestId", rid),
            ("x-amzn-ErrorType", code),
        ]
        if req.service == "sqs":
            # SQS speaks JSON with query-compatible error codes, read from this header.
            headers.append(("x-amzn-query-error", f"{code};{'Receiver' if status >= 500 else 'Sender'}"))
        return status, headers, json.dumps({"__type": code, "message": message}).encode()
    if req.protocol == "rest-json":
        headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", rid), ("x-amzn-ErrorType", code)]
        kind = "Service" if status >= 500 else "User"
        return status, headers, json.dumps({"Type": kind, "message": message}).encode()
    if req.protocol == "rest-xml":
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid), ("x-amz-id-2", rid)]
        if req.method == "HEAD":
            return status, headers, b""
        body = (
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{rid}</RequestId><HostId>{rid}</HostId></Error>"
        )
        return status, headers, ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
    if req.protocol == "ec2":
        body = (
            f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error></Errors><RequestID>{rid}</RequestID></Response>"
        )
        return xml_response(body, status)
    ns = QUERY_NAMESPACES.get(req.service, "")
    kind = "Receiver" if status >= 500 else "Sender"
    body = (
        f'<ErrorResponse xmlns="{ns}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    )
    return xml_response(body, status)
