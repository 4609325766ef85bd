"""Run a Python snippet in a fresh interpreter (nothing this test process imported is loaded
there) and read back the one JSON value it prints last: how the tests see what a command or a
module really imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def python_json(script: str, *args: str, timeout: float = 120) -> Any:
    """The JSON value of the last line `script` prints (run with `args` as sys.argv[1:], in
    the repository); fails the test with the snippet's stderr when it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
