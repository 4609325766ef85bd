"""A Ctrl-C in the first few hundred milliseconds of a command, while Python is still importing,
ends the command as a Ctrl-C does later: exit 130, nothing on stderr, nothing trained.

Each test arms a one-shot import hook in a fresh interpreter that raises KeyboardInterrupt
(what Python's SIGINT handler raises) as a named module starts to load: the moment a real
Ctrl-C lands in, made deterministic.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fresh_process import REPO, python_json

from srat_tui.entry import _interrupt_exits, caused_by_ctrl_c

# Raises KeyboardInterrupt the first time `sys.argv[1]` is looked up, as a Ctrl-C would.
ARM = """
import sys

class CtrlCAt:
    def __init__(self, module):
        self.module, self.fired = module, False

    def find_spec(self, name, path=None, target=None):
        if name == self.module and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlCAt(sys.argv[1]))
"""

IMPORT_TRAINER = (
    ARM
    + """
import json
try:
    import srat_engine.training.trainer
except KeyboardInterrupt:
    print(json.dumps("interrupted"))
else:
    print(json.dumps("imported"))
"""
)

# What the installed console script does: load its entry point, call it, exit with its result.
CONSOLE_SCRIPT = (
    ARM
    + """
from importlib.metadata import entry_points

script = entry_points(group="console_scripts")[sys.argv[2]]
sys.argv = [sys.argv[2], *sys.argv[3:]]
sys.exit(script.load()())
"""
)


def test_a_ctrl_c_while_torch_loads_numpy_stops_the_import() -> None:
    """torch's C init imports numpy itself and swallows any exception that import raises, so a
    Ctrl-C (or a stop signal's RunInterrupted) landing there was lost and the run trained on to
    "finished". The training package imports numpy first, in Python, where it propagates."""
    assert python_json(IMPORT_TRAINER, "numpy.linalg") == "interrupted"


@pytest.mark.parametrize(
    ("script", "module", "argv"),
    [
        ("srat", "typer", ["presets", "ls"]),  # while the CLI's app module loads
        ("srat", "pydantic", ["presets", "ls"]),  # once the command runs, loading the schema
        ("srat-tui", "textual", []),
    ],
    ids=["srat-importing-typer", "srat-running-presets-ls", "srat-tui-importing-textual"],
)
def test_a_ctrl_c_while_a_command_loads_exits_130_quietly(
    script: str, module: str, argv: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, module, script, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (130, "")
    assert proc.stdout == ""


class _CtrlCOnSetName:
    """A class attribute whose `__set_name__` is where the Ctrl-C lands, as in torch's
    dataclasses (Python 3.11 reraises it as a RuntimeError from the KeyboardInterrupt)."""

    def __set_name__(self, owner: type, name: str) -> None:
        raise KeyboardInterrupt


def _ctrl_c_in_a_class_body() -> BaseException:
    try:

        class _Defined:
            field = _CtrlCOnSetName()

    except BaseException as err:  # KeyboardInterrupt itself on Python >= 3.12
        return err
    raise AssertionError("__set_name__ did not run")


def test_an_error_a_ctrl_c_caused_reads_as_a_ctrl_c() -> None:
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError("cleanup failed")  # noqa: B904 - the Ctrl-C is its context, not cause
    except OSError as during_cleanup:
        assert caused_by_ctrl_c(during_cleanup)
    assert caused_by_ctrl_c(_ctrl_c_in_a_class_body())
    assert caused_by_ctrl_c(KeyboardInterrupt())
    assert not caused_by_ctrl_c(RuntimeError("Error calling __set_name__"))
    assert not caused_by_ctrl_c(ValueError("bad").with_traceback(None))


def test_the_guard_exits_130_on_a_ctrl_c_and_lets_other_errors_through() -> None:
    with pytest.raises(SystemExit) as stopped, _interrupt_exits():
        raise RuntimeError("Error calling __set_name__") from KeyboardInterrupt()
    assert stopped.value.code == 130
    with pytest.raises(ValueError, match="not a Ctrl-C"), _interrupt_exits():
        raise ValueError("not a Ctrl-C")
