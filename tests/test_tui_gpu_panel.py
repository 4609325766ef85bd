"""The GPU panel: NVML rows with the run on each GPU, hidden where there is no NVIDIA GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_runs import make_fake_run
from rich.console import Console
from tui_harness import pinned_context, scenario, settle, wait_for

from srat_engine.fsutil import atomic_write_json
from srat_tui.tui.app import SratApp
from srat_tui.tui.widgets import gpu_panel
from srat_tui.tui.widgets.gpu_panel import GpuInfo, GpuPanel, cuda_device

GIB = 1024**3
TWO_GPUS = [
    GpuInfo(0, "NVIDIA H100 80GB HBM3", 97, 61 * GIB, 80 * GIB),
    GpuInfo(1, "NVIDIA H100 80GB HBM3", None, 1 * GIB, 80 * GIB),  # no utilisation (MIG)
]


def shown(panel: GpuPanel) -> str:
    console = Console(width=150, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(panel.render())
    return console.export_text()


@scenario
async def test_rows_show_use_memory_and_the_run_on_each_gpu(
    srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu_panel, "probe_gpus", lambda: TWO_GPUS)
    context = pinned_context(srat_home)
    run = make_fake_run(context.runs_root, "run-gpu", status="running", index=context.index)
    state = run.state()
    atomic_write_json(run.path / "state.json", {**state, "device": "cuda:0"})
    async with SratApp(context).run_test(size=(120, 40)) as pilot:
        panel = pilot.app.screen.query_one(GpuPanel)
        await wait_for(pilot, lambda: bool(panel.rows), "the first NVML poll")
        assert panel.display and not panel.has_class("-absent")
        text = shown(panel)
        lines = text.splitlines()
        gpu0 = next(line for line in lines if "GPU 0" in line)
        gpu1 = next(line for line in lines if "GPU 1" in line)
        assert "97%" in gpu0 and "61.0/80.0 GiB" in gpu0 and "run-gpu (SRAT-LDAM)" in gpu0
        assert "n/a" in gpu1 and "idle" in gpu1

        await pilot.press("g")  # hide it for more table rows, and back
        await wait_for(pilot, lambda: not panel.display, "the panel to hide")
        await pilot.press("g")
        await wait_for(pilot, lambda: panel.display, "the panel to show")


@scenario
async def test_no_nvidia_gpu_hides_the_panel_and_stops_polling(
    srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def probe() -> None:
        calls.append(1)

    monkeypatch.setattr(gpu_panel, "probe_gpus", probe)
    async with SratApp(pinned_context(srat_home)).run_test(size=(80, 24)) as pilot:
        panel = pilot.app.screen.query_one(GpuPanel)
        await wait_for(pilot, lambda: bool(calls), "the probe")
        await settle(pilot)
        assert panel._timer is None  # no more polls
        assert not panel.display and panel.has_class("-absent")
        probes = len(calls)
        await pilot.pause(0.1)
        assert len(calls) == probes


def test_cuda_names_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert cuda_device(3, 4) == "cuda:3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # CUDA renumbers the visible ones from 0
    assert (cuda_device(3, 4), cuda_device(2, 4), cuda_device(0, 4)) == ("cuda:1", "cuda:0", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5d1c")  # UUIDs: same number as NVML
    assert cuda_device(1, 4) == "cuda:1"
