"""The Rich tables of `srat runs compare` (and the TUI's compare screen)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from srat_tui.render.compare import CompareRun, compare_renderables


def _doc(seed: int, sep_lambda: float, under: list[int]) -> dict[str, Any]:
    return {
        "config": {
            "name": "",
            "method": "SRAT-LDAM",
            "seed": seed,
            "data": {"dataset": "cifar10", "imbalance": "step", "ratio": 100.0},
            "loss": {"sep_lambda": sep_lambda, "sep_tau": 0.1},
        },
        "resolved": {
            "class_names": ["cat", "dog", "ship"],
            "class_counts": [500, 500, 5],
            "under_classes": under,
        },
        "source": "preset:demo",
        "created": "2025-01-01T00:00:00+00:00",
    }


def _render(renderables: list[Any]) -> str:
    console = Console(record=True, width=160)
    for item in renderables:
        console.print(item)
    return console.export_text()


def test_compare_renderables() -> None:
    final = {
        "event": "final",
        "std_overall": 61.5,
        "std_under": 40.25,
        "rob_overall": 30.0,
        "rob_under": 12.0,
        "std_class": [90.0, 80.0, 14.5],
        "rob_class": [50.0, 40.0, 3.25],
    }
    epoch = {
        "event": "epoch",
        "epoch": 3,
        "epochs": 20,
        "std_overall": 20.0,
        "std_under": 10.0,
        "rob_overall": None,
        "rob_under": None,
        "std_class": [30.0, 20.0, 10.0],
        "rob_class": None,
    }
    runs = [
        CompareRun("250101-aaaa", _doc(0, 1.0, [2]), final),
        CompareRun("250101-bbbb", _doc(1, 2.0, [2]), epoch),
    ]
    renderables = compare_renderables(runs)
    diff = _render(renderables[:1])
    assert "loss.sep_lambda" in diff and "seed" in diff
    assert "loss.sep_tau" not in diff  # unchanged keys left out
    assert "250101-aaaa" in diff and "250101-bbbb" in diff  # one column per run
    text = _render(renderables)
    assert "61.50" in text and "epoch 3/20" in text and "final" in text
    assert "ship *" in text and "cat *" not in text
    assert "14.50" in text and "3.25" in text

    everything = _render(compare_renderables(runs, only_changed=False))
    assert "loss.sep_tau" in everything


def test_compare_renderables_without_metrics_and_differing_under() -> None:
    runs = [
        CompareRun("a1", _doc(0, 1.0, [2])),
        CompareRun("b2", _doc(0, 1.0, [1, 2]), {"event": "final", "std_class": [1.0, 2.0, 3.0]}),
    ]
    renderables = compare_renderables(runs)
    text = _render(renderables)
    assert "no differences" in text
    assert "no metrics" in text
    # Under-represented sets differ, so the marks go on b2's values, not on the class names.
    assert "2.00 *" in text and "dog *" not in text
    assert len(compare_renderables([CompareRun("a1", _doc(0, 1.0, [2]))])) == 2


def test_compare_run_without_resolved_block() -> None:
    # An old or hand-made config.json: no class names, no under-represented classes.
    bare = {"config": {"seed": 3, "loss": {"sep_lambda": 0.5}}}
    metrics = {"event": "final", "std_class": [1.0, 2.0, 3.0]}
    runs = [CompareRun("a1", _doc(0, 1.0, [2]), metrics), CompareRun("c3", bare, metrics)]
    text = _render(compare_renderables(runs))
    assert "ship *" in text and "ship / 2" not in text
    assert "data.dataset" in text  # present in one config only: a difference
    assert '""' in _render(compare_renderables(runs, only_changed=False))  # name = ""
