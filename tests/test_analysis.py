"""Feature separability, t-SNE of a run, sweeps (planning and queueing), sweep/Figure 1 plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_harness import Srat, make_invoker
from fake_runs import prepare_from_env

from srat_engine.analysis.sweeps import plan_sweep, sweep_tag
from srat_engine.config.prepare import create_run
from srat_engine.errors import SratError
from srat_engine.evaluation.separability import feature_separability
from srat_engine.fsutil import atomic_write_json
from srat_engine.paths import srat_home
from srat_engine.runs.home import Home
from srat_engine.runs.rundir import RunDir
from srat_engine.training.trainer import execute

TINY = (
    "train.epochs=2",
    "data.n_max=20",
    "attack.steps=1",
    "eval.steps=1",
    "eval.robust_per_class=2",
    "eval.batch_size=500",
    "train.batch_size=128",  # the digits protocol's 32 would change these tiny runs
    "eval.robust_every=1",
    "device=cpu",
)


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


# --- separability ---------------------------------------------------------------------------


def test_separability_two_classes_by_hand() -> None:
    # centroids (0.5, 0.5) and (-0.5, -0.5): W = sqrt(0.5), B = sqrt(2), B / W = 2
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert feature_separability(features, labels) == pytest.approx(2.0)
    # normalised first: scaling single examples changes nothing
    scaled = features * torch.tensor([[3.0], [0.5], [7.0], [2.0]])
    assert feature_separability(scaled, labels) == pytest.approx(2.0)


def test_separability_three_classes_by_hand() -> None:
    # class 2 is one point at (1, 0): within distances sqrt(.5), sqrt(.5), 0 -> W = 2 sqrt(.5)/3;
    # centroid gaps sqrt(2), sqrt(.5), sqrt(2.5) -> B / W = (2 + 1 + sqrt 5) / 2
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    assert feature_separability(features, labels) == pytest.approx((3 + math.sqrt(5)) / 2)


def test_separability_edge_cases() -> None:
    on_centroids = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert feature_separability(on_centroids, torch.tensor([0, 0, 1])) == math.inf
    with pytest.raises(ValueError, match="two classes"):
        feature_separability(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        feature_separability(torch.randn(4), torch.zeros(4, dtype=torch.long))


def _separability_by_loops(features: torch.Tensor, labels: torch.Tensor) -> float:
    """The module docstring's definition, class by class (slow, obvious)."""
    z = torch.nn.functional.normalize(features.double(), dim=1)
    classes = sorted(set(labels.tolist()))
    centroids = {c: z[labels == c].mean(dim=0) for c in classes}
    within = sum(float((z[labels == c] - centroids[c]).norm(dim=1).mean()) for c in classes)
    gaps = [float((centroids[a] - centroids[b]).norm()) for a in classes for b in classes if a < b]
    return (sum(gaps) / len(gaps)) / (within / len(classes))


def test_separability_equals_the_class_by_class_definition_with_absent_classes() -> None:
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 100, (3000,), generator=gen)
    labels = labels[(labels % 7) != 3]  # some classes absent, as in a small tail sample
    features = torch.randn(len(labels), 32, generator=gen) + torch.eye(100, 32)[labels] * 2
    expected = _separability_by_loops(features, labels)
    assert feature_separability(features, labels) == pytest.approx(expected, rel=1e-12)
    # told the number of classes (the trainer is): the same number, absent classes skipped
    assert feature_separability(features, labels, 120) == pytest.approx(expected, rel=1e-12)


def test_separability_orders_mixtures_by_their_separation() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(200)
    centres = torch.eye(4, 16) * 5
    noise = torch.randn(800, 16, generator=gen)
    values = [feature_separability(centres[labels] * scale + noise, labels) for scale in (0, 1, 4)]
    assert values[0] < values[1] < values[2]
    assert values[0] < 0.2  # no signal: centroids differ by sampling noise only


# --- a tiny trained run ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch digits run (template home, copied per test)."""
    home = tmp_path_factory.mktemp("analysis-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRAT_HOME", str(home))
        run = create_run(prepare_from_env("digits-ce", TINY), root=home / "runs")
        execute(run)
    return run.path


