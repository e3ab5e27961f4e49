"""The README's "Using the local stack from another terminal", run as written.

The blocks are read from README.md (so this fails when the README drifts), and run in a fresh
``bash`` with an empty environment (only ``PATH``, a scratch ``HOME`` and a locale) after the
README's ``eval "$(make -s local-up)"``: here ``make -s local-up`` is the command it runs,
``python -m local_aws up`` (Makefile ``local-up``), against a stack of this test's own. The client is
the AWS CLI from the project's virtualenv (``awscli`` in requirements.txt), as a new user's would be.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
SECTION = "## Using the local stack from another terminal"
BLOCK = re.compile(r"<!-- readme-test: (?P<name>[\w-]+)[^>]*-->\n```sh\n(?P<body>.*?)\n```", re.S)


def section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else None]


def blocks() -> dict[str, str]:
    return {m["name"]: m["body"] for m in BLOCK.finditer(section())}


def test_the_readme_section_loads_the_environment_with_eval_of_make_local_up():
    first = re.search(r"```sh\n(.*?)\n```", section(), re.S).group(1)
    assert 'eval "$(make -s local-up)"' in first
    # make local-up runs `python -m local_aws up` with the build's binaries and .local as state.
    makefile = (HERE.parent / "Makefile").read_text()
    assert re.search(r"^local-up:.*\n\t@\$\(LOCAL_AWS\) up --bin-dir \$\(BIN_DIR\) --state-dir \$\(STATE_DIR\)$", makefile, re.M)
    assert set(blocks()) == {"aws-cli", "api"}


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    bin_dir = os.environ.get("CORDON_BIN_DIR")
    if not bin_dir:
        pytest.fail("CORDON_BIN_DIR must name the directory of the cordon-<step> binaries")
    state_dir = tmp_path_factory.mktemp("readme-stack")
    up = [sys.executable, "-m", "local_aws", "up", "--bin-dir", bin_dir, "--state-dir", str(state_dir), "--timeout", "120"]
    started = subprocess.run(up, cwd=HERE, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        pytest.fail(f"local AWS stack did not start:\n{started.stdout}\n{started.stderr}")
    try:
        yield up, state_dir
    finally:
        subprocess.run(
            [sys.executable, "-m", "local_aws", "down", "--state-dir", str(state_dir)],
            cwd=HERE, capture_output=True, text=True, timeout=60,
        )


def run_in_fresh_bash(own_stack, block: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``eval "$(<make -s local-up>)"`` then ``block``, in ``bash -e -o pipefail`` with an empty environment."""
    up, _ = own_stack
    script = f'eval "$({shlex.join(up)})"\n{block}\n'
    venv_bin = Path(sys.executable).parent
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),  # no ~/.aws of the machine's user
        "LANG": "C.UTF-8",
    }
    if os.environ.get("CORDON_TEMPLATE"):
        # What `make local-up` passes to the stack it starts; the stack is already up here.
        env["CORDON_TEMPLATE"] = os.environ["CORDON_TEMPLATE"]
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=600,
    )


def test_the_aws_cli_walk_through_starts_a_response_waits_for_it_and_lists_the_evidence(own_stack, tmp_path):
    assert shutil.which("aws", path=str(Path(sys.executable).parent)), "the AWS CLI (awscli) is not in the virtualenv"
    done = run_in_fresh_bash(own_stack, blocks()["aws-cli"], tmp_path)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    status = re.search(r"^(IR-\d{8}-\d{6}): (\w+)$", done.stdout, re.M)
    assert status, done.stdout
    incident, outcome = status.groups()
    assert outcome == "SUCCEEDED", done.stdout
    listed = re.findall(rf"\s({re.escape(incident)}/\S+)$", done.stdout, re.M)
    names = {key.rsplit("/", 1)[-1] for key in listed}
    assert {"metadata.json", "pre-incident-state.json", "console-screenshot.jpg", "console-output.txt", "manifest.json"} <= names, done.stdout


def test_the_api_walk_through_starts_and_shows_an_incident(own_stack, tmp_path):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    if subprocess.run(["curl", "--help", "all"], capture_output=True, text=True).stdout.find("--aws-sigv4") < 0:
        pytest.skip("this curl cannot sign with SigV4 (7.75 or later can)")
    done = run_in_fresh_bash(own_stack, blocks()["api"], tmp_path)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    decoder, answers, text = json.JSONDecoder(), [], done.stdout.strip()
    while text:
        obj, end = decoder.raw_decode(text)
        answers.append(obj)
        text = text[end:].strip()
    started, shown = answers
    assert started["incident_id"].startswith("API-") and started["execution_arn"].endswith(":" + started["incident_id"])
    assert shown["incident_id"] == started["incident_id"] and shown["execution_arn"] == started["execution_arn"]
    assert shown["status"] in ("RUNNING", "SUCCEEDED", "FAILED")
