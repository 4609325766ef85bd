"""The new-run form: engine validation inline, method composition, launching detached runs."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import pytest
from fake_runs import prepare_from_env
from rich.console import Console
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Button, Input, Select, Static
from tui_harness import scenario, wait_for

from srat_engine.config.seeds import parse_seeds
from srat_engine.errors import SratError
from srat_engine.jobs.supervisor import kill_run
from srat_engine.runs.home import Home
from srat_engine.runs.index import run_dirs
from srat_engine.runs.liveness import ACTIVE, reconcile
from srat_engine.runs.rundir import RunDir
from srat_tui.render.run import schedule_event, schedule_lines, workload_line
from srat_tui.tui.context import AppContext
from srat_tui.tui.screens.new_run import (
    FORM_KEYS,
    FormValues,
    NewRunScreen,
    form_overrides,
    form_values,
    format_budget,
    owned_keys,
    parse_devices,
    parse_runs_per_device,
    scheme_field_classes,
)
from srat_tui.tui.widgets.confirm import ConfirmModal

FAST = "data.n_max=20 attack.steps=1 eval.steps=1 eval.robust_per_class=2"


class Host(App[None]):
    """The smallest app that shows a screen the way srat's app does: context on the app."""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.result: list[str] | None = None

    def on_mount(self) -> None:
        def done(result: list[str] | None) -> None:
            self.result = result

        self.push_screen(NewRunScreen(), done)


def make_context() -> AppContext:
    fixed = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    return AppContext(Home.from_env(), lambda: fixed, 0.1)


def text_of(static: Static) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(static.content)
    return console.export_text()


def screen_of(app: App[None]) -> NewRunScreen:
    screen = app.screen
    assert isinstance(screen, NewRunScreen)
    return screen


async def settled(pilot: Pilot[None]) -> NewRunScreen:
    """The screen once the current form has been checked."""
    screen = screen_of(pilot.app)

    def checked() -> bool:
        v = screen.validation
        return (
            v is not None
            and v.preset == screen.preset
            and screen._base is not None
            and v.values == screen.read_form()
        )

    await wait_for(pilot, checked)
    return screen


async def set_field(pilot: Pilot[None], field: str, value: str) -> NewRunScreen:
    screen = screen_of(pilot.app)
    widget = screen.query_one(f"#{field}")
    if isinstance(widget, Select):
        widget.value = value
    else:
        assert isinstance(widget, Input)
        widget.value = value
    return await settled(pilot)


async def type_into(pilot: Pilot[None], field: str, text: str) -> NewRunScreen:
    screen = screen_of(pilot.app)
    widget = screen.query_one(f"#{field}", Input)
    widget.value = ""
    widget.focus()
    await pilot.press(*text)
    return await settled(pilot)


@pytest.fixture
def stop_runs() -> Iterator[None]:
    """Kill whatever detached runs a test started, so no worker outlives it."""
    yield
    home = Home.from_env()
    for path in run_dirs(home.runs):
        run = RunDir(path)
        if reconcile(run) in ACTIVE:
            with suppress(SratError):
                kill_run(run, home=home, grace_seconds=5)


def engine_message(*overrides: str) -> str:
    with pytest.raises(SratError) as err:
        prepare_from_env("demo", overrides)
    return str(err.value)


# -- pure helpers ----------------------------------------------------------------------------


def test_parse_seeds_and_devices() -> None:
    assert parse_seeds("0") == [0]
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    assert parse_seeds("3-5 3") == [3, 4, 5]
    for bad in ("", "x", "-1", "5-3"):
        with pytest.raises(SratError, match="seeds"):
            parse_seeds(bad)
    assert parse_devices("cpu").device == "cpu"
    assert parse_devices("cpu").slots == 1
    assert parse_devices("0,1").gpus == "0,1"
    assert parse_devices("all").gpus == "all"
    assert parse_devices("cuda:1").config_device == "cuda:1"
    assert parse_devices("auto") == parse_devices("")


def test_overrides_only_for_changed_fields() -> None:
    base = FormValues("digits", "exp", "10", "ldam", "srat", "1", "0.1", "30", "16/255", "auto")
    assert form_overrides(base, base) == ()
    edited = FormValues("digits", "exp", "50", "ce", "drcb", "1", "0.1", "30", "8/255", "cpu", "",
                        "data.n_max=20 'train.lr_milestones=[1, 2]'")  # fmt: skip
    assert form_overrides(edited, base) == (
        "data.ratio=50",
        "method=DRCB-CE",
        "attack.eps=8/255",
        "eval.eps=8/255",
        'device="cpu"',
        "data.n_max=20",
        "train.lr_milestones=[1, 2]",
    )
    assert format_budget(8 / 255) == "8/255"
    assert format_budget(0.1) == "0.1"


