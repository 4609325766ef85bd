"""Comparing runs and laying results out as the paper's tables: pure functions over plain dicts.

Inputs are run summary records (`srat_engine.summary.summarize_run`: id, method, dataset,
imbalance, ratio, arch, seed, epochs, the four metric columns, final, config_key, ...) and run
config dicts; nothing here reads files or prints.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from srat_engine.config.methods import PAPER_METHODS
from srat_engine.reporting.paper import paper_result
from srat_engine.runs.records import (
    METRIC_COLUMNS,
    best_epoch,
    is_number,
    metric_damage,
    result_record,
)
from srat_engine.runs.summary import result_settings

# The paper's four columns, as named in metrics records and summary records.

# Paper order of the blocks: Tables 1/3 are Step, 2/4 Exp.
_IMBALANCE_ORDER: tuple[str, ...] = ("step", "exp", "none")


# -- config diff -----------------------------------------------------------------------------


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys ("loss.sep_lambda"). Lists stay whole values: an index per key
    would report a changed list length as many unrelated keys. An empty dict is kept as a value
    so that its key still shows up."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _differs(a: Any, b: Any) -> bool:
    if a != b:
        return True
    # True == 1 in Python, but a switch turned into a number is a change worth showing.
    return isinstance(a, bool) != isinstance(b, bool)


def _all_same(values: Sequence[Any]) -> bool:
    return all(not _differs(values[0], value) for value in values[1:])


def config_diff(
    configs: Sequence[Mapping[str, Any]], only_changed: bool = True
) -> list[tuple[str, list[Any]]]:
    """(dotted key, [value per config]) sorted by key; a key missing from a config gives None.

    only_changed: keep only the keys whose values are not all equal."""
    flats = [flatten(config) for config in configs]
    keys = sorted({key for flat in flats for key in flat})
    rows: list[tuple[str, list[Any]]] = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        if only_changed and (len(values) < 2 or _all_same(values)):
            continue
        rows.append((key, values))
    return rows


# -- seeds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) over the runs that have the value."""

    mean: float | None
    std: float | None  # None when n < 2: one seed says nothing about spread
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(None, None, 0)
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


@dataclass
class Group:
    """Runs that differ only by seed (one config_key)."""

    config_key: str
    method: str
    dataset: str
    imbalance: str
    ratio: float
    arch: str | None
    epochs: int | None
    run_ids: list[str]
    seeds: list[int | None]
    stats: dict[str, Stat]  # one per METRIC_COLUMNS entry
    # the flattened fields its config_key hashes, K left out (`settings_of`), when its records
    # carry their config: what tells the rows of one method apart in a table
    settings: dict[str, Any] | None = None

    @property
    def n(self) -> int:
        return len(self.run_ids)

    def mean(self, column: str) -> float | None:
        return self.stats[column].mean

    def std(self, column: str) -> float | None:
        return self.stats[column].std


class Groups(list[Group]):
    """The groups, plus what they leave out, so an interface can say so: `skipped`, ids of
    records without final metrics (unfinished, failed); `repeated`, ids of runs that repeat a
    seed of their configuration, set aside for its newest run."""

    def __init__(
        self,
        groups: Sequence[Group] = (),
        skipped: Sequence[str] = (),
        repeated: Sequence[str] = (),
    ) -> None:
        super().__init__(groups)
        self.skipped: list[str] = list(skipped)
        self.repeated: list[str] = list(repeated)


def has_final_metrics(record: Mapping[str, Any]) -> bool:
    """A record counts in a table only when its numbers come from the final evaluation, and
    are numbers (`records.metric_damage`: an index record a hand edit damaged does not)."""
    return (
        bool(record.get("final"))
        and is_number(record.get("std_overall"))
        and metric_damage(record) is None
    )


def method_rank(method: str) -> tuple[int, str]:
    """Sort key: PAPER_METHODS in table order, then every other method alphabetically."""
    if method in PAPER_METHODS:
        return (PAPER_METHODS.index(method), "")
    return (len(PAPER_METHODS), method.lower())