@pytest.fixture
def run(trained: Path, srat_home: Path) -> RunDir:
    import shutil

    target = srat_home / "runs" / trained.name
    shutil.copytree(trained, target)
    return RunDir(target)


def test_separability_is_recorded_every_epoch(run: RunDir) -> None:
    records = run.metrics()
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 2
    for record in [*epochs, records[-1]]:
        assert isinstance(record["separability"], float) and record["separability"] > 0


def test_tsne_writes_a_png_and_draws_every_class(run: RunDir, srat: Srat, tmp_path: Path) -> None:
    out = tmp_path / "pictures" / "t.png"
    out.parent.mkdir()  # --out never creates folders (test_tsne_refuses_a_bad_out_...)
    result = srat("tsne", run.id, "--n-per-class", "6", "--out", str(out))
    assert result.code == 0, result.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = run.config()["resolved"]["class_names"]
    plot = result.out.split("separability (between")[0]
    assert "┌" in plot and "└" in plot  # plotext's frame
    for name in names:  # the legend names every class
        assert f" {name}" in plot
    assert f"saved {out}" in result.out


def test_tsne_json_default_png_in_the_run(run: RunDir, srat: Srat) -> None:
    result = srat("tsne", run.id, "-n", "4", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert Path(doc["png"]) == run.path / "tsne.png" and (run.path / "tsne.png").is_file()
    assert len(doc["points"]) == len(doc["labels"]) == 40  # 4 per class, 10 classes
    assert sorted(set(doc["labels"])) == list(range(10))
    assert all(len(p) == 2 and all(math.isfinite(v) for v in p) for p in doc["points"])
    assert doc["epoch"] == 2 and doc["separability"] > 0


def test_tsne_of_a_run_without_checkpoint(srat: Srat) -> None:
    created = create_run(prepare_from_env("digits-ce", TINY), Home.from_env().runs)
    result = srat("tsne", created.id)
    assert result.code == 2 and "no checkpoint" in result.err


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_tsne_refuses_a_seed_scikit_learn_cannot_take(srat: Srat, seed: str) -> None:
    created = create_run(prepare_from_env("digits-ce", TINY), Home.from_env().runs)
    result = srat("tsne", created.id, "--seed", seed)
    assert result.code == 2  # was scikit-learn's InvalidParameterError, a traceback
    assert result.err_lines == [f"error: --seed must be between 0 and 4294967295 (got {seed})"]


def _fake_tsne(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """`run_tsne` replaced by three points (a real one takes seconds); the list records each
    call, so a test can tell whether the computation ran."""
    from srat_engine.analysis import tsne

    calls: list[bool] = []

    def fake(*_args: object, **_kwargs: object) -> tsne.TsneResult:
        calls.append(True)
        return tsne.TsneResult(
            points=np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]),
            labels=np.array([0, 1, 2]),
            class_names=["a", "b", "c"],
            separability=1.5,
            epoch=1,
            n_per_class=1,
        )

    monkeypatch.setattr(tsne, "run_tsne", fake)
    return calls


@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        ("x.txt", "cannot save a figure as .txt; use one of"),
        ("folder", "is a folder"),
        ("missing/deeper/t.png", "does not exist"),
    ],
)
def test_tsne_refuses_a_bad_out_before_computing(
    srat: Srat, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, out: str, fragment: str
) -> None:
    calls = _fake_tsne(monkeypatch)
    created = create_run(prepare_from_env("digits-ce", TINY), Home.from_env().runs)
    (tmp_path / "folder").mkdir()
    before = sorted(tmp_path.rglob("*"))
    result = srat("tsne", created.id, "--out", str(tmp_path / out))
    assert result.code == 2, result
    assert len(result.err_lines) == 1 and result.err_lines[0].startswith("error: --out ")
    assert fragment in result.err
    assert calls == []  # refused before the t-SNE, not after it
    assert sorted(tmp_path.rglob("*")) == before  # no folder made, no folder.png written


def test_tsne_formats_are_matplotlibs() -> None:
    from matplotlib.figure import Figure

    from srat_engine.analysis.tsne import figure_formats

    formats = figure_formats()
    assert {"png", "pdf", "svg"} <= formats.keys()
    assert formats.keys() <= Figure().canvas.get_supported_filetypes().keys()
    assert "txt" not in formats


