"""`srat eval` and srat_engine.evaluation on a small adversarially trained digits model.

One run is trained (a few seconds) and evaluated with AutoAttack once per module, in a
template home; every test gets its own copy of that run in its fresh SRAT_HOME (conftest), so
tests may evaluate, corrupt and forge freely.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from cli_harness import Srat, make_invoker
from fake_runs import prepare_from_env
from test_runs_cli import assert_unchanged, assert_user_error, snapshot

from srat_engine.config.prepare import create_run
from srat_engine.errors import SratError
from srat_engine.evaluation.autoattack import AA_ORDER
from srat_engine.evaluation.classwise import class_totals, count_correct
from srat_engine.evaluation.cw import cw_loss, cw_margin
from srat_engine.evaluation.masking import (
    LOGIT_SCALES,
    MASKING_THRESHOLD,
    gradient_masking_suspected,
)
from srat_engine.evaluation.runner import evaluate_run
from srat_engine.runs.evaluations import read_eval, store_result
from srat_engine.runs.home import Home as SratHome
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.summary import summarize_run
from srat_engine.runs.sync import record_in_index
from srat_engine.training.trainer import execute

# Adversarial training long enough that robust accuracy sits well between 0 and clean
# accuracy (about 75% clean, 50% PGD-20 at eps 16/255), short enough for a few CPU seconds.
SMALL = (
    "train.epochs=8",
    "train.batch_size=64",
    "attack.steps=3",
    "eval.robust_per_class=5",
    "device=cpu",
)
N = 5  # test examples per class for AutoAttack: 50 in all


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: the tiny model's ops are far too small to split, and on a shared
    CPU two threads made the AutoAttack run ~15x slower (measured: 266 s vs 18 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Template:
    runs: Path
    run_id: str
    final: dict[str, Any]
    autoattack: dict[str, Any]
    pgd20: dict[str, Any]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    home = tmp_path_factory.mktemp("eval-template-home")
    with one_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRAT_HOME", str(home))
        mp.delenv("SRAT_PRESETS", raising=False)
        mp.delenv("SRAT_DATA", raising=False)
        run = create_run(prepare_from_env("digits-ce", SMALL), root=home / "runs")
        final = execute(run)
        pgd20 = evaluate_run(run, "pgd20", N, "cpu")
        autoattack = evaluate_run(run, "autoattack", N, "cpu")
    return Template(home / "runs", run.id, final, autoattack, pgd20)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_the_module() -> Iterator[None]:
    with one_thread():
        yield


@dataclass(frozen=True)
class Home:
    path: Path
    run: RunDir
    template: Template


@pytest.fixture
def home(template: Template, srat_home: Path) -> Home:
    shutil.copytree(template.runs, srat_home / "runs")
    run = RunDir(srat_home / "runs" / template.run_id)
    record_in_index(run, SratHome(srat_home).index)
    return Home(srat_home, run, template)


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def eval_doc(run: RunDir) -> dict[str, Any]:
    return json.loads((run.path / "eval.json").read_text())


# --- AutoAttack against PGD-20 --------------------------------------------------------------


def test_autoattack_is_not_weaker_than_pgd20_on_the_same_examples(template: Template) -> None:
    aa, pgd = template.autoattack, template.pgd20
    assert aa["n"] == pgd["n"] == 10 * N and aa["class_n"] == [N] * 10
    # the model is neither broken nor perfectly robust, so the comparison means something
    assert 0 < pgd["overall"] < pgd["clean_overall"]
    assert aa["overall"] <= pgd["overall"]
    # the PGD-20 run inside the AutoAttack evaluation is the standalone one (same seed, subset)
    assert aa["pgd20"]["overall"] == pgd["overall"]
    assert aa["pgd20"]["class"] == pgd["class"]
    assert aa["clean_overall"] == pgd["clean_overall"]


def test_autoattack_counts_add_up_and_record_the_standard_settings(template: Template) -> None:
    aa = template.autoattack
    clean_correct = round(aa["clean_overall"] * aa["n"] / 100)
    robust_correct = round(aa["overall"] * aa["n"] / 100)
    assert list(aa["broken_by"]) == list(AA_ORDER)
    assert sum(aa["broken_by"].values()) == clean_correct - robust_correct
    params = aa["params"]
    assert params["version"] == "standard" and params["norm"] == "Linf"
    assert params["iterations"] == 100 and params["target_classes"] == 9
    assert params["square_queries"] == 5000
    assert math.isclose(params["eps"], 16 / 255)
    assert aa["precision"] == "fp32" and aa["versions"]["torchattacks"]
    assert aa["masking"]["threshold"] == MASKING_THRESHOLD
    assert aa["masking"]["suspected"] == gradient_masking_suspected(
        aa["pgd20"]["overall"], aa["overall"]
    )
    for clean, robust in zip(aa["clean_class"], aa["class"], strict=True):
        assert robust <= clean


def test_autoattack_entry_carries_the_logit_scaled_pgd(template: Template) -> None:
    """PGD-20 on scaled logits, on the same examples, in eval.json and in the verdict."""
    aa = template.autoattack
    scaled = aa["logit_scaled"]
    params = scaled["params"]
    assert params["logit_scales"] == list(LOGIT_SCALES) and params["loss"] == "ce"
    assert {k: params[k] for k in ("eps", "step_size", "steps")} == {
        k: aa["pgd20"]["params"][k] for k in ("eps", "step_size", "steps")
    }
    assert list(scaled["by_scale"]) == ["10", "0.1", "0.01"]
    # robust only if it survives every factor: never above any one factor's accuracy
    assert scaled["overall"] <= min(scaled["by_scale"].values())
    for clean, robust in zip(aa["clean_class"], scaled["class"], strict=True):
        assert robust <= clean
    masking = aa["masking"]
    assert masking["logit_scaled_overall"] == scaled["overall"]
    assert masking["logit_scaled_gap"] == aa["pgd20"]["overall"] - scaled["overall"]
    by_scaled = gradient_masking_suspected(aa["pgd20"]["overall"], scaled["overall"])
    assert masking["logit_scaled_suspected"] is by_scaled
    assert masking["suspected"] is (masking["autoattack_suspected"] or by_scaled)
    # sound PGD-AT with a linear head: logit scaling changes little
    assert by_scaled is False


def test_runs_show_prints_the_logit_scaled_check_and_its_verdict(home: Home, srat: Srat) -> None:
    out = srat("runs", "show", home.run.id).out
    aa = home.template.autoattack
    assert "logit-scaled PGD-20 (x10, x0.1, x0.01)" in out
    assert f"{aa['logit_scaled']['overall']:.2f}" in out
    assert "no sign of gradient masking" in out
    stored = read_eval(home.run)["autoattack"]
    stored["masking"] = {**stored["masking"], "suspected": True, "logit_scaled_suspected": True}
    store_result(home.run, "autoattack", stored)
    assert "gradient masking suspected" in srat("runs", "show", home.run.id).out


def test_pgd20_on_the_whole_test_set_reproduces_the_training_evaluation(home: Home) -> None:
    """The rebuilt model, the seed and the batches match training's own final evaluation."""
    result = evaluate_run(home.run, "pgd20", None, "cpu")
    final = home.template.final
    assert result["n"] == final["rob_n"]
    assert result["overall"] == final["rob_overall"]
    assert result["under"] == final["rob_under"]
    assert result["class"] == final["rob_class"]
    assert result["clean_overall"] == final["std_overall"]