def test_eval_eps_is_the_eps_field_unless_its_own_is_filled() -> None:
    base = FormValues("digits", "exp", "10", "ldam", "srat", "1", "0.1", "30", "16/255", "auto")
    assert form_overrides(replace(base, eps="8/255"), base) == (
        "attack.eps=8/255",
        "eval.eps=8/255",
    )
    assert form_overrides(replace(base, eval_eps="4/255"), base) == ("eval.eps=4/255",)
    # a preset that evaluates with its own budget shows it, and keeps it when eps is edited
    apart = replace(base, eval_eps="4/255")
    assert form_overrides(replace(apart, eps="8/255"), apart) == (
        "attack.eps=8/255",
        "eval.eps=4/255",
    )
    assert form_overrides(replace(apart, eval_eps=""), apart) == ("eval.eps=16/255",)


def test_the_eval_eps_field_is_empty_for_one_budget() -> None:
    same = form_values(prepare_from_env("demo").config)
    assert (same.eps, same.eval_eps) == ("16/255", "")
    apart = form_values(prepare_from_env("demo", ("eval.eps=4/255",)).config)
    assert (apart.eps, apart.eval_eps) == ("16/255", "4/255")


def test_extra_overrides_may_not_set_a_key_with_its_own_field() -> None:
    """One value per key: an extra override of a key a form field sets (or of a whole section
    holding one) is refused with where to set it, whether or not the field was edited."""
    base = FormValues("digits", "exp", "10", "ldam", "srat", "1", "0.1", "30", "16/255", "auto")
    for extra, message in (
        ("train.epochs=5", "train.epochs has its own field"),
        ("seed=3", "seed has its own field"),
        (" method=TRADES", "method has its own field"),
        ("eval.eps=0.1", "eval.eps has its own field"),
        ("device=cpu", "device has its own field"),
        ("'train={epochs=5}'", "train would replace train.epochs, which has its own field"),
    ):
        with pytest.raises(SratError, match=f"^extra overrides: {message}: set it there$"):
            form_overrides(replace(base, extra=f"data.n_max=20 {extra}"), base)
    # other keys of the same sections are the extra field's
    extra = "train.lr=0.2 eval.steps=1 attack.budget_warmup_start=eps"
    assert form_overrides(replace(base, extra=extra), base) == tuple(extra.split())
    # on Slurm the devices field is off: `device` is the extra overrides' to set
    slurm = replace(base, backend="slurm", extra="device=cpu")
    assert form_overrides(slurm, base) == ("device=cpu",)
    assert "device" in owned_keys(base) and "device" not in owned_keys(slurm)


def test_owned_keys_are_every_key_the_form_sets() -> None:
    """The keys the extra overrides may not name come from the table the form's overrides are
    built from: every field edited sets only owned keys, and every owned key but the seed (set
    per run) is set by some edit."""
    base = FormValues("digits", "exp", "10", "ldam", "srat", "1", "0.1", "30", "16/255", "auto")
    edited = replace(
        base,
        scheme="trades",
        loss="ce",
        devices="cpu",
        **{name: "7" for names in FORM_KEYS.values() for name in names
           if name not in ("scheme", "loss", "devices", "seeds")},
    )  # fmt: skip
    keys = [assignment.partition("=")[0] for assignment in form_overrides(edited, base)]
    assert keys == [key for key in owned_keys(edited) if key != "seed"]
    assert {"train.epochs", "method", "attack.eps", "eval.eps", "seed"} <= set(owned_keys(base))


def test_schedule_events_are_shown_as_the_1_based_epochs_they_start() -> None:
    assert schedule_event("x0.01", [160, 180], 200) == "x0.01 from epochs 161, 181"
    assert schedule_event("class-balanced", [0], 200) == "class-balanced from epoch 1"
    assert schedule_event("x0.01", [2, 2], 2) == "x0.01: not within 2 epochs"
    assert schedule_event("x0.01", [1, 5], 2) == "x0.01 from epoch 2 (epoch 6: not within 2 epochs)"
    assert schedule_event("class-balanced", [1], 1) == "class-balanced: not within 1 epoch"
    assert schedule_event("x0.1", [], 30) == "x0.1: never"
    assert schedule_event("", [14], 30) == "from epoch 15"
    # a 5-epoch run of the 200-epoch protocol scales 160 and 180 both onto epoch 5 (0-based 4)
    assert schedule_event("x0.01", [4, 4], 5) == "x0.01 from epoch 5 (twice)"
    assert schedule_event("x0.1", [1, 3, 3, 3], 4) == "x0.1 from epochs 2, 4 (3 times)"
    assert schedule_event("x0.1", [1, 6, 6], 4) == (
        "x0.1 from epoch 2 (epoch 7 (twice): not within 4 epochs)"
    )


