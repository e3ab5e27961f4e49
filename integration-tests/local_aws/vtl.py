"""API Gateway's mapping-template language: Velocity with ``$input``, ``$util`` and ``$context``.

The engine is ``airspeed-ext`` (PyPI), the Velocity implementation LocalStack maintains for parity
with the Velocity dialect of AWS services. What API Gateway adds on top of Velocity is defined by
the "API Gateway mapping template and access logging variable reference"
(https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-mapping-template-reference.html)
and implemented here as that page defines it:

- ``$input.body`` (the raw payload), ``$input.json(x)`` (JSONPath result as JSON text),
  ``$input.path(x)`` (JSONPath result as an object), ``$input.params()`` (``path``,
  ``querystring``, ``header`` maps) and ``$input.params(x)`` (path, then query string, then header);
- ``$util.escapeJavaScript`` ("Escapes the characters in a string using JavaScript string rules
  ... will turn any regular single quotes (') into escaped ones (\\')", which is the contract of
  Apache Commons Lang's ``StringEscapeUtils.escapeJavaScript``, reproduced character for
  character in ``escape_javascript``), ``parseJson``, ``urlEncode``/``urlDecode``
  (``application/x-www-form-urlencoded``, as Java's URLEncoder), ``base64Encode``/``base64Decode``
  (UTF-8);
- ``$context``: a plain map the caller fills (request id, identity, stage, ...);
  ``#set($context.responseOverride.status = N)`` is read back by the caller after rendering.

Velocity runs on the JVM, so templates call ``java.lang.String`` methods on strings
(``$arn.lastIndexOf(':')``, ``$type.endsWith('...')``, ``.replaceAll(regex, replacement)``);
``JAVA_STRING_METHODS`` gives Python strings those methods with Java's semantics (``indexOf`` is
-1 when absent, ``replaceAll``'s replacement uses ``$n`` for groups and ``\\`` to quote).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import airspeed
from airspeed import operators
from jsonpath_ng import parse as jsonpath_parse


class TemplateRenderError(Exception):
    """The template could not be rendered (API Gateway answers 500 Internal server error)."""


# ----------------------------------------------------------------------------------- Java strings


def _java_replacement(repl: str):
    """Java's Matcher.replaceAll replacement syntax: ``$n`` is group n, ``\\x`` is a literal x."""

    def expand(m: re.Match) -> str:
        out, i = [], 0
        while i < len(repl):
            c = repl[i]
            if c == "\\" and i + 1 < len(repl):
                out.append(repl[i + 1])
                i += 2
            elif c == "$" and i + 1 < len(repl) and repl[i + 1].isdigit():
                j = i + 1
                while j < len(repl) and repl[j].isdigit():
                    j += 1
                out.append(m.group(int(repl[i + 1 : j])) or "")
                i = j
            else:
                out.append(c)
                i += 1
        return "".join(out)

    return expand


def _index_of(s: str, needle: str, start: int = 0) -> int:
    return s.find(needle, start)


def _last_index_of(s: str, needle: str, start: int | None = None) -> int:
    return s.rfind(needle) if start is None else s.rfind(needle, 0, start + len(needle))


def _substring(s: str, begin: int, end: int | None = None) -> str:
    end = len(s) if end is None else end
    if begin < 0 or end > len(s) or begin > end:
        raise IndexError(f"String index out of range: begin {begin}, end {end}, length {len(s)}")
    return s[begin:end]


# java.lang.String methods templates use (https://docs.oracle.com/javase/8/docs/api/java/lang/String.html).
JAVA_STRING_METHODS = {
    "length": lambda s: len(s),
    "isEmpty": lambda s: len(s) == 0,
    "equals": lambda s, o: s == o,
    "equalsIgnoreCase": lambda s, o: isinstance(o, str) and s.lower() == o.lower(),
    "contains": lambda s, o: str(o) in s,
    "startsWith": lambda s, p: s.startswith(p),
    "endsWith": lambda s, p: s.endswith(p),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "charAt": lambda s, i: s[i],
    "trim": lambda s: s.strip(" \t\n\r\x0b\x0c\x00"),
    "toLowerCase": lambda s: s.lower(),
    "toUpperCase": lambda s: s.upper(),
    "concat": lambda s, o: s + o,
    "matches": lambda s, regex: re.fullmatch(regex, s) is not None,
    "replaceAll": lambda s, regex, repl: re.sub(regex, _java_replacement(repl), s),
    "replaceFirst": lambda s, regex, repl: re.sub(regex, _java_replacement(repl), s, count=1),
    "toString": lambda s: s,
}


class JavaMap(dict):
    """A JSON object as Velocity sees it: renders as Java's ``Map.toString`` (``{a=1, b=x}``)."""

    def __str__(self) -> str:
        return "{" + ", ".join(f"{k}={_java_str(v)}" for k, v in self.items()) + "}"