# --- CW margin loss -------------------------------------------------------------------------


def test_cw_margin_and_loss_hand_computed() -> None:
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    # row 0: z_y = 2, best other = 5 -> -3 (misclassified); row 1: z_y = 3, best other = 0 -> 3
    assert cw_margin(logits, y).tolist() == [-3.0, 3.0]
    # -(max(-3 + k, 0) + max(3 + k, 0))
    assert cw_loss(logits, y, kappa=0.0).item() == -3.0
    assert cw_loss(logits, y, kappa=2.0).item() == -5.0
    assert cw_loss(logits, y, kappa=50.0).item() == -100.0
    (grad,) = torch.autograd.grad(cw_loss(logits, y, kappa=2.0), [logits])
    # row 0 is clamped (margin -3 < -2): no gradient; row 1 pushes z_y down and z_0 up
    assert grad.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]]


def test_cw_margin_ignores_the_true_class_even_when_it_is_the_largest() -> None:
    logits = torch.tensor([[1e6, -1e6, -2e6]])
    assert cw_margin(logits, torch.tensor([0])).item() == 2e6


def test_cw_attack_is_stored_with_its_parameters(home: Home) -> None:
    result = evaluate_run(home.run, "cw", 2, "cpu")
    assert result["params"]["loss"] == "cw" and result["params"]["kappa"] == 50.0
    assert result["params"]["steps"] == 20
    assert result["overall"] <= result["clean_overall"]