def test_tsne_saves_by_suffix_and_prints_the_file_written(
    srat: Srat, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_tsne(monkeypatch)
    created = create_run(prepare_from_env("digits-ce", TINY), Home.from_env().runs)
    pdf = tmp_path / "t.pdf"
    result = srat("tsne", created.id, "--out", str(pdf))
    assert result.code == 0, result.err
    assert pdf.read_bytes()[:5] == b"%PDF-" and f"saved {pdf}\n" in result.out
    # a bare name gets .png, as matplotlib would add it, and the message names that file
    result = srat("tsne", created.id, "--out", str(tmp_path / "bare"), "--json")
    assert result.code == 0, result.err
    written = tmp_path / "bare.png"
    assert json.loads(result.out)["png"] == str(written)
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_show_separability(run: RunDir, srat: Srat) -> None:
    result = srat("curves", run.id)
    assert result.code == 0, result.err
    assert "feature separability" in result.out and "std_overall" in result.out
    # --json, as every analysis command: each epoch once, as recorded
    events = [r for r in run.metrics() if r["event"] == "epoch"]
    shown = json.loads(srat("curves", run.id, "--json").out)
    assert shown["run_id"] == run.id
    assert [row["epoch"] for row in shown["epochs"]] == [r["epoch"] for r in events]
    for row, event in zip(shown["epochs"], events, strict=True):
        assert row["rob_under"] == event.get("rob_under")
        assert row["separability"] == event["separability"]


# --- sweep planning -------------------------------------------------------------------------


def _weights(point: Any) -> list[float]:
    (assignment,) = [o for o in point.overrides if o.startswith("loss.class_weights=")]
    return json.loads(assignment.split("=", 1)[1])


def test_reweight_plan_for_an_unweighted_adversarial_method() -> None:
    points = plan_sweep(
        "reweight", [1, 10, 200], method="CE", num_classes=4, under_classes=[2, 3],
        natural_too=True,
    )  # fmt: skip
    assert [(p.arm, p.value) for p in points] == [
        ("adversarial", 1.0), ("adversarial", 10.0), ("adversarial", 200.0),
        ("natural", 1.0), ("natural", 10.0), ("natural", 200.0),
    ]  # fmt: skip
    methods = [p.overrides[0] for p in points]
    assert methods == ["method=CB-Reweight"] * 3 + ["method=Natural-CB"] * 3
    assert [_weights(p) for p in points[:3]] == [
        [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 10.0, 10.0], [1.0, 1.0, 200.0, 200.0],
    ]  # fmt: skip
    assert [_weights(p) for p in points[3:]] == [_weights(p) for p in points[:3]]


@pytest.mark.parametrize(
    ("method", "expected"),
    [("SRAT-LDAM", "SRAT-LDAM"), ("DRCB-Focal", "DRCB-Focal"), ("LDAM", "CB-LDAM"),
     ("Focal", "CB-Focal"), ("Natural", "CB-Reweight")],
)  # fmt: skip
def test_reweight_plan_keeps_a_reweighting_method(method: str, expected: str) -> None:
    (point,) = plan_sweep("reweight", [5], method=method, num_classes=2, under_classes=[1])
    assert point.overrides == (f"method={expected}", "loss.class_weights=[1.0, 5.0]")


def test_lambda_plan() -> None:
    points = plan_sweep("lambda", [0, 0.5, 8], method="SRAT-CE", num_classes=10, under_classes=[])
    assert [p.overrides for p in points] == [
        ("loss.sep_lambda=0.0",), ("loss.sep_lambda=0.5",), ("loss.sep_lambda=8.0",),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "values", "method", "natural_too", "message"),
    [
        ("lambda", [1], "CE", False, "SRAT"),
        ("lambda", [1], "SRAT-CE", True, "--natural-too"),
        ("reweight", [1], "GAIRAT", False, "GAIRAT"),
        ("reweight", [1, 1], "CE", False, "repeat"),
        ("reweight", [-1], "CE", False, ">= 0"),
        ("reweight", [], "CE", False, "at least one"),
        ("grid", [1], "CE", False, "unknown sweep kind"),
    ],
)
def test_bad_sweeps_are_refused(
    kind: str, values: list[float], method: str, natural_too: bool, message: str
) -> None:
    with pytest.raises(SratError, match=message):
        plan_sweep(
            kind, values, method=method, num_classes=10, under_classes=[5],
            natural_too=natural_too,
        )  # fmt: skip


