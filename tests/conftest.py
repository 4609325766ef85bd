"""Shared fixtures: every test gets its own empty srat home, so none touches ~/.srat."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def srat_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SRAT_HOME -> a fresh empty directory (outside the test's own tmp_path, which tests may
    use as a data folder); SRAT_PRESETS and SRAT_DATA unset."""
    home = tmp_path_factory.mktemp("srat-home")
    monkeypatch.setenv("SRAT_HOME", str(home))
    monkeypatch.delenv("SRAT_PRESETS", raising=False)
    monkeypatch.delenv("SRAT_DATA", raising=False)
    return home
