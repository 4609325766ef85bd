"""Shared fixtures: every test gets its own empty srat home, so none touches ~/.srat."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# One intra-op thread for torch here and in every process a test starts (they inherit it): the
# tests' models are far too small to split, and on a 2-core box a second OpenMP thread mostly
# spins against the other processes (tests/test_run_state.py + test_detached.py: 1m51s with
# torch's default of 2 threads, 1m26s with 1; the whole suite in one process: 8m15s of CPU,
# 7m11s). `make test`'s two workers with two threads each overloaded the box: three tests
# failed and the suite ran longer than in one process. Set before any test module imports
# torch; a value already set is kept, and the tests of the CPU-slot thread share unset it.
# test_eval.py and test_models.py also pin one thread in-process, whatever the environment
# says: AutoAttack and the architecture cases are the files a second thread slowed most.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` are skipped where torch sees no CUDA device: the one rule for every
    GPU-only test (torch is imported only when such a test was collected)."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if not torch.cuda.is_available():
        for item in marked:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture(autouse=True)
def srat_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SRAT_HOME -> a fresh empty directory (outside the test's own tmp_path, which tests may
    use as a data folder); SRAT_PRESETS and SRAT_DATA unset."""
    home = tmp_path_factory.mktemp("srat-home")
    monkeypatch.setenv("SRAT_HOME", str(home))
    monkeypatch.delenv("SRAT_PRESETS", raising=False)
    monkeypatch.delenv("SRAT_DATA", raising=False)
    return home


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread in this process for the test, whatever OMP_NUM_THREADS says: the
    same reduction order both ways where a test compares two computations of one result
    (a stacked model against its runs alone)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