def test_a_sweep_setting_is_checked_against_the_method_its_arm_trains(srat: Srat) -> None:
    # a CE preset's reweighting arm trains CB-Reweight: the refusal names that method, and
    # the same setting under a mean reduction plans
    args = ("sweep", "reweight", "--preset", "digits-ce", "--weights", "1,10", "--dry-run",
            "--set", "loss.class_weight_scale=head")  # fmt: skip
    refused = srat(*args)
    assert refused.code == 2 and len(refused.err_lines) == 1
    assert "normalized reduction of CB-Reweight" in refused.err
    planned = srat(*args, "--set", "loss.reduction=mean")
    assert planned.code == 0, planned.err
    assert planned.out.count("method=CB-Reweight") == 2


# --- queueing a sweep for real --------------------------------------------------------------


def test_reweight_sweep_queues_tagged_runs_with_the_planned_configs(srat: Srat) -> None:
    from srat_engine.jobs.slots import hold_slot, slots_for
    from srat_engine.jobs.supervisor import kill_run

    sets = [f"--set={o}" for o in TINY if not o.startswith("device")]
    # the CPU slot is held so the workers only queue: nothing trains
    home = Home.from_env()
    with hold_slot("0-test", slots_for(["cpu"], 1), root=home.slots, poll_seconds=0.05):
        result = srat(
            "sweep", "reweight", "--preset", "digits-ce", "--weights", "7", "--natural-too",
            *sets, "--device", "cpu", "--json",
        )  # fmt: skip
        assert result.code == 0, result.err
        doc = json.loads(result.out)
        runs = [RunDir.open(home.runs, e["run_id"]) for e in doc["runs"]]
        try:
            assert [e["arm"] for e in doc["runs"]] == ["adversarial", "natural"]
            for run, method in zip(runs, ("CB-Reweight", "Natural-CB"), strict=True):
                config = run.config()
                assert config["config"]["method"] == method
                # digits Exp-10: classes 5-9 are the under-represented half
                assert config["resolved"]["under_classes"] == [5, 6, 7, 8, 9]
                # weights 1 and 7, rescaled to sum to the 10 classes: 10 / 40 and 70 / 40
                assert config["resolved"]["class_weights"] == [0.25] * 5 + [1.75] * 5
                assert config["config"]["train"]["epochs"] == 2
                assert run.meta()["tags"] == [sweep_tag(doc["sweep_id"])]
                assert run.state()["status"] == "queued"
            manifest = json.loads((srat_home() / "sweeps" / f"{doc['sweep_id']}.json").read_text())
            assert [r["run_id"] for r in manifest["runs"]] == [r.id for r in runs]
            assert manifest["kind"] == "reweight" and manifest["preset"] == "digits-ce"
        finally:
            for run in runs:
                kill_run(run, home=home, grace_seconds=5)
    assert all(run.state()["status"] == "killed" for run in runs)


def test_sweep_dry_run_creates_nothing(srat: Srat, srat_home: Path) -> None:
    result = srat("sweep", "lambda", "--preset", "digits-srat-ce", "--lambdas", "0,2", "--dry-run")
    assert result.code == 0, result.err
    assert "loss.sep_lambda=0.0" in result.out and "loss.sep_lambda=2.0" in result.out
    assert list(srat_home.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "option", "values"),
    [
        ("lambda", "--lambdas", "0,nan"),
        ("reweight", "--weights", "inf"),
        ("lambda", "--lambdas", "1,x"),
    ],
)
def test_sweep_values_that_are_not_finite_numbers_are_refused(
    srat: Srat, srat_home: Path, kind: str, option: str, values: str
) -> None:
    result = srat("sweep", kind, "--preset", "digits-srat-ce", option, values, "--dry-run")
    assert result.code == 2 and len(result.err_lines) == 1, result.err
    assert option in result.err and repr(values) in result.err
    assert list(srat_home.iterdir()) == []


