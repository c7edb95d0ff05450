"""`node --test` checks that api.js has a sentence for every error code the server can
answer (collected here from the server's source), rate limits included. Skipped when
Node.js is not installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SOURCE = HERE.parent.parent / "dialtone"
NODE = shutil.which("node")

# Where the server names an error code: typed errors, the status mapping, the edge's and
# the gateway's own refusals, and literal bodies.
PATTERNS = [
    re.compile(r'\bcode\s*=\s*"([a-z_]+)"'),
    re.compile(r'^\s*\d{3}: "([a-z_]+)",$', re.MULTILINE),
    re.compile(r'_send_error\(\s*\w+,\s*\d+,\s*"[^"]*",\s*"([a-z_]+)"'),
    re.compile(r'_http_error\(\s*\w+,\s*\d+,\s*"[^"]*",\s*"([a-z_]+)"'),
    re.compile(r'self\._error\(\s*conn,\s*"([a-z_]+)"'),
    re.compile(r'"code": "([a-z_]+)"'),
    re.compile(r'error_body\([^,()]+,\s*"([a-z_]+)"\)'),
]


def server_error_codes() -> list[str]:
    codes: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        for pattern in PATTERNS:
            codes.update(pattern.findall(text))
    return sorted(codes)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the api.js unit tests)")
def test_every_error_code_reads_as_a_sentence() -> None:
    assert NODE is not None
    codes = server_error_codes()
    # The collection itself works: a few codes every server answers.
    assert {"rate_limited", "channel_not_found", "invalid_input", "timeout"} <= set(codes)
    result = subprocess.run(
        [NODE, "--test", str(HERE / "api.test.mjs")],
        env={**os.environ, "DIALTONE_ERROR_CODES": json.dumps(codes)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    assert "# skipped 0" in result.stdout, result.stdout
