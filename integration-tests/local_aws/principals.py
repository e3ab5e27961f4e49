"""Who made each AWS call: credentials per function and per role, and the reverse lookup.

In Lambda a function calls AWS with temporary credentials of its execution role, handed to the
runtime as ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``
(https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime);
an EC2 instance calls AWS with temporary credentials of its instance profile's role
(https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_switch-role-ec2.html). Temporary
access key IDs start with ``ASIA``
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids).

The local stack gives every function, and every role that calls AWS in a shim's place (the
forensic role when the SSM shim uploads collection output as the instance would), credentials of
its own: ``ASIA`` + 16 characters derived from the principal's name, so that the request log can
say which function (and so which role of the synthesized template) made each call. moto accepts
them: an access key it does not know selects the default account
(``moto.iam.models.get_account_id_from``, moto 5.2.5), and moto's IAM enforcement is off.

The access key is read from the SigV4 ``Authorization`` header
(``Credential=<key>/<date>/<region>/<service>/aws4_request``) or, for a presigned URL, from the
``X-Amz-Credential`` query parameter
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html).

Presigned URLs (``verify_presigned``): moto 5.2.5 checks neither the signature nor the expiry of a
SigV4 query-string request, so a URL would work for any method, any key, forever. S3 refuses a
request whose ``X-Amz-Date`` + ``X-Amz-Expires`` has passed (403 ``AccessDenied`` "Request has
expired"), whose expiry is over a week (``AuthorizationQueryParametersError``), whose key is unknown
(403 ``InvalidAccessKeyId``), that carries an ``x-amz-*`` header it did not sign (403
``AccessDenied`` "There were headers present in the request which were not signed") or whose
signature is not the one computed for *this* request (403 ``SignatureDoesNotMatch``: another
method, another key, another host or query, a signed header missing or changed)
(https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html,
https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html). The signature is recomputed
here with SigV4's algorithm (canonical request, string to sign, HMAC-SHA256 key derivation,
https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html) from the secret of the
access key: the stack's own key (``test``), a key the stack minted (``credentials_for``: the secret
is derived from the key), or a key moto issued (IAM user access keys, STS sessions).

Known keys that are not a deployed principal:

- ``test``: the tests, the seeding and the deployment itself (out of scope for the coverage check);
- ``ak``: moto's Step Functions interpreter (``moto/stepfunctions/parser/asl/utils/boto_client.py``
  signs every service integration call with it), registered by ``deploy`` as the state machine's
  role, so that its ``lambda:Invoke`` calls are checked against the state machine role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from calendar import timegm
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, parse_qsl, quote, unquote

STATES_INTERPRETER_KEY = "ak"

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


@dataclass(frozen=True)
class Principal:
    """A caller: ``kind`` is ``function``, ``role`` or ``state-machine``; ``role`` is the logical id
    of its role in the synthesized template (None when the stack does not know it)."""

    kind: str
    name: str
    role: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    def to_dict(self) -> dict:
        return asdict(self)


def access_key_for(kind: str, name: str) -> str:
    """``ASIA`` + 16 base32 characters of SHA-256(``kind:name``): stable, 20 characters like AWS's."""
    digest = hashlib.sha256(f"{kind}:{name}".encode()).digest()
    return "ASIA" + base64.b32encode(digest).decode()[:16]


_MINTED: set[str] = set()  # access keys handed out by ``credentials_for``


def credentials_for(kind: str, name: str) -> dict[str, str]:
    """The environment variables of a principal's credentials (the secret is checked only for
    presigned URLs, the token never)."""
    key = access_key_for(kind, name)
    _MINTED.add(key)
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": f"local-secret-{key}",
        "AWS_SESSION_TOKEN": f"local-session-{key}",
    }


def secret_for(key: str) -> str | None:
    """The secret access key of ``key``, when the stack knows it."""
    from . import ACCESS_KEY, SECRET_KEY

    if key == ACCESS_KEY:
        return SECRET_KEY
    if key in _MINTED or REGISTRY.identify(key) is not None:
        return f"local-secret-{key}"
    try:  # keys moto issued: IAM users' access keys, STS sessions
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        for user in list(iam_backends[DEFAULT_ACCOUNT_ID]["global"].users.values()):
            for k in list(getattr(user, "access_keys", []) or []):
                if k.access_key_id == key:
                    return k.secret_access_key
        for role in list(getattr(sts_backends[DEFAULT_ACCOUNT_ID]["global"], "assumed_roles", []) or []):
            if getattr(role, "access_key_id", None) == key:
                return role.secret_access_key
    except Exception:
        pass
    return None


# S3's limit on X-Amz-Expires: "Minimum value of 1. Maximum value of 604800 (seven days)".
MAX_PRESIGNED_EXPIRES = 604800


@dataclass(frozen=True)
class PresignedRefusal:
    """Why S3 refuses a presigned request: HTTP status, error code, message, extra XML elements."""

    status: int
    code: str
    message: str
    extra: tuple[tuple[str, str], ...] = ()