# --- plots of finished runs (synthetic metrics) ----------------------------------------------


def _finished(method: str, std: list[float], rob: list[float]) -> RunDir:
    run = create_run(prepare_from_env("digits-ce", (f"method={method}",)), Home.from_env().runs)
    run.append_metrics({"event": "final", "std_class": std, "rob_class": rob})
    return run


def test_sweep_plot_draws_each_arm(srat: Srat) -> None:
    under = [5, 6, 7, 8, 9]
    entries = []
    for arm, method in (("adversarial", "CE"), ("natural", "Natural")):
        for value in (1.0, 10.0):
            std = [90.0 if c not in under else 10.0 * value for c in range(10)]
            run = _finished(method, std, [s / 2 for s in std])
            entries.append({"run_id": run.id, "arm": arm, "value": value})
    manifest = {"sweep_id": "reweight-t", "kind": "reweight", "preset": "digits-ce",
                "overrides": [], "runs": entries}  # fmt: skip
    atomic_write_json(srat_home() / "sweeps" / "reweight-t.json", manifest)
    result = srat("sweep", "plot", "reweight-t")
    assert result.code == 0, result.err
    assert (
        "sweep reweight-t: adversarial" in result.out and "sweep reweight-t: natural" in result.out
    )
    assert "std under-represented" in result.out and "rob well-represented" in result.out
    doc = json.loads(srat("sweep", "plot", "reweight-t", "--json").out)
    assert [r["std_class"][9] for r in doc["runs"]] == [10.0, 100.0, 10.0, 100.0]
    assert srat("sweep", "plot", "nope").code == 2
    # the table under each plot: the class-wise numbers of the metric asked for (always std
    # before, whatever --metric said)
    rob = srat("sweep", "plot", "reweight-t", "--per-class", "--metric", "rob").out
    rows = [line.split() for line in rob.splitlines() if line.startswith("  10 ")]
    assert rows and all(row[2] == "rob" and row[-1] == "50.0" for row in rows), rob
    std = srat("sweep", "plot", "reweight-t", "--per-class").out
    rows = [line.split() for line in std.splitlines() if line.startswith("  10 ")]
    assert rows and all(row[2] == "std" and row[-1] == "100.0" for row in rows), std


def test_sweep_ls_lists_the_sweeps_and_warns_of_a_damaged_manifest(srat: Srat) -> None:
    point = {"run_id": "r1", "arm": "adversarial", "value": 2.0}
    manifest = {"sweep_id": "lambda-ok", "kind": "lambda", "preset": "digits-srat-ce",
                "overrides": [], "runs": [point]}  # fmt: skip
    atomic_write_json(srat_home() / "sweeps" / "lambda-ok.json", manifest)
    (srat_home() / "sweeps" / "lambda-bad.json").write_bytes(b'{"sweep_id": ')
    result = srat("sweep", "ls")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["lambda-ok  digits-srat-ce  1 runs: adv 2"]
    assert len(result.err_lines) == 1 and result.err_lines[0].startswith("warning: ")
    assert "lambda-bad" in result.err
    listed = json.loads(srat("sweep", "ls", "--json").out)
    assert [doc["sweep_id"] for doc in listed] == ["lambda-ok"]


def test_figure1_bars(srat: Srat) -> None:
    natural = _finished("Natural", [80.0] * 10, [5.0] * 10)
    adversarial = _finished("CE", [60.0] * 10, [30.0] * 10)
    result = srat("figure1", natural.id, adversarial.id)
    assert result.code == 0, result.err
    for label in ("natural std", "natural rob", "adversarial std", "adversarial rob"):
        assert label in result.out
    doc = json.loads(srat("figure1", natural.id, adversarial.id, "--json").out)
    assert doc["bars"]["adversarial rob"] == [30.0] * 10
    assert result.err == ""
    # the wrong way round: drawn as asked, and said
    swapped = srat("figure1", adversarial.id, natural.id)
    assert swapped.code == 0
    assert swapped.err_lines == [
        f"warning: run {adversarial.id} (CE) trains adversarially; it is drawn as the natural run",
        f"warning: run {natural.id} (Natural) trains on clean inputs; it is drawn as the "
        "adversarial run",
    ]
