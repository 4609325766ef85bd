"""Paper table look-ups, config diffs, seed grouping and the paper's layout (hand-computed)."""

from __future__ import annotations

from typing import Any

import pytest

from srat_engine.config.methods import PAPER_METHODS
from srat_engine.config.schema import RunConfig
from srat_engine.reporting.paper import paper_result, paper_results
from srat_engine.reporting.report import (
    Stat,
    config_diff,
    flatten,
    group_seeds,
    paper_table,
    pick_metrics,
    robust_coverage,
)
from srat_engine.runs.summary import config_key


def record(
    run_id: str,
    seed: int,
    values: tuple[float | None, float | None, float | None, float | None],
    *,
    method: str = "SRAT-LDAM",
    dataset: str = "cifar10",
    imbalance: str = "step",
    ratio: float = 100.0,
    epochs: int = 200,
    arch: str = "resnet18",
    key: str | None = None,
    final: bool = True,
) -> dict[str, Any]:
    """A summary record as `summarize_run` produces it (only the fields report.py reads)."""
    std_overall, std_under, rob_overall, rob_under = values
    return {
        "id": run_id,
        "status": "finished" if final else "running",
        "method": method,
        "dataset": dataset,
        "imbalance": imbalance,
        "ratio": ratio,
        "arch": arch,
        "seed": seed,
        "epochs": epochs,
        "epoch": epochs,
        "std_overall": std_overall,
        "std_under": std_under,
        "rob_overall": rob_overall,
        "rob_under": rob_under,
        "final": final,
        "tags": [],
        "notes": [],
        "config_key": key or f"{method}-{dataset}-{imbalance}-{ratio:g}-{epochs}-{arch}",
    }


# -- paper.py --------------------------------------------------------------------------------


def test_paper_result_cells_match_the_csv() -> None:
    # Read off srat_engine/reporting/paper_results.csv by hand.
    assert paper_result("cifar10", "step", 100, "SRAT-LDAM") == {
        "std_overall": 63.13,
        "std_under": 52.73,
        "rob_overall": 33.51,
        "rob_under": 18.89,
    }
    assert paper_result("cifar10", "step", 10, "CE") == {
        "std_overall": 63.26,
        "std_under": 40.62,
        "rob_overall": 36.96,
        "rob_under": 14.23,
    }
    assert paper_result("svhn", "exp", 100.0, "SRAT-LDAM") == {
        "std_overall": 80.71,
        "std_under": 70.49,
        "rob_overall": 40.33,
        "rob_under": 25.11,
    }
    # CB-Focal collapses at Step-100 in the paper: zeros are values, not missing cells.
    assert paper_result("cifar10", "step", 100, "CB-Focal") == {
        "std_overall": 15.44,
        "std_under": 0.0,
        "rob_overall": 14.46,
        "rob_under": 0.0,
    }


def test_paper_result_missing_cells_and_case() -> None:
    assert paper_result("cifar10", "step", 50, "CE") is None
    assert paper_result("cifar10", "step", 10, "GAIRAT") is None
    assert paper_result("digits", "exp", 100, "SRAT-LDAM") is None
    assert paper_result("CIFAR10", "Step", 100, "srat-ldam") == paper_result(
        "cifar10", "step", 100, "SRAT-LDAM"
    )


def test_paper_table_has_every_cell_and_is_not_mutable_through_results() -> None:
    assert len(paper_results()) == 88
    cell = paper_result("cifar10", "exp", 10, "LDAM")
    assert cell is not None
    cell["std_overall"] = -1.0
    assert paper_result("cifar10", "exp", 10, "LDAM")["std_overall"] != -1.0  # type: ignore[index]


# -- config_diff -----------------------------------------------------------------------------


def test_flatten_nested() -> None:
    assert flatten({"a": 1, "b": {"c": {"d": [1, 2]}, "e": {}}}) == {
        "a": 1,
        "b.c.d": [1, 2],
        "b.e": {},
    }


def test_config_diff_only_changed_and_all() -> None:
    one = {"method": "SRAT-LDAM", "seed": 0, "loss": {"sep_lambda": 1.0, "sep_tau": 0.1}}
    two = {"method": "SRAT-LDAM", "seed": 1, "loss": {"sep_lambda": 2.0, "sep_tau": 0.1}}
    assert config_diff([one, two], only_changed=True) == [
        ("loss.sep_lambda", [1.0, 2.0]),
        ("seed", [0, 1]),
    ]
    assert config_diff([one, two], only_changed=False) == [
        ("loss.sep_lambda", [1.0, 2.0]),
        ("loss.sep_tau", [0.1, 0.1]),
        ("method", ["SRAT-LDAM", "SRAT-LDAM"]),
        ("seed", [0, 1]),
    ]


def test_config_diff_missing_keys_are_none() -> None:
    one = {"data": {"dataset": "cifar10", "options": {"d": 2}}}
    two = {"data": {"dataset": "cifar10"}, "gair": {"lam": -1.0}}
    three = {"data": {"dataset": "cifar10"}}
    assert config_diff([one, two, three], only_changed=True) == [
        ("data.options.d", [2, None, None]),
        ("gair.lam", [None, -1.0, None]),
    ]
    rows = dict(config_diff([one, two, three], only_changed=False))
    assert rows["data.dataset"] == ["cifar10"] * 3


def test_config_diff_bool_versus_number_is_a_change() -> None:
    assert config_diff([{"x": True}, {"x": 1}], only_changed=True) == [("x", [True, 1])]
    assert config_diff([{"x": 1}, {"x": 1.0}], only_changed=True) == []


# -- group_seeds -----------------------------------------------------------------------------


def test_group_seeds_mean_and_sample_std() -> None:
    records = [
        record("r2", 2, (64.0, 50.0, 30.0, 20.0)),
        record("r0", 0, (60.0, 50.0, 34.0, 10.0)),
        record("r1", 1, (62.0, 50.0, 32.0, 15.0)),
    ]
    groups = group_seeds(records)
    assert len(groups) == 1 and groups.skipped == []
    group = groups[0]
    assert group.n == 3
    assert group.run_ids == ["r0", "r1", "r2"]  # by seed
    assert group.seeds == [0, 1, 2]
    assert (group.method, group.dataset, group.imbalance, group.ratio) == (
        "SRAT-LDAM",
        "cifar10",
        "step",
        100.0,
    )
    # 60, 62, 64: mean 62, deviations -2 0 2, sum of squares 8 / (3 - 1) = 4 -> std 2.
    assert group.stats["std_overall"] == Stat(62.0, 2.0, 3)
    assert group.stats["std_under"] == Stat(50.0, 0.0, 3)
    assert group.stats["rob_overall"] == Stat(32.0, 2.0, 3)
    # 10, 15, 20: mean 15, squares 25 + 0 + 25 = 50 / 2 = 25 -> std 5.
    assert group.mean("rob_under") == pytest.approx(15.0)
    assert group.std("rob_under") == pytest.approx(5.0)


def test_group_seeds_single_run_has_no_std() -> None:
    (group,) = group_seeds([record("a", 0, (60.0, 40.0, 30.0, 10.0))])
    assert group.stats["std_overall"] == Stat(60.0, None, 1)
    assert group.std("rob_under") is None


def test_group_seeds_skips_unfinished_runs() -> None:
    records = [
        record("done", 0, (60.0, 40.0, 30.0, 10.0)),
        record("running", 1, (10.0, 1.0, 5.0, 0.0), final=False),
        record("failed", 2, (None, None, None, None), final=False),
    ]
    groups = group_seeds(records)
    assert [g.run_ids for g in groups] == [["done"]]
    assert groups.skipped == ["running", "failed"]
    assert groups[0].mean("std_overall") == 60.0  # the running run's 10.0 did not leak in


def test_group_seeds_missing_robust_column() -> None:
    # Natural training with robust evaluation switched off: no rob numbers, the rest still count.
    (group,) = group_seeds(
        [
            record("n0", 0, (90.0, 80.0, None, None), method="Natural"),
            record("n1", 1, (92.0, 84.0, None, None), method="Natural"),
        ]
    )
    assert group.stats["std_overall"] == Stat(91.0, pytest.approx(2**0.5), 2)
    assert group.stats["rob_overall"] == Stat(None, None, 0)


def test_group_seeds_keeps_config_keys_apart() -> None:
    records = [
        record("short0", 0, (50.0, 30.0, 25.0, 10.0), epochs=20, key="k20"),
        record("short1", 1, (52.0, 32.0, 27.0, 12.0), epochs=20, key="k20"),
        record("long0", 0, (63.0, 52.0, 33.0, 18.0), epochs=200, key="k200"),
    ]
    groups = group_seeds(records)
    by_key = {g.config_key: g for g in groups}
    assert set(by_key) == {"k20", "k200"}
    assert by_key["k20"].mean("std_overall") == 51.0
    assert by_key["k200"].mean("std_overall") == 63.0
    assert by_key["k200"].n == 1


def test_group_seeds_counts_each_seed_once_its_newest_run() -> None:
    # seed 0 run twice (a rerun), seed 1 three times: the replicates would shrink the std
    records = [
        {**record("a0", 0, (60.0, 50.0, 30.0, 20.0)), "created": "2026-12-01T10:00:00+00:00"},
        {**record("b0", 0, (61.0, 50.0, 31.0, 20.0)), "created": "2026-12-02T10:00:00+00:00"},
        {**record("a1", 1, (64.0, 50.0, 34.0, 20.0)), "created": "2026-12-02T09:00:00+00:00"},
        {**record("b1", 1, (64.0, 50.0, 34.0, 20.0)), "created": "2026-12-01T09:00:00+00:00"},
        {**record("c1", 1, (65.0, 50.0, 35.0, 20.0)), "created": "2026-12-01T08:00:00+00:00"},
    ]
    groups = group_seeds(records)
    (group,) = groups
    assert group.run_ids == ["b0", "a1"] and group.seeds == [0, 1]
    # 61 and 64: mean 62.5, sample std sqrt(4.5) (all five: 62.8 and 2.17)
    assert group.stats["std_overall"] == Stat(62.5, pytest.approx(4.5**0.5), 2)
    assert groups.repeated == ["a0", "b1", "c1"] and groups.skipped == []
    # in another configuration the same seed is no repeat
    other = record("k0", 0, (70.0, 50.0, 40.0, 20.0), key="other")
    assert group_seeds([*records[:1], other]).repeated == []


def test_pick_metrics_prefers_final() -> None:
    events = [
        {"event": "epoch", "epoch": 1, "std_overall": 10.0},
        {"event": "resume", "from_epoch": 1},
        {"event": "epoch", "epoch": 2, "std_overall": 20.0},
    ]
    assert pick_metrics(events) == events[2]
    assert pick_metrics([*events, {"event": "final", "std_overall": 21.0}]) == {
        "event": "final",
        "std_overall": 21.0,
    }
    assert pick_metrics([]) is None
    # Trained further after finishing: the old final no longer describes the weights.
    stale = [*events, {"event": "final", "std_overall": 21.0}, {"event": "resume"}]
    assert pick_metrics([*stale, {"event": "epoch", "epoch": 3, "std_overall": 30.0}]) == {
        "event": "epoch",
        "epoch": 3,
        "std_overall": 30.0,
    }


# -- paper_table -----------------------------------------------------------------------------


def _grid_records() -> list[dict[str, Any]]:
    return [
        record("srat10", 0, (74.0, 76.0, 45.0, 46.0), ratio=10.0),
        record("srat100a", 0, (63.0, 52.0, 33.0, 18.0), ratio=100.0),
        record("srat100b", 1, (64.0, 54.0, 34.0, 20.0), ratio=100.0),
        record("gair100", 0, (50.0, 20.0, 30.0, 5.0), method="GAIRAT", ratio=100.0),
        record("nat100", 0, (60.0, 30.0, 0.0, 0.0), method="Natural", ratio=100.0),
        record("ce100", 0, (47.0, 9.0, 30.0, 1.5), method="CE", ratio=100.0),
        # Paper order differs from alphabetical order here: LDAM comes before CB-Reweight.
        record("cbr100", 0, (37.0, 19.0, 25.0, 10.0), method="CB-Reweight", ratio=100.0),
        record("ldam100", 0, (42.0, 1.0, 30.0, 0.1), method="LDAM", ratio=100.0),
        record("drcb10", 0, (73.0, 75.0, 45.0, 45.0), method="DRCB-LDAM", ratio=10.0),
        record("cbl10", 0, (70.0, 70.0, 40.0, 40.0), method="CB-LDAM", ratio=10.0),
        record("exp", 0, (70.0, 70.0, 40.0, 40.0), method="CE", imbalance="exp", ratio=100.0),
        record("svhn", 0, (80.0, 70.0, 40.0, 25.0), dataset="svhn", imbalance="step"),
    ]


def test_paper_table_layout() -> None:
    blocks = paper_table(group_seeds(_grid_records()), with_paper=False)
    assert [(b.dataset, b.imbalance) for b in blocks] == [
        ("cifar10", "step"),
        ("cifar10", "exp"),
        ("svhn", "step"),
    ]
    step = blocks[0]
    assert step.ratios == [10.0, 100.0]
    labels = [row.label for row in step.rows]
    # PAPER_METHODS order, then the rest alphabetically.
    assert labels == [
        "CE",
        "LDAM",
        "CB-Reweight",
        "DRCB-LDAM",
        "SRAT-LDAM",
        "CB-LDAM",
        "GAIRAT",
        "Natural",
    ]
    paper_part = [m for m in labels if m in PAPER_METHODS]
    assert paper_part == sorted(paper_part, key=PAPER_METHODS.index)
    srat = step.rows[4]
    assert sorted(srat.cells) == [10.0, 100.0]
    cell = srat.cells[100.0]
    assert cell.n == 2 and cell.run_ids == ["srat100a", "srat100b"]
    assert cell.values["std_overall"].mean == 63.5
    assert cell.values["std_overall"].std == pytest.approx(2**0.5 / 2)
    assert cell.paper is None  # not asked for
    assert 10.0 not in step.rows[0].cells  # CE ran only at K=100


def test_paper_table_attaches_paper_values() -> None:
    blocks = paper_table(group_seeds(_grid_records()), with_paper=True)
    step = blocks[0]
    rows = {row.label: row for row in step.rows}
    assert rows["SRAT-LDAM"].cells[100.0].paper == {
        "std_overall": 63.13,
        "std_under": 52.73,
        "rob_overall": 33.51,
        "rob_under": 18.89,
    }
    assert rows["SRAT-LDAM"].cells[10.0].paper == paper_result("cifar10", "step", 10, "SRAT-LDAM")
    assert rows["CE"].cells[100.0].paper == {
        "std_overall": 47.29,
        "std_under": 9.03,
        "rob_overall": 30.39,
        "rob_under": 1.62,
    }
    assert rows["GAIRAT"].cells[100.0].paper is None  # not in the paper
    assert rows["CB-LDAM"].cells[10.0].paper is None


def test_paper_table_ratio_columns_ascending_and_numeric() -> None:
    records = [
        record("a", 0, (1.0, 1.0, 1.0, 1.0), ratio=100.0),
        record("b", 0, (1.0, 1.0, 1.0, 1.0), ratio=20.0),
        record("c", 0, (1.0, 1.0, 1.0, 1.0), ratio=5.0),
    ]
    (block,) = paper_table(group_seeds(records), with_paper=False)
    assert block.ratios == [5.0, 20.0, 100.0]  # numeric, not "100" < "20" < "5"


def test_paper_table_never_averages_different_configs() -> None:
    records = [
        record("s20a", 0, (50.0, 30.0, 25.0, 10.0), epochs=20, ratio=100.0),
        record("s20b", 1, (52.0, 32.0, 27.0, 12.0), epochs=20, ratio=100.0),
        record("s20k10", 0, (70.0, 70.0, 40.0, 40.0), epochs=20, ratio=10.0),
        record("s200", 0, (63.0, 52.0, 33.0, 18.0), epochs=200, ratio=100.0),
    ]
    (block,) = paper_table(group_seeds(records), with_paper=True)
    labels = [row.label for row in block.rows]
    assert labels == ["SRAT-LDAM [20 ep]", "SRAT-LDAM [200 ep]"]
    short, long = block.rows
    assert short.cells[100.0].values["std_overall"].mean == 51.0
    assert short.cells[10.0].run_ids == ["s20k10"]  # same variant, other K: same row
    assert long.cells[100.0].values["std_overall"].mean == 63.0
    assert 10.0 not in long.cells
    assert long.cells[100.0].paper == paper_result("cifar10", "step", 100, "SRAT-LDAM")


def test_paper_table_falls_back_to_config_key_prefix() -> None:
    # Same arch and epochs (e.g. they differ in loss.sep_lambda): only the key tells them apart.
    records = [
        record("x", 0, (50.0, 30.0, 25.0, 10.0), key="aaaaaa111111"),
        record("y", 0, (60.0, 40.0, 35.0, 20.0), key="bbbbbb222222"),
    ]
    (block,) = paper_table(group_seeds(records), with_paper=False)
    assert [row.label for row in block.rows] == ["SRAT-LDAM [aaaaaa]", "SRAT-LDAM [bbbbbb]"]
    assert [row.cells[100.0].values["std_overall"].mean for row in block.rows] == [50.0, 60.0]


def _configured(run_id: str, seed: int, values: tuple[float, ...], ratio: float,
                **assignments: Any) -> dict[str, Any]:  # fmt: skip
    """A record with its run's config (as the exports attach it), `section__key=value`."""
    config = RunConfig(method="SRAT-LDAM").model_dump(mode="json")
    config["data"]["ratio"] = ratio
    for name, value in assignments.items():
        section, key = name.split("__")
        config[section][key] = value
    return {**record(run_id, seed, values, ratio=ratio, key=config_key(config)), "config": config}


def test_paper_table_names_a_methods_rows_by_the_settings_that_differ() -> None:
    values = (50.0, 30.0, 25.0, 10.0)
    records = [
        _configured("ref", 0, values, 100.0),
        _configured("ref-k10", 0, values, 10.0),  # another K of the same variant: same row
        _configured("lit", 0, values, 100.0, loss__sep_lambda=2.0, attack__loss="training"),
    ]
    # a config from before attack.loss existed reads as its default, and groups with "ref"
    older = _configured("old", 1, values, 100.0)
    del older["config"]["attack"]["loss"]
    records.append({**older, "config_key": config_key(older["config"])})
    (block,) = paper_table(group_seeds(records), with_paper=False)
    assert [row.label for row in block.rows] == [
        "SRAT-LDAM [attack.loss=reference, loss.sep_lambda=1]",
        "SRAT-LDAM [attack.loss=training, loss.sep_lambda=2]",
    ]
    assert block.rows[0].cells[100.0].run_ids == ["ref", "old"]
    assert block.rows[0].cells[10.0].run_ids == ["ref-k10"]
    # past MAX_LABEL_SETTINGS differing fields, the key prefix names them
    many = _configured("many", 0, values, 100.0, loss__sep_lambda=2.0, loss__sep_tau=0.2,
                       loss__focal_gamma=2.0, attack__loss="training")  # fmt: skip
    (block,) = paper_table(group_seeds([records[0], many]), with_paper=False)
    assert all(len(row.label.split("[")[1]) <= 9 for row in block.rows)


def test_paper_table_widens_colliding_key_prefixes() -> None:
    records = [
        record("x", 0, (50.0, 30.0, 25.0, 10.0), key="abcdef111111"),
        record("y", 0, (60.0, 40.0, 35.0, 20.0), key="abcdef222222"),
    ]
    (block,) = paper_table(group_seeds(records), with_paper=False)
    assert [row.label for row in block.rows] == [
        "SRAT-LDAM [abcdef11]",
        "SRAT-LDAM [abcdef22]",
    ]


def test_paper_table_balanced_runs_use_k_1() -> None:
    records = [record("b", 0, (90.0, 90.0, 50.0, 50.0), imbalance="none", ratio=100.0)]
    (block,) = paper_table(group_seeds(records), with_paper=True)
    assert block.ratios == [1.0]
    assert block.rows[0].cells[1.0].paper is None


def test_robust_coverage_names_runs_without_the_result_and_mixed_subsets() -> None:
    records = [
        {**record("a", 0, (60.0, 50.0, 30.0, 20.0)), "rob_n": 100},
        {**record("b", 1, (62.0, 50.0, 32.0, 20.0)), "rob_n": 50},
        {**record("c", 2, (64.0, 50.0, None, None)), "rob_n": None},
    ]
    groups = group_seeds(records)
    coverage = robust_coverage(groups, records)
    assert coverage.missing == ["c"]
    ((group, sizes),) = coverage.mixed
    assert group.run_ids == ["a", "b", "c"] and sizes == [50, 100]
    same = [{**r, "rob_n": 100} for r in records[:2]]
    assert robust_coverage(group_seeds(same), same).mixed == []