# --- gradient-masking flag ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pgd", "aa", "threshold", "expected"),
    [
        (60.0, 49.9, 10.0, True),  # 10.1 points below
        (60.0, 50.0, 10.0, False),  # exactly the threshold: not flagged
        (60.0, 55.0, 10.0, False),  # the usual few points
        (50.0, 52.0, 10.0, False),  # AutoAttack above PGD-20 (sampling): never masking
        (50.0, 49.0, 0.0, True),
        (45.0, 20.0, MASKING_THRESHOLD, True),
    ],
)
def test_masking_threshold_cases(pgd: float, aa: float, threshold: float, expected: bool) -> None:
    assert gradient_masking_suspected(pgd, aa, threshold) is expected


def test_masking_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        gradient_masking_suspected(50.0, 40.0, -1.0)
    with pytest.raises(ValueError):
        gradient_masking_suspected(float("nan"), 40.0)


# --- eval.json ------------------------------------------------------------------------------


def test_eval_json_keeps_earlier_attacks(home: Home) -> None:
    before = eval_doc(home.run)
    assert before["format"] == 1 and set(before["results"]) == {"pgd20", "autoattack"}
    evaluate_run(home.run, "cw", 1, "cpu")
    after = eval_doc(home.run)
    assert set(after["results"]) == {"pgd20", "autoattack", "cw"}
    assert after["results"]["autoattack"] == before["results"]["autoattack"]
    assert read_eval(home.run) == after["results"]
    # evaluating an attack again replaces its entry only
    evaluate_run(home.run, "pgd20", 1, "cpu")
    again = read_eval(home.run)
    assert again["pgd20"]["n"] == 10 and again["cw"] == after["results"]["cw"]