def _imbalance_rank(imbalance: str) -> tuple[int, str]:
    if imbalance in _IMBALANCE_ORDER:
        return (_IMBALANCE_ORDER.index(imbalance), "")
    return (len(_IMBALANCE_ORDER), imbalance)


def settings_of(config: Any) -> dict[str, Any] | None:
    """A run's config (a record's optional `config`, as in config.json) as the dotted fields
    that decide its results (`summary.result_settings`), without data.ratio: one table row
    holds a configuration's cells at every K. None without a config."""
    if not isinstance(config, Mapping):
        return None
    fields = flatten(result_settings(dict(config)))
    fields.pop("data.ratio", None)
    return fields


def one_run_per_seed(
    members: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The runs of one configuration with each seed once, and the ids set aside.

    A second run of a seed (a rerun, a stacked repeat) is a replicate, not another sample: on
    a CPU it is the same run to float rounding, so counting it would shrink the std and
    inflate n. The newest run of a seed (by `created`, then id) stands for it; runs without
    a seed all count."""
    by_seed: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    kept: list[Mapping[str, Any]] = []
    for record in members:
        seed = record.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            by_seed[seed].append(record)
        else:
            kept.append(record)
    repeated: list[str] = []
    for runs in by_seed.values():
        runs = sorted(runs, key=lambda r: (str(r.get("created") or ""), str(r.get("id"))))
        kept.append(runs[-1])
        repeated += [str(r.get("id")) for r in runs[:-1]]
    return kept, repeated


@dataclass(frozen=True)
class RobustCoverage:
    """What a table's robust columns from stored `srat eval` results leave out or mix:
    `missing`, the ids of counted runs without the result (their cells read "(n=k)");
    `mixed`, per group whose results are of different numbers of test examples, the group
    and those numbers."""

    missing: list[str]
    mixed: list[tuple[Group, list[int]]]


def robust_coverage(
    groups: Sequence[Group], records: Sequence[Mapping[str, Any]]
) -> RobustCoverage:
    """`RobustCoverage` of `groups` from their `records` (`with_eval_robust`'s rob_overall
    and rob_n)."""
    by_id = {str(r.get("id")): r for r in records}
    counted = [by_id[run_id] for group in groups for run_id in group.run_ids]
    missing = sorted(str(r.get("id")) for r in counted if r.get("rob_overall") is None)
    mixed = []
    for group in groups:
        sizes = {by_id[run_id].get("rob_n") for run_id in group.run_ids} - {None}
        if len(sizes) > 1:
            mixed.append((group, sorted(int(size) for size in sizes)))
    return RobustCoverage(missing, mixed)


def repeated_note(repeated: Sequence[str]) -> str:
    """What a table says of the runs `one_run_per_seed` set aside."""
    return (
        f"set aside {len(repeated)} run(s) repeating a seed of their configuration (each seed "
        f"counts once, by its newest run): {', '.join(repeated)}"
    )


def group_seeds(records: Sequence[Mapping[str, Any]]) -> Groups:
    """Group summary records by config_key; mean and sample std of the four columns per group.

    Records without final metrics are left out and listed in `.skipped`; a second run of a
    seed in its group is set aside (`one_run_per_seed`) and listed in `.repeated`. A record
    without a config_key forms a group of its own rather than being merged on a guess."""
    buckets: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    skipped: list[str] = []
    repeated: list[str] = []
    for record in records:
        if not has_final_metrics(record):
            skipped.append(str(record.get("id")))
            continue
        key = record.get("config_key") or f"run:{record.get('id')}"
        buckets[key].append(record)
    groups: list[Group] = []
    for key, bucket in buckets.items():
        members, set_aside = one_run_per_seed(bucket)
        repeated += set_aside
        members = sorted(members, key=lambda r: (_seed_rank(r.get("seed")), str(r.get("id"))))
        first = members[0]
        stats = {
            column: Stat.of([float(r[column]) for r in members if r.get(column) is not None])
            for column in METRIC_COLUMNS
        }
        groups.append(
            Group(
                config_key=key,
                method=str(first.get("method")),
                dataset=str(first.get("dataset")),
                imbalance=str(first.get("imbalance")),
                ratio=float(first.get("ratio") or 1.0),
                arch=first.get("arch"),
                epochs=first.get("epochs"),
                run_ids=[str(r.get("id")) for r in members],
                seeds=[r.get("seed") for r in members],
                stats=stats,
                settings=settings_of(first.get("config")),
            )
        )
    groups.sort(
        key=lambda g: (
            g.dataset,
            _imbalance_rank(g.imbalance),
            g.ratio,
            method_rank(g.method),
            g.config_key,
        )
    )
    return Groups(groups, skipped, sorted(repeated))


def _seed_rank(seed: Any) -> tuple[int, Any]:
    return (0, seed) if isinstance(seed, int) else (1, 0)


def pick_metrics(
    events: Sequence[Mapping[str, Any]], num_classes: int | None = None, checkpoint: str = "last"
) -> dict[str, Any] | None:
    """A copy of the record to show for a run from its metrics.jsonl events, by the one rule of
    `runs.records.result_record`: the final record unless the run trained further after it,
    else the latest epoch record, else None; damaged records never (num_classes: the run's, to
    check per-class lists against). With checkpoint "best": the best epoch's record
    (`records.best_epoch`) with `best_epoch` its number, as `summary.at_best_epoch` marks an
    index record, when the run has one."""
    chosen, _ = result_record(events, num_classes)
    if chosen is None:
        return None
    if checkpoint == "best":
        best = best_epoch(events, num_classes)
        if best is not None:
            return {**best, "best_epoch": best["epoch"]}
    return dict(chosen)


# -- the paper's layout ----------------------------------------------------------------------


@dataclass
class Cell:
    """One (row, K) cell: our statistics for the four columns and, if asked, the paper's."""

    ratio: float
    n: int
    config_key: str
    run_ids: list[str]
    seeds: list[int | None]
    values: dict[str, Stat]
    paper: dict[str, float] | None = None  # None: not asked for, or no such cell in the paper

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        return cls(
            ratio=float(data["ratio"]),
            n=int(data["n"]),
            config_key=str(data["config_key"]),
            run_ids=list(data["run_ids"]),
            seeds=list(data["seeds"]),
            values={k: Stat(**v) for k, v in data["values"].items()},
            paper=dict(data["paper"]) if data.get("paper") is not None else None,
        )


@dataclass
class TableRow:
    label: str  # the method, plus " [...]" when several configs of it share a block
    method: str
    cells: dict[float, Cell] = field(default_factory=dict)  # by K; a missing K = not run

    def to_dict(self) -> dict[str, Any]:
        # A list, not a dict: JSON object keys would turn the float K into a string.
        return {
            "label": self.label,
            "method": self.method,
            "cells": [cell.to_dict() for _, cell in sorted(self.cells.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableRow:
        cells = [Cell.from_dict(c) for c in data["cells"]]
        return cls(str(data["label"]), str(data["method"]), {c.ratio: c for c in cells})


@dataclass
class TableBlock:
    """One of the paper's tables: a (dataset, imbalance) pair, a column group per K."""

    dataset: str
    imbalance: str
    ratios: list[float]
    rows: list[TableRow]
    with_paper: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "imbalance": self.imbalance,
            "ratios": list(self.ratios),
            "with_paper": self.with_paper,
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableBlock:
        return cls(
            dataset=str(data["dataset"]),
            imbalance=str(data["imbalance"]),
            ratios=[float(r) for r in data["ratios"]],
            rows=[TableRow.from_dict(r) for r in data["rows"]],
            with_paper=bool(data.get("with_paper", False)),
        )


def table_ratio(group: Group) -> float:
    """The K column a group belongs in: without imbalance the ratio is unused, so K = 1."""
    return 1.0 if group.imbalance == "none" else group.ratio


# More differing fields than this make a row label no one reads: a config_key prefix then
MAX_LABEL_SETTINGS = 3


def _differing_settings(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The dotted fields whose values are not all equal across `settings`, sorted."""
    keys = sorted({key for one in settings for key in one})
    return [key for key in keys if not _all_same([one.get(key) for one in settings])]


def _setting_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value)


def _suffixers(groups: Sequence[Group]) -> list[Callable[[Group], str]]:
    """Candidate row suffixes, most readable first. arch/epochs keep one variant's K=10 and K=100
    on one row (config_key differs between them, since it covers the ratio); a config_key prefix
    always tells groups apart but gives each its own row."""
    candidates: list[Callable[[Group], str]] = []
    varying = [name for name in ("arch", "epochs") if len({getattr(g, name) for g in groups}) > 1]
    if varying:

        def describe(group: Group) -> str:
            parts = []
            for name in varying:
                value = getattr(group, name)
                parts.append(f"{value} ep" if name == "epochs" else str(value))
            return ", ".join(parts)

        candidates.append(describe)
    settings = [g.settings for g in groups]
    if all(s is not None for s in settings):
        differing = _differing_settings([s for s in settings if s is not None])
        if 0 < len(differing) <= MAX_LABEL_SETTINGS:

            def named(group: Group) -> str:
                values = group.settings or {}
                return ", ".join(f"{key}={_setting_text(values.get(key))}" for key in differing)

            candidates.append(named)
    keys = [g.config_key for g in groups]
    width = 6
    # Hash prefixes could collide; widen until they do not.
    while width < max(len(k) for k in keys) and len({k[:width] for k in keys}) < len(set(keys)):
        width += 2
    candidates.append(lambda g: g.config_key[:width])
    return candidates


def _rows_for_method(method: str, groups: Sequence[Group]) -> list[tuple[str, list[Group]]]:
    """Split one method's groups of a block into rows so that no cell holds two configs."""
    per_k: dict[float, int] = defaultdict(int)
    for group in groups:
        per_k[table_ratio(group)] += 1
    if all(count == 1 for count in per_k.values()):
        return [(method, list(groups))]
    for suffix in _suffixers(groups):
        rows: dict[str, list[Group]] = defaultdict(list)
        for group in groups:
            rows[suffix(group)].append(group)
        unique = all(
            len({table_ratio(g) for g in members}) == len(members) for members in rows.values()
        )
        if unique:
            # arch and epochs as numbers, then the labels: "attack.loss=reference" first
            ordered = sorted(rows.items(), key=lambda item: (*_variant_rank(item[1][0]), item[0]))
            return [(f"{method} [{name}]", members) for name, members in ordered]
    raise AssertionError("a config_key prefix always separates groups")  # pragma: no cover


def _variant_rank(group: Group) -> tuple[str, int]:
    return (group.arch or "", group.epochs or 0)


def paper_table(groups: Sequence[Group], with_paper: bool = False) -> list[TableBlock]:
    """Blocks in the paper's layout: one per (dataset, imbalance); K columns ascending; rows in
    PAPER_METHODS order, then other methods alphabetically.

    Groups of one method with different config_keys in the same K are never averaged together:
    they become separate rows labelled "method [suffix]" (arch/epochs when that tells them
    apart, else a config_key prefix). with_paper attaches the paper's four numbers to every cell
    the paper has (else `paper` stays None)."""
    by_block: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for group in groups:
        by_block[(group.dataset, group.imbalance)].append(group)
    blocks: list[TableBlock] = []
    for dataset, imbalance in sorted(by_block, key=lambda b: (b[0], _imbalance_rank(b[1]))):
        members = by_block[(dataset, imbalance)]
        by_method: dict[str, list[Group]] = defaultdict(list)
        for group in members:
            by_method[group.method].append(group)
        rows: list[TableRow] = []
        for method in sorted(by_method, key=method_rank):
            for label, row_groups in _rows_for_method(method, by_method[method]):
                row = TableRow(label, method)
                for group in row_groups:
                    ratio = table_ratio(group)
                    paper = paper_result(dataset, imbalance, ratio, method) if with_paper else None
                    row.cells[ratio] = Cell(
                        ratio=ratio,
                        n=group.n,
                        config_key=group.config_key,
                        run_ids=list(group.run_ids),
                        seeds=list(group.seeds),
                        values=dict(group.stats),
                        paper=paper,
                    )
                rows.append(row)
        ratios = sorted({table_ratio(g) for g in members})
        blocks.append(TableBlock(dataset, imbalance, ratios, rows, with_paper))
    return blocks
