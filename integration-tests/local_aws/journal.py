"""Who called what: the principal and IAM actions of each request, and a journal of the whole run.

The request log that tests query (``server.RequestLog``) is bounded. The journal is not: every AWS
request the stack answers is appended as one JSON line to ``<state-dir>/requests.jsonl`` with

    seq, time, scenario, service, action, status, access_key, principal, role, iam_actions, fault, shim, auth

``principal`` is ``function:<name>``, ``role:<LogicalId>`` or ``state-machine:<name>`` for the
callers the stack gave credentials (``principals``), else None (the tests, the seeding, unsigned
requests); ``role`` is the logical id of the caller's role in the synthesized template;
``iam_actions`` are the actions the call needs (``iam_actions``); ``scenario`` is the test that was
running (``POST /_cordon/scenario``). The action-coverage check (``coverage``) reads this file after
the suite. ``auth`` is ``presigned`` for a SigV4 query-string request (a presigned URL: its
``X-Amz-Credential`` names the signer, whoever sends it, e.g. ``curl`` on a host with a URL a
function signed; ``presigned-refused`` with no principal when S3 would refuse it: expired, another
method or key, unknown key; see ``server``), ``sigv4`` for a signed header, None for an unsigned
request.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from .iam_actions import iam_actions
from .principals import REGISTRY, access_key_of
from .wire import AwsRequest

FILE_NAME = "requests.jsonl"
FIELDS = (
    "seq", "time", "scenario", "service", "action", "status", "access_key", "principal", "role",
    "iam_actions", "fault", "shim", "auth",
)


def attribute(req: AwsRequest) -> dict:
    """The request-log fields that say who made ``req`` and what IAM would authorize."""
    key = access_key_of(req.headers, req.query_string)
    principal = REGISTRY.identify(key)
    auth = "presigned" if "X-Amz-Signature=" in req.query_string else "sigv4" if req.headers.get("authorization") else None
    return {
        "auth": auth,
        "access_key": key,
        "principal": principal.label if principal else None,
        "role": principal.role if principal else None,
        "iam_actions": iam_actions(req.service, req.action, req.headers, req.query_string),
    }


class Journal:
    """Appends every recorded request to a JSON Lines file (nothing when ``path`` is None)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8", buffering=1) if path else None

    def append(self, entry: dict) -> None:
        if self._file is None:
            return
        line = json.dumps({k: entry.get(k) for k in FIELDS}, default=str)
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read(path: Path) -> list[dict]:
    """The journal's entries (a torn last line, from a stack killed mid-write, is skipped)."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries
