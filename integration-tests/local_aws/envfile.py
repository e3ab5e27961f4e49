"""The local stack's environment file: ``export NAME=value`` lines, values quoted for the shell.

``make local-up`` prints it, so ``eval "$(make -s local-up)"`` must *export* the values: a plain
``NAME=value`` line only sets a shell variable, which the programs the shell starts (the AWS CLI,
an SDK) never see (POSIX: "export - set the export attribute for variables",
https://pubs.opengroup.org/onlinepubs/9799919799/utilities/V3_chap02.html#export).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_env(values: dict[str, str]) -> str:
    """One ``export NAME=<shlex-quoted value>`` line per value."""
    for name in values:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a shell variable name: {name!r}")
    return "".join(f"export {name}={shlex.quote(str(value))}\n" for name, value in values.items())


def parse_env(text: str) -> dict[str, str]:
    """The values of ``format_env``'s output (``export`` optional, ``#`` comments skipped)."""
    values = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            words = words[1:]
        for word in words:
            name, sep, value = word.partition("=")
            if sep and _NAME.fullmatch(name):
                values[name] = value
    return values


def read_env(state_dir: Path) -> dict[str, str]:
    """``<state_dir>/env`` parsed."""
    return parse_env((state_dir / "env").read_text())