def test_dry_run_schedule_of_a_200_and_a_2_epoch_run() -> None:
    """`srat run --dry-run`'s lines: the engine's 0-based milestones and reweight epoch as
    the 1-based epochs they start, and none past the run's last epoch."""
    long = prepare_from_env("exp100-ldam")
    assert long.config.train.epochs == 200 and long.resolved.lr_milestones == [160, 180]
    assert long.resolved.reweight_epoch == 160
    lines = schedule_lines(long)
    assert "lr       x0.01 from epochs 161, 181" in lines
    assert "reweight class-balanced from epoch 161" in lines
    assert "train    200 epochs, batch 128, lr 0.1, auto" in lines
    short = prepare_from_env("demo", ("train.epochs=2",))
    assert short.resolved.lr_milestones == [2, 2] and short.resolved.reweight_epoch == 2
    lines = schedule_lines(short)
    assert "lr       x0.01: not within 2 epochs" in lines
    assert "reweight class-balanced: not within 2 epochs" in lines
    gairat = schedule_lines(prepare_from_env("demo", ("method=GAIRAT",)))
    assert "gair     from epoch 15" in gairat  # GAIRAT's 1-based begin_epoch, scaled to 30
    # TAET's second stage and AWP's start are schedule events too, on the same scale
    taet = prepare_from_env("digits-taet")
    assert taet.resolved.taet_stage2_epoch == 50
    assert "taet     clean CE first; PGD from epoch 51" in schedule_lines(taet)
    awp = prepare_from_env("digits-trades-awp")
    assert awp.resolved.awp_begin_epoch == 6
    assert "awp      weights perturbed (gamma 0.005) from epoch 7" in schedule_lines(awp)
    # what "loss ce" leaves out is said on the method line
    assert schedule_lines(prepare_from_env("digits-trades"))[0].endswith("objective trades")
    bsl = schedule_lines(prepare_from_env("digits-reat"))[0]
    assert bsl.endswith("objective reat, balanced softmax tau=1")
    # budgets of vectors are plain numbers, of images steps of 1/255
    vectors = prepare_from_env("digits-ce", ("data.dataset=gaussian", "model.arch=linear"))
    assert any(line.startswith("attack   PGD-10 eps 0.0627451 step") for line in
               schedule_lines(vectors))  # fmt: skip
    # no attack trains: none is shown, whatever attack.* says
    natural = schedule_lines(prepare_from_env("digits-natural"))
    assert "attack   none: trains on clean inputs" in natural
    assert not any(line.startswith(("taet", "awp")) for line in natural)


# -- the screen ------------------------------------------------------------------------------


@scenario
async def test_default_preset_shows_counts_and_cost() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        assert screen.preset == "demo"
        validation = screen.validation
        assert validation is not None and validation.ok and validation.prepared is not None
        resolved = validation.prepared.resolved
        counts = text_of(screen.query_one("#newrun-counts", Static))
        lines = [line for line in counts.splitlines() if "█" in line]
        assert len(lines) == resolved.num_classes
        for cls, line in enumerate(lines):
            assert f" {resolved.class_counts[cls]:,}" in line
            assert line.rstrip().endswith("*") == (cls in resolved.under_classes)
        cost = text_of(screen.query_one("#newrun-cost", Static))
        assert f"{resolved.train_size:,} training examples × 30 epochs, PGD-10" in cost
        # the engine's count, as the dry run prints it: 2K + 3 forwards per example and epoch
        work = validation.prepared.workload
        assert work is not None and work.train == resolved.train_size * 30 * 23
        assert workload_line(work) in cost and "evaluation" in cost
        assert "SRAT-LDAM" in text_of(screen.query_one("#newrun-method", Static))
        assert not screen.query_one("#launch", Button).disabled
        assert screen.query_one("#scheme", Select).value == "srat"
        assert screen.query_one("#eps", Input).value == "16/255"


@scenario
async def test_the_reason_launch_is_off_is_in_view_at_80x24_however_long_the_form() -> None:
    app = Host(make_context())
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        await set_field(pilot, "backend", "slurm")  # the longest form: its own fields too
        screen = await set_field(pilot, "epochs", "-3")
        await pilot.pause()
        error = screen.query_one("#newrun-error", Static)
        assert error.display and "train.epochs" in text_of(error)
        footer_top = screen.query_one("Footer").region.y
        # it sat below the 24th row, under the preview, with Launch greyed for no seen reason
        assert error.region.y > 0 and error.region.bottom <= footer_top, error.region
        assert screen.query_one("#launch", Button).disabled
        screen = await set_field(pilot, "epochs", "3")
        assert not error.display
        body = screen.query_one("#newrun-body")
        # the body takes the error's rows back at the next layout (later on a loaded machine)
        await wait_for(pilot, lambda: body.region.bottom == footer_top, "the body to grow")


@scenario
async def test_bad_ratio_and_nan_lambda_show_the_engine_message() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await settled(pilot)
        screen = await type_into(pilot, "ratio", "0.5")
        error = screen.query_one("#newrun-error", Static)
        assert error.display
        assert text_of(error).strip() == engine_message("data.ratio=0.5")
        assert screen.query_one("#launch", Button).disabled
        assert not screen.query_one("#newrun-counts", Static).display
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert app.screen is screen and run_dirs(Home.from_env().runs) == []

        screen = await type_into(pilot, "ratio", "10")
        assert not error.display and not screen.query_one("#launch", Button).disabled

        screen = await set_field(pilot, "sep_lambda", "nan")
        assert text_of(error).strip() == engine_message("loss.sep_lambda=nan")
        assert "must be a finite number" in text_of(error)
        assert screen.query_one("#launch", Button).disabled

        screen = await set_field(pilot, "sep_lambda", "1")
        screen = await set_field(pilot, "seeds", "zero")
        assert "seeds" in text_of(error) and screen.query_one("#launch", Button).disabled


