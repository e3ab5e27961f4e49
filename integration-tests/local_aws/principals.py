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

Known keys that are not a deployed principal:

- ``test``: the tests, the seeding and the deployment itself (out of scope for the coverage check);
- ``ak``: moto's Step Functions interpreter (``moto/stepfunctions/parser/asl/utils/boto_client.py``
  signs every service integration call with it), registered by ``deploy`` as the state machine's
  role, so that its ``lambda:Invoke`` calls are checked against the state machine role.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, unquote

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


def credentials_for(kind: str, name: str) -> dict[str, str]:
    """The environment variables of a principal's credentials (the secret and token are not checked)."""
    key = access_key_for(kind, name)
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": f"local-secret-{key}",
        "AWS_SESSION_TOKEN": f"local-session-{key}",
    }


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