class JavaList(list):
    """A JSON array as Velocity sees it: renders as Java's ``List.toString`` (``[1, x]``)."""

    def __str__(self) -> str:
        return "[" + ", ".join(_java_str(v) for v in self) + "]"


def _java_str(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _to_velocity(value: Any) -> Any:
    if isinstance(value, dict):
        return JavaMap((k, _to_velocity(v)) for k, v in value.items())
    if isinstance(value, list):
        return JavaList(_to_velocity(v) for v in value)
    return value


def _install_java_methods() -> None:
    # airspeed looks methods up in operators.__additional_methods__ by exact type, after the
    # object's own attributes; Java's String methods win over airspeed's Python-flavoured ones.
    operators.__additional_methods__.setdefault(str, {}).update(JAVA_STRING_METHODS)
    for cls, base in ((JavaMap, dict), (JavaList, list)):
        operators.__additional_methods__[cls] = operators.__additional_methods__[base]


_install_java_methods()


# ----------------------------------------------------------------------------------- $util


def escape_javascript(value: Any) -> str | None:
    """Apache Commons Lang 2 ``StringEscapeUtils.escapeJavaScript``, which API Gateway's
    ``$util.escapeJavaScript`` is ("Escapes the characters in a string using JavaScript string
    rules", single quote included): ``'`` ``"`` ``\\`` ``/`` get a backslash; ``\\b \\t \\n \\f \\r``
    their short escapes; every other control character and every character above 0x7E a
    ``\\uXXXX`` escape (upper-case hex) of its UTF-16 code unit(s)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else _java_str(value)
    out = []
    data = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(data), 2):
        ch = (data[i] << 8) | data[i + 1]
        if ch > 0x7F:
            out.append(f"\\u{ch:04X}")
        elif ch < 32:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(ch, f"\\u{ch:04X}"))
        else:
            c = chr(ch)
            out.append({"'": "\\'", '"': '\\"', "\\": "\\\\", "/": "\\/"}.get(c, c))
    return "".join(out)


class Util:
    """``$util``."""

    def escapeJavaScript(self, value: Any) -> str | None:  # noqa: N802 - API Gateway's name
        return escape_javascript(value)

    def parseJson(self, text: str) -> Any:  # noqa: N802
        return _to_velocity(json.loads(text))

    def urlEncode(self, text: str) -> str:  # noqa: N802
        # java.net.URLEncoder (UTF-8): letters, digits and ".-*_" stay; space is "+"; all else %XX.
        return quote_plus(text, safe="*").replace("~", "%7E")

    def urlDecode(self, text: str) -> str:  # noqa: N802
        return unquote_plus(text)

    def base64Encode(self, text: str) -> str:  # noqa: N802
        return base64.b64encode(str(text).encode("utf-8")).decode("ascii")

    def base64Decode(self, text: str) -> str:  # noqa: N802
        return base64.b64decode(text).decode("utf-8")


# ----------------------------------------------------------------------------------- $input


def json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Input:
    """``$input`` over a payload (method request body or integration response body)."""

    def __init__(self, body: str, params: dict[str, dict[str, str]] | None = None) -> None:
        self._body = body
        self._params = params or {"path": {}, "querystring": {}, "header": {}}
        self._parsed: Any = None
        self._parsed_ok: bool | None = None

    def _document(self) -> Any:
        if self._parsed_ok is None:
            try:
                self._parsed = json.loads(self._body) if self._body.strip() else {}
                self._parsed_ok = True
            except ValueError:
                self._parsed_ok = False
        if not self._parsed_ok:
            raise TemplateRenderError("the payload is not JSON, so JSONPath cannot be applied to it")
        return self._parsed

    def _select(self, path: str) -> Any:
        matches = [m.value for m in jsonpath_parse(path or "$").find(self._document())]
        if not matches:
            return None  # a missing leaf is null
        return matches[0] if len(matches) == 1 else matches

    @property
    def body(self) -> str:
        return self._body

    def json(self, path: str = "$") -> str:
        return json_dumps(self._select(path))

    def path(self, path: str) -> Any:
        return _to_velocity(self._select(path))

    def params(self, name: str | None = None) -> Any:
        if name is None:
            return JavaMap((k, JavaMap(v)) for k, v in self._params.items())
        for where in ("path", "querystring"):
            if name in self._params.get(where, {}):
                return self._params[where][name]
        for header, value in self._params.get("header", {}).items():
            if header.lower() == name.lower():
                return value
        return ""


# ----------------------------------------------------------------------------------- rendering


def render(template: str, input_: Input, context: dict) -> str:
    """The template's output. ``context`` is the ``$context`` map; assignments the template makes
    to it (``$context.responseOverride.status``) are visible to the caller afterwards."""
    try:
        return airspeed.Template(template).merge({"input": input_, "util": Util(), "context": context})
    except TemplateRenderError:
        raise
    except Exception as e:  # airspeed's syntax/execution errors and the Java methods' errors
        raise TemplateRenderError(f"{type(e).__name__}: {e}") from e