@scenario
async def test_loss_and_scheme_compose_the_method() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await settled(pilot)
        screen = await set_field(pilot, "preset", "digits-ce")
        assert screen.query_one("#scheme", Select).value == "none"
        assert screen.query_one("#loss", Select).value == "ce"
        method = screen.query_one("#newrun-method", Static)
        assert "CE" in text_of(method).split()

        screen = await set_field(pilot, "scheme", "srat")
        assert "SRAT-CE" in text_of(method)
        screen = await set_field(pilot, "loss", "ldam")
        assert "SRAT-LDAM" in text_of(method)
        assert screen.validation is not None and screen.validation.prepared is not None
        assert screen.validation.prepared.config.method == "SRAT-LDAM"
        assert screen.validation.prepared.resolved.ldam_margins is not None

        screen = await set_field(pilot, "scheme", "gairat")
        error = text_of(screen.query_one("#newrun-error", Static))
        assert "no method for scheme 'gairat' with loss 'ldam'" in error
        assert screen.query_one("#launch", Button).disabled

        screen = await set_field(pilot, "loss", "ce")
        assert "GAIRAT" in text_of(method)
        cost = text_of(screen.query_one("#newrun-cost", Static))
        assert "GAIR" in cost

        screen = await set_field(pilot, "scheme", "natural")
        cost = text_of(screen.query_one("#newrun-cost", Static))
        assert screen.validation is not None and screen.validation.prepared is not None
        prepared = screen.validation.prepared
        epochs, n = prepared.config.train.epochs, prepared.resolved.train_size
        assert f"{n:,} training examples × {epochs} epochs, natural" in cost
        work = prepared.workload
        assert work is not None and work.train == n * epochs * 3  # no attack: 3 forwards each
        assert workload_line(work) in cost


async def fill_fast_run(pilot: Pilot[None], seeds: str) -> NewRunScreen:
    await settled(pilot)
    await set_field(pilot, "epochs", "1")
    await set_field(pilot, "devices", "cpu")
    await set_field(pilot, "seeds", seeds)
    screen = await set_field(pilot, "extra", FAST)
    validation = screen.validation
    assert validation is not None and validation.ok, validation
    return screen


@scenario
async def test_launch_creates_a_detached_run(stop_runs: None) -> None:
    context = make_context()
    app = Host(context)
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await fill_fast_run(pilot, "3")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is not screen, timeout=30)
        assert app.result is not None and len(app.result) == 1
        (run_id,) = app.result
    run_path = context.runs_root / run_id
    assert [p.name for p in run_dirs(context.runs_root)] == [run_id]
    config = RunDir(run_path).config()["config"]
    assert config["seed"] == 3 and config["train"]["epochs"] == 1
    assert config["device"] == "cpu" and config["data"]["n_max"] == 20
    assert RunDir(run_path).launch_record()["devices"] == ["cpu"]
    status = wait_status(run_path, {"running", "finished"}, timeout=40)
    assert status in ("running", "finished")
    record = context.index.get(run_id)
    assert record is not None and record["seed"] == 3


def wait_status(path: Path, wanted: set[str], timeout: float) -> str:
    run = RunDir(path)
    deadline = time.monotonic() + timeout
    while True:
        status = run.state().get("status", "")
        if status in wanted:
            return status
        if status in ("failed", "dead") or time.monotonic() > deadline:
            raise AssertionError(f"run status {status}: {(path / 'output.log').read_text()}")
        time.sleep(0.1)


@scenario
async def test_two_seeds_launch_two_runs(stop_runs: None) -> None:
    context = make_context()
    app = Host(context)
    async with app.run_test(size=(120, 50)) as pilot:
        await fill_fast_run(pilot, "0,1")
        await pilot.click("#launch")
        await wait_for(pilot, lambda: app.result is not None, timeout=30)
    assert app.result is not None and len(app.result) == 2
    seeds = sorted(RunDir(context.runs_root / r).config()["config"]["seed"] for r in app.result)
    assert seeds == [0, 1]
    for run_id in app.result:
        assert context.index.get(run_id) is not None


@scenario
async def test_a_dataset_not_on_disk_is_an_error_under_the_form() -> None:
    """CIFAR-10 offline without its files: a launch would refuse it, so the form says so."""
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        assert screen.validation is not None and screen.validation.ok  # digits: no files
        screen = await set_field(pilot, "dataset", "cifar10")
        validation = screen.validation
        assert validation is not None and not validation.ok
        assert validation.error is not None and "CIFAR-10 not found" in validation.error
        assert screen.query_one("#launch", Button).disabled


@scenario
async def test_escape_goes_back_without_launching() -> None:
    app = Host(make_context())
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, NewRunScreen)
        assert run_dirs(Home.from_env().runs) == []


