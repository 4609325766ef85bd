"""The Rich tables of `srat runs compare` (and the TUI's compare screen)."""

from __future__ import annotations

import os
import re
from typing import Any

from rich.console import Console

from srat_engine.reporting.report import group_seeds, paper_table
from srat_tui.render.compare import (
    CompareRun,
    column_share,
    compare_renderables,
    part_title,
    run_header,
    seed_tables,
)


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


FINAL = {
    "event": "final",
    "std_overall": 61.5,
    "std_under": 40.25,
    "rob_overall": 30.0,
    "rob_under": 12.0,
    "std_class": [90.0, 80.0, 14.5],
    "rob_class": [50.0, 40.0, 3.25],
}
# Ids as `srat run` makes them (`rundir.new_run_id`): 18 characters, two hyphens.
IDS = [f"261203-0905{i:02d}-ab{i:02d}" for i in range(6)]


def _render_at(width: int, renderables: list[Any]) -> list[str]:
    console = Console(record=True, width=width, file=open(os.devnull, "w"))  # noqa: SIM115
    for item in renderables:
        console.print(item)
    return [line.rstrip() for line in console.export_text().splitlines()]


def _render(renderables: list[Any]) -> str:
    return "\n".join(_render_at(160, renderables))


def test_compare_renderables() -> None:
    final = FINAL
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


def _runs(count: int) -> list[CompareRun]:
    return [CompareRun(IDS[i], _doc(i, 1.0 + i, [2]), FINAL) for i in range(count)]


def test_run_header_breaks_an_id_at_its_hyphens_only_when_given_a_width() -> None:
    assert run_header("261203-090512-ab12", None, "std").plain == "261203-090512-ab12 std"
    assert run_header("261203-090512-ab12", 14, "std").plain == "261203-090512-\nab12\nstd"
    assert run_header("261203-090512-ab12", 7).plain == "261203-\n090512-\nab12"
    # an id with no hyphen is broken where it must be, never shorter than a percentage
    assert run_header("abcdefghij", 2).plain == "abcdef\nghij"


def test_column_share_and_part_title() -> None:
    assert column_share(78, 5, 4) == (78 - 5 - 2 * 4) // 4 == 16
    assert column_share(40, 10, 10) == 6  # never under "100.00"
    assert part_title("T", None, 6) == part_title("T", slice(0, 6), 6) == "T"
    assert part_title("T", slice(0, 3), 6) == "T · runs 1-3 of 6"
    assert part_title("T", slice(5, 6), 6) == "T · run 6 of 6"


def test_a_wide_terminal_keeps_the_boxed_tables() -> None:
    lines = _render_at(200, compare_renderables(_runs(3)))
    assert sum("┏" in line for line in lines) == 3  # config, accuracy, per class
    accuracy = lines.index(next(line for line in lines if line.startswith("Accuracy (%)")))
    assert lines[accuracy].strip() == "Accuracy (%)"  # data, seed, from: columns of their own
    assert any("cifar10 step K=100" in line and "final" in line for line in lines)


def test_at_80_columns_every_run_id_is_whole_and_nothing_is_cut() -> None:
    lines = _render_at(80, compare_renderables(_runs(3)))
    assert all(len(line) <= 80 for line in lines)
    assert not any("…" in line for line in lines)
    # the accuracy table: one line per run, its id whole; what all share said in the title
    rows = [line for line in lines if line.startswith("261203-")]
    assert [row.split()[0] for row in rows] == IDS[:3]
    assert all("SRAT-LDAM" in row and "61.50" in row and "12.00" in row for row in rows)
    assert "Accuracy (%) · cifar10 step K=100 · final" in lines
    # every id's pieces head the per-class columns: it was broken at hyphens, not cut
    header = "\n".join(lines[lines.index("Per class accuracy (%)") :][:5])
    for run_id in IDS[:3]:
        assert all(piece in header for piece in run_id.split("-"))


def test_runs_that_do_not_fit_side_by_side_are_split_over_tables() -> None:
    lines = _render_at(80, compare_renderables(_runs(6)))
    titles = [line.strip() for line in lines if line.startswith("Per class accuracy")]
    assert titles == [
        "Per class accuracy (%) · runs 1-4 of 6",
        "Per class accuracy (%) · runs 5-6 of 6",
    ]
    assert all(len(line) <= 80 for line in lines) and not any("…" in line for line in lines)
    # each class row has the six runs' numbers, four then two
    ship = [line.split() for line in lines if line.startswith("ship *")]
    assert ship == [["ship", "*", *["14.50", "3.25"] * 4], ["ship", "*", *["14.50", "3.25"] * 2]]


def test_narrower_still_the_columns_split_over_tables_and_no_number_is_broken() -> None:
    # 50 columns: not even the compact accuracy table fits all four numbers beside the ids;
    # 24: one run's two class columns just do
    for width in (50, 24):
        lines = _render_at(width, compare_renderables(_runs(2)))
        text = "\n".join(lines)
        assert all(len(line) <= width for line in lines), text
        # a folded "61.50" would leave "61.5" with its last digit on the next line
        assert not re.search(r"\d+\.\d(?![\d…])", text), text
    lines = _render_at(50, compare_renderables(_runs(2)))
    accuracy = [line for line in lines if line.startswith(IDS[0])]
    assert [line.split()[-1] for line in accuracy] == ["61.50", "40.25", "30.00", "12.00"]


def _seed_blocks() -> list[Any]:
    """Two methods at K=10, 50 and 100, three seeds each: std overall = base + seed."""
    records = [
        {
            "id": f"{method}-{ratio:g}-{seed}",
            "status": "finished",
            "final": True,
            "method": method,
            "dataset": "cifar10",
            "imbalance": "exp",
            "ratio": ratio,
            "seed": seed,
            "config_key": f"{method}-{ratio:g}",
            "std_overall": base + seed,
            "std_under": base - 10 + seed,
            "rob_overall": base - 30 + seed,
            "rob_under": base - 40 + seed,
        }
        for method, base in (("SRAT-LDAM", 60.0), ("CB-Reweight", 55.0))
        for ratio in (10.0, 50.0, 100.0)
        for seed in range(3)
    ]
    return paper_table(group_seeds(records))


def test_seed_tables_split_their_ratios_at_80_columns_keeping_each_mean_and_std_whole() -> None:
    wide = _render_at(240, seed_tables(_seed_blocks()))
    assert sum("┏" in line for line in wide) == 1  # one boxed table, all three ratios
    header = " ".join(wide[1:6])
    assert all(f"K={ratio} " in header for ratio in (10, 50, 100))

    lines = _render_at(80, seed_tables(_seed_blocks()))
    assert all(len(line) <= 80 for line in lines)
    titles = [line for line in lines if line.startswith("CIFAR-10")]
    assert len(titles) == 3  # a table per ratio
    srat_rows = [line.split("   ") for line in lines if line.startswith("SRAT-LDAM")]
    # mean ± std of seeds 0-2: 61.00 ± 1.00 (population std would say 0.82), one line each
    assert len(srat_rows) == 3
    for row in srat_rows:
        cells = [cell.strip() for cell in row if cell.strip()]
        assert cells[1:] == ["3", "61.00 ± 1.00", "51.00 ± 1.00", "31.00 ± 1.00", "21.00 ± 1.00"]
