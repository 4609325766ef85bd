"""From a preset or config file to a created run directory (config flows one way)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from srat_engine.config.presets import load_preset, load_raw
from srat_engine.config.resolve import Resolved, resolve
from srat_engine.config.schema import RunConfig, set_override, validate_config
from srat_engine.config.workload import Workload, run_workload
from srat_engine.data.catalog import missing_dataset
from srat_engine.errors import SratError
from srat_engine.runs.provenance import provenance
from srat_engine.runs.rundir import RunDir, now_iso


@dataclass(frozen=True)
class PreparedRun:
    config: RunConfig
    resolved: Resolved
    source: str  # the preset name or config file it came from

    @property
    def missing_data(self) -> str | None:
        """Why its dataset would not load where the run will look (`data.sources`), or None:
        a run launched so fails at once, so a launch refuses it and a dry run says so."""
        data = self.config.data
        return missing_dataset(data.dataset, Path(self.resolved.data_root), data.download)

    def check_data(self) -> None:
        if (problem := self.missing_data) is not None:
            raise SratError(problem)

    @property
    def workload(self) -> Workload | None:
        """The run's model work in forward-pass equivalents (`config.workload.run_workload`)."""
        return run_workload(self.config, self.resolved)

    def document(self) -> dict[str, Any]:
        """What config.json records: the validated config and everything derived from it."""
        return {
            "config": self.config.model_dump(mode="json"),
            "resolved": self.resolved.as_dict(),
            # forward passes (`config.workload`): what a queued run's expected end is read from
            "workload": asdict(work) if (work := self.workload) is not None else None,
            "source": self.source,
            "created": now_iso(),
            "provenance": provenance(),
        }


def prepare(
    *,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: tuple[str, ...] = (),
    preset_dirs: Sequence[Path],
    data_dir: Path,
) -> PreparedRun:
    """Load, override, validate and resolve; touches no data, no GPU, no run directory.

    `preset_dirs` is the preset search path (for `preset` and any `extends`) and `data_dir`
    the datasets' folder when the config names no data.root: a home's `Home.preset_dirs` and
    `Home.data_dir`.
    """
    config, source = load_config(
        preset=preset, config_file=config_file, overrides=overrides, preset_dirs=preset_dirs
    )
    return PreparedRun(config, resolve(config, data_dir), source)


def load_config(
    *,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: tuple[str, ...] = (),
    preset_dirs: Sequence[Path],
) -> tuple[RunConfig, str]:
    """`prepare`'s first half: the validated config and where it came from, not resolved (no
    dataset looked at, no check of how its parts fit together)."""
    if (preset is None) == (config_file is None):
        raise SratError("give exactly one of --preset NAME or --config FILE")
    if preset is not None:
        raw, source = load_preset(preset, preset_dirs), preset
    else:
        assert config_file is not None
        raw, source = load_raw(config_file, preset_dirs), str(config_file)
    for assignment in overrides:
        set_override(raw, assignment)
    return validate_config(raw), source


def create_run(prepared: PreparedRun, root: Path) -> RunDir:
    """A new run directory under `root` (a home's runs folder) holding the prepared config;
    SratError, creating nothing, when its dataset is missing and may not download."""
    prepared.check_data()
    return RunDir.create(root, prepared.document())