@scenario
async def test_escape_asks_before_it_discards_edits() -> None:
    app = Host(make_context())
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await settled(pilot)
        assert not screen.edited
        await set_field(pilot, "epochs", "7")
        assert screen.edited
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        assert "Discard the edits" in app.screen.message  # type: ignore[attr-defined]
        await pilot.press("n")  # keep editing: the form is back as it was
        await wait_for(pilot, lambda: app.screen is screen, "the form again")
        assert screen.query_one("#epochs", Input).value == "7"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: not isinstance(app.screen, (NewRunScreen, ConfirmModal)))
        assert run_dirs(Home.from_env().runs) == []


@scenario
async def test_a_new_preset_is_no_edit_to_ask_about() -> None:
    app = Host(make_context())
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        screen = await set_field(pilot, "preset", "digits-ce")
        assert screen.query_one("#scheme", Select).value == "none"  # the new preset's values
        assert not screen.edited
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen), "the way out")
        assert not isinstance(app.screen, ConfirmModal)


@scenario
async def test_in_srat_app() -> None:
    module = pytest.importorskip("srat_tui.tui.app")
    app = module.SratApp(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
        await pilot.pause(0.2)
        app.open_new_run()
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        screen = await settled(pilot)
        assert screen.validation is not None and screen.validation.ok
        # q neither quits the app from the form (its edits would be lost) nor types anywhere
        screen.set_focus(None)
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app.is_running and app.screen is screen
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
        await pilot.press("q")  # from the runs list q quits
        await pilot.pause(0.2)
        assert app.return_code == 0 and not app.is_running


@scenario
async def test_trades_and_bsl_schemes_show_their_own_field_and_set_it() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        beta, prior = screen.query_one("#trades_beta", Input), screen.query_one("#prior_tau", Input)
        assert not beta.display and not prior.display  # demo is SRAT-LDAM
        await set_field(pilot, "loss", "ce")
        screen = await set_field(pilot, "scheme", "trades")
        assert beta.display and not prior.display and beta.value == "6"
        screen = await set_field(pilot, "trades_beta", "3")
        validation = screen.validation
        assert validation is not None and validation.ok, validation
        assert "method=TRADES" in validation.overrides
        assert "loss.trades_beta=3" in validation.overrides
        screen = await set_field(pilot, "trades_beta", "-1")
        assert screen.validation is not None and not screen.validation.ok
        screen = await set_field(pilot, "scheme", "bsl")
        assert prior.display and not beta.display
        screen = await set_field(pilot, "trades_beta", "6")
        screen = await set_field(pilot, "prior_tau", "0.5")
        validation = screen.validation
        assert validation is not None and validation.ok, validation
        assert {"method=AT-BSL", "loss.prior_tau=0.5"} <= set(validation.overrides)


@scenario
async def test_awp_schemes_show_gamma_and_trades_awp_also_beta() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        gamma, beta = screen.query_one("#awp_gamma", Input), screen.query_one("#trades_beta", Input)
        assert not gamma.display
        await set_field(pilot, "loss", "ce")
        screen = await set_field(pilot, "scheme", "trades-awp")
        assert gamma.display and beta.display
        screen = await set_field(pilot, "awp_gamma", "0.01")
        validation = screen.validation
        assert validation is not None and validation.ok, validation
        assert {"method=TRADES-AWP", "awp.gamma=0.01"} <= set(validation.overrides)
        screen = await set_field(pilot, "scheme", "awp")
        assert gamma.display and not beta.display


# -- the newer methods' own fields and the class-wise budget --------------------------------


def test_scheme_field_classes_follow_the_methods() -> None:
    expected = {
        "none": set(),
        "srat": {"-sep"},  # lambda and tau; the paper's protocol: one budget
        "natural": set(),  # no attack, no budget
        "gairat": {"-budget"},
        "trades": {"-trades", "-budget"},
        "bsl": {"-bsl", "-budget"},
        "awp": {"-awp", "-budget"},
        "trades-awp": {"-trades", "-awp", "-budget"},
        "taet": {"-taet", "-budget"},
        "reat": {"-bsl", "-reat", "-budget"},  # REAT's balanced softmax takes loss.prior_tau
        "robal": {"-trades", "-robal", "-budget"},  # RoBal's KL term takes loss.trades_beta
    }
    for scheme, classes in expected.items():
        assert scheme_field_classes(scheme, False) == classes, scheme
        on = scheme_field_classes(scheme, True)
        assert on == classes | {"-budget", "-budget-on"}, scheme


class Case(NamedTuple):
    """One field: its `--set` key, the value the preset fills in, a valid edit and the value it
    gives the config, an invalid one (None for a select, which offers valid values only)."""

    field: str
    key: str
    prefilled: str
    good: str
    expected: object
    bad: str | None


async def check_field(pilot: Pilot[None], case: Case, fixed: tuple[str, ...]) -> None:
    """The field is shown with the preset's value and adds no override untouched; `bad` shows
    the engine's own message and launches nothing; `good` adds exactly its `--set` (after the
    form's `fixed` ones) and reaches the config; the preset's value again removes it."""
    screen = screen_of(pilot.app)
    widget = screen.query_one(f"#{case.field}")
    assert isinstance(widget, Input | Select)
    assert widget.display and widget.value == case.prefilled, case
    assert screen.validation is not None and screen.validation.overrides == fixed
    error = screen.query_one("#newrun-error", Static)
    if case.bad is not None:
        screen = await set_field(pilot, case.field, case.bad)
        message = engine_message(*fixed, f"{case.key}={case.bad}")
        assert error.display and text_of(error).strip() == message
        assert screen.query_one("#launch", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert pilot.app.screen is screen and run_dirs(Home.from_env().runs) == []
    screen = await set_field(pilot, case.field, case.good)
    validation = screen.validation
    assert validation is not None and validation.ok and validation.prepared is not None, case
    assert validation.overrides == (*fixed, f"{case.key}={case.good}")
    value = functools.reduce(getattr, case.key.split("."), validation.prepared.config)
    assert value == case.expected
    screen = await set_field(pilot, case.field, case.prefilled)
    assert screen.validation is not None and screen.validation.overrides == fixed


def shown(screen: NewRunScreen, *fields: str) -> list[bool]:
    return [screen.query_one(f"#{field}").display for field in fields]


TAET_REAT = ("taet_stage1_epochs", "reat_tfa_weight", "reat_tfa_mode")
ROBAL = tuple(f"robal_{name}" for name in ("scale", "gamma", "margin", "tau_m", "tau_b", "tau_p"))
BUDGET = ("class_budget", "budget_alpha", "budget_warmup")


@scenario
async def test_taet_and_reat_schemes_show_and_check_their_fields() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        assert not any(shown(screen, *TAET_REAT, *ROBAL, *BUDGET))  # demo: SRAT-LDAM
        await set_field(pilot, "loss", "ce")
        screen = await set_field(pilot, "scheme", "taet")
        assert shown(screen, *TAET_REAT, "prior_tau") == [True, False, False, False]
        stage1 = Case("taet_stage1_epochs", "taet.stage1_epochs", "80", "5", 5, "-1")
        await check_field(pilot, stage1, ("method=TAET",))
        screen = await set_field(pilot, "scheme", "reat")
        assert shown(screen, *TAET_REAT, "prior_tau") == [False, True, True, True]
        for case in (
            Case("reat_tfa_weight", "reat.tfa_weight", "1", "0.5", 0.5, "nan"),
            Case("reat_tfa_mode", "reat.tfa_mode", "reference", "pairwise", "pairwise", None),
        ):
            await check_field(pilot, case, ("method=REAT",))


@scenario
async def test_robal_scheme_shows_and_checks_its_fields() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await settled(pilot)
        await set_field(pilot, "scheme", "robal")  # no RoBal with LDAM: the engine says so
        screen = await set_field(pilot, "loss", "robal")
        assert all(shown(screen, *ROBAL, "trades_beta")) and not any(shown(screen, *TAET_REAT))
        for name, prefilled, good, bad in (
            ("scale", "10", "20", "0"),
            ("gamma", "0.03125", "0", "-1"),
            ("margin", "0.1", "0.2", "nan"),
            ("tau_m", "0", "0.3", "-.1"),
            ("tau_b", "1.2", "1.5", "inf"),
            ("tau_p", "0.1", "0", "-1"),
        ):
            case = Case(f"robal_{name}", f"robal.{name}", prefilled, good, float(good), bad)
            await check_field(pilot, case, ("method=RoBal",))


@scenario
async def test_class_budget_prefilled_from_the_preset_and_checked() -> None:
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await settled(pilot)
        screen = await set_field(pilot, "preset", "digits-at-bsl-cbudget")
        assert all(shown(screen, *BUDGET))
        for case in (
            Case("budget_alpha", "attack.budget_alpha", "0.3", "0.4", 0.4, "1.5"),
            Case("budget_warmup", "attack.budget_warmup", "160", "40", 40, "-1"),
            Case("class_budget", "attack.class_budget", "true", "false", False, None),
        ):
            await check_field(pilot, case, ())
        screen = await set_field(pilot, "class_budget", "false")
        assert shown(screen, *BUDGET) == [True, False, False]
        # the paper's schemes offer the switch only while it is on
        screen = await set_field(pilot, "scheme", "srat")
        assert not any(shown(screen, *BUDGET))


@scenario
async def test_launched_run_has_the_new_fields_overrides(stop_runs: None) -> None:
    context = make_context()
    app = Host(context)
    async with app.run_test(size=(120, 50)) as pilot:
        await fill_fast_run(pilot, "0")
        await set_field(pilot, "scheme", "robal")
        await set_field(pilot, "loss", "robal")
        await set_field(pilot, "robal_tau_b", "1.5")
        screen = await set_field(pilot, "class_budget", "true")
        assert all(shown(screen, "budget_alpha", "budget_warmup"))
        screen = await set_field(pilot, "budget_alpha", "0.4")
        screen = await set_field(pilot, "eval_eps", "4/255")
        assert screen.validation is not None and screen.validation.ok, screen.validation
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.result is not None, timeout=30)
    assert app.result is not None and len(app.result) == 1
    config = RunDir(context.runs_root / app.result[0]).config()["config"]
    assert config["method"] == "RoBal" and config["robal"]["tau_b"] == 1.5
    assert config["attack"]["class_budget"] is True and config["attack"]["budget_alpha"] == 0.4
    assert config["robal"]["scale"] == 10.0 and config["attack"]["budget_warmup"] == 0
    assert config["eval"]["eps"] == 4 / 255 and config["attack"]["eps"] == 16 / 255
    # the run trains with them (one tiny epoch): waiting is quicker than killing it mid-import
    assert wait_status(context.runs_root / app.result[0], {"finished"}, timeout=60) == "finished"


def test_parse_runs_per_device() -> None:
    assert [parse_runs_per_device(text) for text in ("", " ", "1", "4", " 2 ")] == [1, 1, 1, 4, 2]
    for bad in ("0", "-1", "2.5", "x", "²"):
        with pytest.raises(SratError, match="runs per device is a whole number >= 1"):
            parse_runs_per_device(bad)


async def hidden_for_slurm_then_launched(
    pilot: Pilot[None], field: str, shown: str | None = None
) -> NewRunScreen:
    """`field` (a local placement) hidden with the slurm backend (and `shown` still shown)
    and shown again with the local one; then the form launched (ctrl+s) and closed. The
    form, as it was."""
    await set_field(pilot, "backend", "slurm")
    assert not screen_of(pilot.app).query_one(f"#{field}").display
    if shown is not None:
        assert screen_of(pilot.app).query_one(f"#{shown}").display
    screen = await set_field(pilot, "backend", "local")
    assert screen.query_one(f"#{field}").display
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: pilot.app.screen is not screen, timeout=30)
    return screen