def test_corrupt_eval_json_is_moved_aside_not_lost(home: Home) -> None:
    path = home.run.path / "eval.json"
    path.write_text('{"format": 1, "results": {"autoattack": ')
    assert read_eval(home.run) == {}
    store_result(home.run, "cw", {"overall": 1.0})
    assert set(read_eval(home.run)) == {"cw"}
    aside = list(home.run.path.glob("eval.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"format": 1')


def test_an_interrupted_evaluation_writes_nothing(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    import srat_engine.evaluation.runner as runner

    def interrupted(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "count_correct", interrupted)
    before = snapshot(home.path)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(home.run, "cw", 1, "cpu")
    assert_unchanged(before, home.path)


def test_count_correct_sums_each_batch_s_hits_per_class_by_hand() -> None:
    """Hits: every example except those of class 1; batches of 3, 3 and 1 uint8 images."""
    y = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    x = torch.full((len(y), 2), 255, dtype=torch.uint8)
    seen: list[tuple[int, float, float]] = []

    def hits(xb: torch.Tensor, yb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen.append((len(yb), float(xb.max()), float(torch.rand(1, generator=generator))))
        return yb != 1

    correct = count_correct(x, y, 3, batch_size=3, hits=hits, seed=4)
    assert correct.tolist() == [2, 0, 3]
    assert class_totals(y, 3) == [2, 2, 3]
    assert [(n, top) for n, top, _ in seen] == [(3, 1.0), (3, 1.0), (1, 1.0)]  # [0, 1] inputs
    # one generator seeded once for the whole count, so a second count repeats the first
    draws = [draw for *_, draw in seen]
    seen.clear()
    count_correct(x, y, 3, batch_size=3, hits=hits, seed=4)
    assert [draw for *_, draw in seen] == draws and len(set(draws)) == 3


def test_corrupt_checkpoint_is_one_line_error(home: Home) -> None:
    home.run.checkpoint_path.write_bytes(b"not a checkpoint")
    with pytest.raises(SratError, match="corrupt or unsafe") as caught:
        evaluate_run(home.run, "pgd20", 1, "cpu")
    assert "\n" not in str(caught.value)
    assert not (home.run.path / "eval.json").read_text().count('"cw"')


# --- index record ---------------------------------------------------------------------------


def test_summary_carries_autoattack_and_masking(home: Home) -> None:
    record = summarize_run(home.run)
    aa = home.template.autoattack
    assert record["aa_overall"] == aa["overall"] and record["aa_under"] == aa["under"]
    assert record["aa_n"] == aa["n"] and record["masking"] is aa["masking"]["suspected"]
    (home.run.path / "eval.json").unlink()
    bare = summarize_run(home.run)
    assert (bare["aa_overall"], bare["aa_under"], bare["aa_n"], bare["masking"]) == (None,) * 4


# --- srat eval ------------------------------------------------------------------------------


def test_cli_eval_stores_prints_and_indexes(home: Home, srat: Srat) -> None:
    outcome = srat("eval", home.run.id, "--attack", "cw", "--n", "2")
    assert outcome.code == 0, outcome
    assert "CW-inf" in outcome.out and "Per class robust accuracy" in outcome.out
    stored = read_eval(home.run)["cw"]
    assert f"{stored['overall']:.2f}" in outcome.out
    outcome = srat("eval", home.run.id, "--attack", "pgd20", "--n", "1", "--json")
    assert outcome.code == 0, outcome
    assert json.loads(outcome.out) == read_eval(home.run)["pgd20"]
    indexed = SratHome(home.path).index.get(home.run.id)
    assert indexed is not None and indexed["aa_overall"] == home.template.autoattack["overall"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("no-such-run",), "no run 'no-such-run'"),
        (("../x",), "invalid run id"),
        (("RUN", "--attack", "fgsm"), "unknown attack 'fgsm'"),
        (("RUN", "--n", "0"), "--n must be at least 1"),
    ],
)
def test_cli_eval_bad_input_is_one_line_and_writes_nothing(
    home: Home, srat: Srat, args: tuple[str, ...], fragment: str
) -> None:
    before = snapshot(home.path)
    args = tuple(home.run.id if a == "RUN" else a for a in args)
    assert_user_error(srat("eval", *args), fragment)
    assert_unchanged(before, home.path)


def test_cli_eval_refuses_runs_without_checkpoint_or_still_running(home: Home, srat: Srat) -> None:
    fresh = RunDir.create(home.path / "runs", home.run.config(), run_id="never-trained")
    before = snapshot(home.path)
    assert_user_error(srat("eval", fresh.id), "has no checkpoint")
    assert_unchanged(before, home.path)
    # the test process stands in for a live worker
    home.run.write_state(status="running", pid=os.getpid(),
                         pid_start=psutil.Process().create_time())  # fmt: skip
    before = snapshot(home.path)
    assert_user_error(srat("eval", home.run.id), "is running")
    assert_unchanged(before, home.path)


# --- srat runs show / compare / export ------------------------------------------------------


def forge_masking(run: RunDir) -> None:
    """Make the stored AutoAttack result one that suspects gradient masking."""
    aa = read_eval(run)["autoattack"]
    aa["masking"] = {**aa["masking"], "suspected": True, "gap": 30.0}
    store_result(run, "autoattack", aa)
    record_in_index(run, SratHome.from_env().index)


def test_runs_show_displays_the_eval_section(home: Home, srat: Srat) -> None:
    out = srat("runs", "show", home.run.id).out
    assert "Robustness evaluation (eval.json)" in out
    assert "AutoAttack" in out and "PGD-20" in out and "Per class robust accuracy" in out
    aa = home.template.autoattack
    assert f"{aa['overall']:.2f}" in out
    doc = json.loads(srat("runs", "show", home.run.id, "--json").out)
    assert doc["eval"] == read_eval(home.run)
    forge_masking(home.run)
    assert "gradient masking suspected" in srat("runs", "show", home.run.id).out


def test_a_pgd_of_other_than_20_steps_is_named_by_its_steps(home: Home, srat: Srat) -> None:
    # the run's own evaluation PGD runs eval.steps: with 3, nothing may read "PGD-20"
    short = RunDir(home.path / "runs" / "short-pgd")
    shutil.copytree(home.run.path, short.path)
    (short.path / "eval.json").unlink()
    doc = json.loads((short.path / "config.json").read_text())
    doc["config"]["eval"]["steps"] = 3
    (short.path / "config.json").write_text(json.dumps(doc))
    record_in_index(short, SratHome(home.path).index)
    done = srat("eval", short.id, "--n", "1", "--device", "cpu")
    assert done.code == 0, done.err
    assert f"evaluating {short.id}: PGD-3 on 1 per class" in done.err
    assert f"PGD-3 on run {short.id}" in done.out and "PGD-20" not in done.out
    assert read_eval(short)["pgd20"]["params"]["steps"] == 3
    assert "PGD-20" not in srat("runs", "show", short.id).out.split("Robustness evaluation")[1]
    md = srat("runs", "export", short.id, "--attack", "pgd20").out
    assert "Rob overall [PGD-3]" in md
    # another seed of it evaluated on 2 examples per class, not 1: averaged, and warned of
    other = RunDir(home.path / "runs" / "short-pgd-seed")
    shutil.copytree(short.path, other.path)
    doc["config"]["seed"] += 1
    (other.path / "config.json").write_text(json.dumps(doc))
    assert srat("eval", other.id, "--n", "2", "--device", "cpu").code == 0
    record_in_index(other, SratHome(home.path).index)
    mixed = srat("runs", "export", short.id, other.id, "--attack", "pgd20")
    assert (f"warning: the pgd20 results averaged for CE ({short.id}, {other.id}) are "
            "of different numbers of test examples (10, 20): evaluate them with one --n"
            ) in mixed.err_lines  # fmt: skip
    # beside a run whose PGD ran 20 steps, the table names both
    both = srat("runs", "compare", home.run.id, short.id, "--attack", "pgd20").out
    assert "[PGD-20 / PGD-3]" in both


def test_compare_and_export_use_the_stored_attack(home: Home, srat: Srat) -> None:
    other = RunDir(home.path / "runs" / "other-run")
    shutil.copytree(home.run.path, other.path)
    (other.path / "eval.json").unlink()
    record_in_index(other, SratHome(home.path).index)
    forge_masking(home.run)
    aa = home.template.autoattack
    out = srat("runs", "compare", home.run.id, other.id, "--attack", "autoattack").out
    assert "Rob overall [AutoAttack]" in out and "SUSPECTED" in out
    row = next(line for line in out.splitlines() if line.startswith(f"│ {home.run.id}"))
    assert f"{aa['overall']:.2f}" in row
    md = srat("runs", "export", home.run.id, "--attack", "autoattack").out
    assert "Rob overall [AutoAttack]" in md and f"{aa['overall']:.2f} (!)" in md
    # a copy without eval.json, as another seed, joins its group: its robust cells are one
    # run short, and said
    doc = json.loads((other.path / "config.json").read_text())
    doc["config"]["seed"] = doc["config"]["seed"] + 1
    (other.path / "config.json").write_text(json.dumps(doc))
    record_in_index(other, SratHome(home.path).index)
    both = srat("runs", "export", home.run.id, other.id, "--attack", "autoattack")
    assert f"{aa['overall']:.2f} (n=1) (!)" in both.out
    assert (f"1 run(s) without a stored autoattack result, left out of the robust columns "
            f"(srat eval ID --attack autoattack): {other.id}") in both.err_lines  # fmt: skip
    assert "gradient masking suspected" in md
    csv_text = srat("runs", "export", home.run.id, "--format", "csv").out
    header, row_text = csv_text.splitlines()[:2]
    assert header.endswith("robust_attack,masking_suspected")
    assert row_text.endswith("PGD-20 (training),1")
    assert "aa" in srat("runs", "ls").out.splitlines()[0].split()
    assert_user_error(srat("runs", "export", "--attack", "fgsm"), "unknown attack")


# --- the best epoch's checkpoint (best.pt) ---------------------------------------------------


def test_eval_of_best_pt_reproduces_the_best_epochs_robust_accuracy(home: Home) -> None:
    """`--n` = eval.robust_per_class and the best checkpoint: the very examples, seed and weights
    of the best epoch's own robust evaluation; stored beside the last checkpoint's result."""
    from srat_engine.runs.records import best_epoch

    best = best_epoch(home.run.metrics(), 10)
    assert best is not None
    result = evaluate_run(home.run, "pgd20", 5, "cpu", checkpoint="best")
    assert result["checkpoint"] == "best" and result["checkpoint_epoch"] == best["epoch"]
    assert result["overall"] == best["rob_overall"] and result["class"] == best["rob_class"]
    stored = read_eval(home.run)
    assert stored["pgd20@best"]["overall"] == result["overall"]
    assert stored["pgd20"] == home.template.pgd20  # the last checkpoint's entry is kept


def test_eval_checkpoint_best_on_the_command_line(home: Home, srat: Srat) -> None:
    from srat_engine.runs.records import best_epoch

    best = best_epoch(home.run.metrics(), 10)
    assert best is not None
    done = srat("eval", home.run.id, "--n", "5", "--checkpoint", "best", "--device", "cpu")
    assert done.code == 0, done.err
    assert f"best epoch {best['epoch']} (chosen by PGD on the test set)" in done.out
    assert "PGD-20 (best epoch)" in done.out and "best-epoch checkpoint" in done.err
    shown = srat("runs", "show", home.run.id).out
    assert "PGD-20 (best epoch)" in shown and "AutoAttack" in shown
    assert f"best     epoch {best['epoch']}, robust {best['rob_overall']:.2f}" in shown
    assert "its weights in checkpoints/best.pt" in shown
    home.run.best_checkpoint_path.unlink()
    assert "no best.pt kept" in srat("runs", "show", home.run.id).out
    before = snapshot(home.path)
    assert_user_error(srat("eval", home.run.id, "--checkpoint", "first"), "last or best")
    assert_unchanged(before, home.path)


def test_eval_checkpoint_best_refuses_a_missing_or_mismatched_best_pt(
    home: Home, srat: Srat
) -> None:
    from srat_engine.training.checkpoint import load_checkpoint, save_checkpoint

    path = home.run.best_checkpoint_path
    state = load_checkpoint(path)
    save_checkpoint(path, {**state, "epoch": state["epoch"] - 1})  # not the records' best
    before = snapshot(home.path)
    outcome = srat("eval", home.run.id, "--checkpoint", "best", "--device", "cpu")
    assert_user_error(outcome, f"best.pt holds epoch {state['epoch'] - 1}", "--checkpoint last")
    assert_unchanged(before, home.path)
    path.unlink()
    before = snapshot(home.path)
    outcome = srat("eval", home.run.id, "--checkpoint", "best", "--device", "cpu")
    assert_user_error(outcome, "kept no best-epoch checkpoint", "train.keep_best")
    assert_unchanged(before, home.path)