def _sign(secret: str, date: str, region: str, service: str, string_to_sign: str) -> str:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _iso8601(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def verify_presigned(
    method: str, raw_path: str, query_string: str, headers: dict[str, str], now: float | None = None
) -> PresignedRefusal | None:
    """None when the SigV4 query-string request is valid now; else S3's refusal (see the module
    docstring). ``raw_path`` is the path as sent (percent-encoded), ``headers`` lower-case."""
    now = time.time() if now is None else now
    params = parse_qsl(query_string, keep_blank_values=True)
    q = dict(params)
    if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return PresignedRefusal(
            400, "AuthorizationQueryParametersError", 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'
        )
    try:
        key, date, region, service, terminator = unquote(q["X-Amz-Credential"]).split("/")
        amz_date = q["X-Amz-Date"]
        signed_at = timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        expires = int(q["X-Amz-Expires"])
        signed_headers = q["X-Amz-SignedHeaders"]
        signature = q["X-Amz-Signature"]
    except (KeyError, ValueError):
        return PresignedRefusal(
            400,
            "AuthorizationQueryParametersError",
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        )
    if not 1 <= expires <= MAX_PRESIGNED_EXPIRES:
        return PresignedRefusal(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        )
    if now > signed_at + expires:
        return PresignedRefusal(
            403,
            "AccessDenied",
            "Request has expired",
            (
                ("X-Amz-Expires", str(expires)),
                ("Expires", _iso8601(signed_at + expires)),
                ("ServerTime", _iso8601(now)),
            ),
        )
    if signed_at > now + 900:  # SigV4 allows 15 minutes of clock skew
        return PresignedRefusal(403, "AccessDenied", "Request is not valid yet")
    secret = secret_for(key)
    if secret is None:
        return PresignedRefusal(
            403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
        )
    names = signed_headers.split(";")
    unsigned = sorted(h for h in headers if h.startswith("x-amz-") and h not in names)
    if unsigned:
        # S3 requires every x-amz-* header of a query-authenticated request to be signed.
        return PresignedRefusal(
            403,
            "AccessDenied",
            "There were headers present in the request which were not signed",
            (("HeadersNotSigned", ", ".join(unsigned)),),
        )
    canonical_headers = "".join(f"{h}:{' '.join(headers.get(h, '').strip().split())}\n" for h in names)
    canonical_query = "&".join(
        f"{k}={v}"
        for k, v in sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params if k != "X-Amz-Signature")
    )
    payload = q.get("X-Amz-Content-Sha256") or headers.get("x-amz-content-sha256") or "UNSIGNED-PAYLOAD"
    canonical_request = "\n".join(
        [method, raw_path or "/", canonical_query, canonical_headers, signed_headers, payload]
    )
    scope = f"{date}/{region}/{service}/{terminator}"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    if not hmac.compare_digest(_sign(secret, date, region, service, string_to_sign), signature):
        return PresignedRefusal(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )
    return None


def access_key_of(headers: dict[str, str], query_string: str) -> str | None:
    """The access key ID a request is signed with, or None for an unsigned request."""
    m = _CREDENTIAL.search(headers.get("authorization", ""))
    if m:
        return m.group(1)
    credential = parse_qs(query_string).get("X-Amz-Credential", [""])[0]
    if credential:
        return unquote(credential).split("/", 1)[0]
    return None


class Registry:
    """Access key -> principal, filled by ``deploy`` (roles from the template) and by the Lambda
    runtime (each function it starts)."""

    def __init__(self) -> None:
        self._by_key: dict[str, Principal] = {}
        self._role_by_arn: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, key: str, principal: Principal) -> None:
        with self._lock:
            known = self._by_key.get(key)
            # A function first seen by the runtime (role unknown) gains its role once deploy says it.
            if known is None or known.role is None or principal.role is not None:
                self._by_key[key] = principal

    def register_function(self, name: str, role: str | None = None) -> dict[str, str]:
        """Registers function ``name`` (its role's logical id if known); returns its credentials."""
        creds = credentials_for("function", name)
        self.register(creds["AWS_ACCESS_KEY_ID"], Principal("function", name, role))
        return creds

    def register_role(self, role: str, arn: str | None = None) -> dict[str, str]:
        """Registers the template role ``role`` (logical id, physical ``arn``) as a caller; returns
        its credentials."""
        creds = credentials_for("role", role)
        self.register(creds["AWS_ACCESS_KEY_ID"], Principal("role", role, role))
        if arn:
            with self._lock:
                self._role_by_arn[arn] = role
        return creds

    def credentials_of_role_arn(self, arn: str) -> dict[str, str]:
        """Credentials of the role with this ARN: a registered template role's own, else credentials
        that identify no principal (a role the template does not define, such as a seeded one)."""
        with self._lock:
            role = self._role_by_arn.get(arn)
        return credentials_for("role", role) if role else credentials_for("role-arn", arn)

    def identify(self, key: str | None) -> Principal | None:
        if not key:
            return None
        with self._lock:
            return self._by_key.get(key)

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {k: p.to_dict() for k, p in self._by_key.items()}


# One registry per process: the server, the runtime and the shims of one local stack share it.
REGISTRY = Registry()