@scenario
async def test_runs_per_device_packs_the_launched_runs(stop_runs: None) -> None:
    """Two seeds, two at once on the CPU: both launched into two slots (as `srat run --slots
    2`); the field is the local backend's only and says what is wrong with a bad value."""
    context = make_context()
    app = Host(context)
    async with app.run_test(size=(120, 50)) as pilot:
        await fill_fast_run(pilot, "0,1")
        screen = await set_field(pilot, "per_device", "0")
        assert screen.validation is not None and not screen.validation.ok
        error = text_of(screen.query_one("#newrun-error", Static))
        assert "runs per device is a whole number >= 1 (got '0')" in error
        assert screen.query_one("#launch", Button).disabled
        screen = await set_field(pilot, "per_device", "2")
        validation = screen.validation
        assert validation is not None and validation.ok, validation
        assert (validation.devices, validation.per_device) == (("cpu",), 2)
        command = text_of(screen.query_one("#newrun-command", Static))
        assert "--device cpu --slots 2" in command
        # --device sets the config's device: it also printed --set 'device="cpu"'
        assert "device=" not in command and command.count("cpu") == 1, command
        screen = await hidden_for_slurm_then_launched(pilot, "per_device")  # Slurm places runs
        assert app.result is not None and len(app.result) == 2
    for run_id in app.result:
        launch = RunDir(context.runs_root / run_id).launch_record()
        assert (launch["devices"], launch["per_device"]) == (["cpu"], 2)


