"""Per-GPU utilisation, memory and the run on each GPU, polled through NVML every ~2 s.

On a machine without NVIDIA GPUs (no NVML library, or NVMLError at init) the panel hides
itself and stops polling, so CPU-only hosts and laptops see nothing rather than an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import get_current_worker

from srat_engine.hardware import nvml_session, visible_gpus
from srat_engine.runs.liveness import ACTIVE
from srat_engine.runs.rundir import RunDir, is_valid_run_id
from srat_tui.tui.messages import GpuStatsRead

if TYPE_CHECKING:
    from srat_tui.tui.context import AppContext

_GIB = 1024**3
_BAR_WIDTH = 10


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML reports it. utilization is None where the driver does not expose it
    (some MIG and vGPU setups); memory is in bytes."""

    index: int
    name: str
    utilization: int | None
    memory_used: int
    memory_total: int


@dataclass(frozen=True)
class GpuRow:
    gpu: GpuInfo
    runs: tuple[str, ...]  # "run-id (METHOD)" for each run training on it


def probe_gpus() -> list[GpuInfo] | None:
    """Every NVIDIA GPU's name, utilisation and memory; None where NVML is unavailable.

    Tests monkeypatch this module-level function; the panel looks it up at each poll.
    """
    try:
        import pynvml
    except ImportError:
        return None
    with nvml_session() as nvml:
        if nvml is None:
            return None
        try:
            return _read_gpus(nvml)
        except pynvml.NVMLError:
            return None


def _read_gpus(pynvml: ModuleType) -> list[GpuInfo]:
    """Each GPU of an open NVML session (`hardware.nvml_session`); a field NVML cannot give
    for one GPU (MIG: no utilisation) is left empty, not the whole panel."""
    gpus: list[GpuInfo] = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):  # older bindings return bytes
            name = name.decode(errors="replace")
        utilization: int | None
        try:
            utilization = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except pynvml.NVMLError:
            utilization = None
        try:
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            used, total = int(memory.used), int(memory.total)
        except pynvml.NVMLError:
            used = total = 0
        gpus.append(GpuInfo(index, str(name), utilization, used, total))
    return gpus


def cuda_device(nvml_index: int, count: int) -> str | None:
    """The `cuda:N` name a run launched from this environment gives the GPU NVML numbers
    `nvml_index` of `count`, or None when CUDA_VISIBLE_DEVICES hides it.

    NVML counts every GPU; CUDA only the visible ones, renumbered from 0
    (`hardware.visible_gpus`, the rule launches count by). Where only CUDA can tell (GPU
    UUIDs), the same number as NVML's (as with CUDA_DEVICE_ORDER=PCI_BUS_ID, nothing hidden).
    """
    visible = visible_gpus(count)
    if visible is None:
        return f"cuda:{nvml_index}"
    return f"cuda:{visible.index(nvml_index)}" if nvml_index in visible else None


def runs_by_device(records: Sequence[Mapping[str, Any]], runs_root: Path) -> dict[str, list[str]]:
    """device -> "id (method)" for every running run, read from its state.json.

    The index record alone is not enough: a worker records itself as `queued`, with no device,
    before training starts, and the index is next written when the run ends.
    """
    found: dict[str, list[str]] = {}
    for record in records:
        run_id = str(record.get("id", ""))
        if record.get("status") not in ACTIVE or not is_valid_run_id(run_id):
            continue
        state = RunDir(runs_root / run_id).state()
        device = state.get("device")
        if state.get("status") != "running" or not isinstance(device, str):
            continue
        method = record.get("method")
        found.setdefault(device, []).append(f"{run_id} ({method})" if method else run_id)
    return found


def gpu_rows(context: AppContext | None) -> tuple[GpuRow, ...] | None:
    """Every GPU with the runs of `context` on it; None where NVML finds no GPU."""
    gpus = probe_gpus()
    if not gpus:
        return None
    by_device: dict[str, list[str]] = {}
    if context is not None:
        with suppress(Exception):  # an unreadable index must not take the GPU view down
            by_device = runs_by_device(context.index.all(), context.runs_root)
    rows = []
    for gpu in gpus:
        device = cuda_device(gpu.index, len(gpus))
        rows.append(GpuRow(gpu, tuple(by_device.get(device, ())) if device else ()))
    return tuple(rows)


def _gib(value: int) -> str:
    return f"{value / _GIB:.1f}"


def _bar(percent: int | None) -> Text:
    if percent is None:
        return Text("n/a", style="dim")
    filled = round(max(0, min(100, percent)) * _BAR_WIDTH / 100)
    style = "red" if percent >= 90 else "yellow" if percent >= 50 else "green"
    return Text.assemble(
        ("█" * filled, style), ("░" * (_BAR_WIDTH - filled), "dim"), f" {percent:>3d}%"
    )


class GpuPanel(Widget):
    """One line per NVIDIA GPU: name, utilisation, memory used/total and the runs of `context`
    on it (none named without a context)."""

    DEFAULT_CSS = """
    GpuPanel {
        height: auto;
        border: round $primary 50%;
        border-title-color: $text-primary;
        padding: 0 1;
    }
    GpuPanel.-absent {
        display: none;
    }
    """

    rows: reactive[tuple[GpuRow, ...]] = reactive(tuple, layout=True)

    def __init__(
        self,
        context: AppContext | None = None,
        *,
        interval: float = 2.0,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.context = context
        self.interval = interval
        self._timer: Timer | None = None
        self.available: bool | None = None  # None until NVML answered the first poll

    def on_mount(self) -> None:
        self.border_title = "GPUs"
        self.add_class("-absent")  # shown once NVML has answered: CPU-only hosts never see it
        self.poll()
        self._timer = self.set_interval(self.interval, self.poll)

    def poll(self) -> None:
        self.run_worker(self._probe, thread=True, exclusive=True, group="gpu-probe")

    def _probe(self) -> None:
        """One NVML poll (worker thread), posted back as `GpuStatsRead`."""
        worker = get_current_worker()
        rows = gpu_rows(self.context)
        if not worker.is_cancelled:
            self.post_message(GpuStatsRead(rows))

    def on_gpu_stats_read(self, message: GpuStatsRead) -> None:
        self.available = message.rows is not None
        if message.rows is None:
            self.stop_polling()
            return
        self.rows = message.rows
        self.remove_class("-absent")

    def stop_polling(self) -> None:
        """No NVIDIA GPU here: hide for good (NVML does not appear while the app runs)."""
        self.add_class("-absent")
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def render(self) -> RenderableType:
        if not self.rows:
            return Text("probing GPUs…", style="dim")
        table = Table.grid(padding=(0, 2))
        table.add_column("gpu", no_wrap=True)
        table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=28)
        table.add_column("util", no_wrap=True)
        table.add_column("memory", justify="right", no_wrap=True)
        table.add_column("runs", overflow="fold")
        for row in self.rows:
            gpu = row.gpu
            memory = f"{_gib(gpu.memory_used)}/{_gib(gpu.memory_total)} GiB"
            runs = Text(", ".join(row.runs)) if row.runs else Text("idle", style="dim")
            label = Text(f"GPU {gpu.index}", style="bold")
            table.add_row(label, gpu.name, _bar(gpu.utilization), memory, runs)
        return table