@scenario
async def test_stack_seeds_launches_one_worker_for_the_seeds(stop_runs: None) -> None:
    """`stack seeds` on: the seeds as one stack (`srat run --seeds 0,1 --stack`), checked as
    the CLI checks it (two seeds or more, a method that stacks), one worker for both."""
    context = make_context()
    app = Host(context)
    async with app.run_test(size=(120, 50)) as pilot:
        await fill_fast_run(pilot, "0")
        screen = await set_field(pilot, "stack", "true")
        assert screen.validation is not None and not screen.validation.ok
        assert "give two or more seeds" in text_of(screen.query_one("#newrun-error", Static))
        await set_field(pilot, "seeds", "0,1")
        await set_field(pilot, "loss", "ce")
        screen = await set_field(pilot, "scheme", "trades")
        assert "cannot stack TRADES runs" in text_of(screen.query_one("#newrun-error", Static))
        await set_field(pilot, "loss", "ldam")
        screen = await set_field(pilot, "scheme", "srat")
        validation = screen.validation
        assert validation is not None and validation.ok and validation.stack, validation
        command = text_of(screen.query_one("#newrun-command", Static))
        assert "--seeds 0,1 --stack" in command and "once per seed" not in command
        assert "stacked: one process, one slot" in text_of(screen.query_one("#newrun-cost"))
        # a stack is one Slurm job too: the switch stays for the slurm backend
        await hidden_for_slurm_then_launched(pilot, "per_device", shown="stack")
    assert app.result is not None and len(app.result) == 2
    launches = [RunDir(context.runs_root / run_id).launch_record() for run_id in app.result]
    assert len({launch["pid"] for launch in launches}) == 1
    assert launches[0]["stack"] == app.result


@scenario
async def test_a_repeated_change_to_the_same_preset_keeps_what_was_typed() -> None:
    """Textual posts a Select.Changed for the preset's initial value after mount, which can
    arrive after the preset has loaded and the user has typed: it must not load the preset
    again over the edits (a late reload once reset `loss` under a test's feet)."""
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        preset = screen.query_one("#preset", Select)
        screen = await set_field(pilot, "loss", "ce")
        screen.post_message(Select.Changed(preset, preset.value))
        await pilot.pause(0.3)
        screen = await settled(pilot)
        assert screen.query_one("#loss", Select).value == "ce"
        assert screen.validation is not None and screen.validation.values.loss == "ce"


@scenario
async def test_an_extra_override_of_a_field_is_an_error_under_the_form() -> None:
    """The epochs field at 2 with `train.epochs=5` in the extras (once the extras won: the
    cost said 5 epochs while the field said 2), seeds 0 with `seed=3` (once the field won,
    silently): both refused under the form, with Launch off."""
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        await settled(pilot)
        await set_field(pilot, "epochs", "2")
        screen = await set_field(pilot, "extra", "data.n_max=20 train.epochs=5")
        error = screen.query_one("#newrun-error", Static)
        expected = "extra overrides: train.epochs has its own field: set it there"
        assert error.display and text_of(error).strip() == expected
        assert screen.query_one("#launch", Button).disabled
        assert not screen.query_one("#newrun-cost", Static).display
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and run_dirs(Home.from_env().runs) == []

        screen = await set_field(pilot, "extra", "data.n_max=20")
        assert not error.display and not screen.query_one("#launch", Button).disabled
        assert "× 2 epochs" in text_of(screen.query_one("#newrun-cost", Static))

        await set_field(pilot, "seeds", "0")
        screen = await type_into(pilot, "extra", "seed=3")
        assert text_of(error).strip() == "extra overrides: seed has its own field: set it there"
        assert screen.query_one("#launch", Button).disabled
        assert not screen.query_one("#newrun-command", Static).display


@scenario
async def test_the_form_shows_the_schedule_as_1_based_epochs() -> None:
    """The form's schedule, by the dry run's rule: 2 epochs drop the lr and reweight within
    neither; 200 epochs from epochs 161 and 181, reweighting from 161; 30 (the demo's) from
    25 and 28, as the engine's 0-based [24, 27] start."""
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        cost = text_of(screen.query_one("#newrun-cost", Static))
        assert "lr    ×0.01 from epochs 25, 28" in cost
        assert "weights class-balanced from epoch 25" in cost
        screen = await set_field(pilot, "epochs", "2")
        cost = text_of(screen.query_one("#newrun-cost", Static))
        assert "lr    ×0.01: not within 2 epochs" in cost
        assert "weights class-balanced: not within 2 epochs" in cost
        screen = await set_field(pilot, "epochs", "200")
        cost = text_of(screen.query_one("#newrun-cost", Static))
        assert "lr    ×0.01 from epochs 161, 181" in cost
        assert "weights class-balanced from epoch 161" in cost


@scenario
async def test_lambda_and_tau_show_for_the_separation_loss_only() -> None:
    """lambda and tau set SRAT's separation loss (`MethodSpec.separation`): shown for SRAT,
    hidden for schemes that never use them."""
    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        assert shown(screen, "sep_lambda", "sep_tau") == [True, True]  # demo: SRAT-LDAM
        for scheme in ("none", "drcb", "gairat"):
            screen = await set_field(pilot, "scheme", scheme)
            assert shown(screen, "sep_lambda", "sep_tau") == [False, False], scheme
        await set_field(pilot, "loss", "ce")
        screen = await set_field(pilot, "scheme", "trades")
        assert shown(screen, "sep_lambda", "sep_tau") == [False, False]
        screen = await set_field(pilot, "scheme", "srat")
        assert shown(screen, "sep_lambda", "sep_tau") == [True, True]
        assert screen.validation is not None and screen.validation.ok, screen.validation


@scenario
async def test_the_footer_launch_key_follows_the_check_and_rebuilds_only_on_a_flip() -> None:
    """ctrl+s in the footer is greyed while the form is invalid and live once valid; edits
    that keep it valid leave the footer's keys as they are (it rebuilds them on a refresh)."""
    from textual.widgets._footer import FooterKey

    def launch_key(screen: NewRunScreen) -> FooterKey:
        (key,) = [k for k in screen.query(FooterKey) if k.action == "launch"]
        return key

    app = Host(make_context())
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await settled(pilot)
        await pilot.pause()
        assert not launch_key(screen)._disabled
        screen = await type_into(pilot, "ratio", "0.5")
        await wait_for(pilot, lambda: launch_key(screen)._disabled, "ctrl+s greyed")
        screen = await type_into(pilot, "ratio", "10")
        await wait_for(pilot, lambda: not launch_key(screen)._disabled, "ctrl+s live again")
        await pilot.pause()
        key = launch_key(screen)
        for epochs in ("3", "4", "5"):
            screen = await set_field(pilot, "epochs", epochs)
            await pilot.pause()
        assert launch_key(screen) is key  # valid edits: the same footer key, not rebuilt
