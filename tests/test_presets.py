"""Presets: the paper's grid (Tables 1-4), short names, digits presets, `extends`, patterns."""

from __future__ import annotations

import csv
import json
import re
from functools import cache
from pathlib import Path

import pytest

import srat_engine.config.presets as presets_module
from srat_engine.config.methods import METHODS, PAPER_METHODS
from srat_engine.config.prepare import prepare
from srat_engine.config.presets import (
    describe,
    expand_patterns,
    list_presets,
    load_preset,
    preset_path,
)
from srat_engine.config.resolve import resolve
from srat_engine.config.schema import RunConfig, validate_config
from srat_engine.errors import SratError
from srat_engine.runs.home import Home

REPO = Path(__file__).resolve().parent.parent
PRESET_DIR = REPO / "presets"
PAPER_CSV = REPO / "srat_engine" / "reporting" / "paper_results.csv"
GRID_NAME = re.compile(r"(cifar10|svhn)-(exp|step)(\d+)-([a-z-]+)")


def paper_rows() -> list[dict[str, str]]:
    with PAPER_CSV.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def grid_name(row: dict[str, str]) -> str:
    ratio = int(float(row["ratio"]))
    return f"{row['dataset']}-{row['imbalance']}{ratio}-{row['method'].lower()}"


def env_dirs() -> list[Path]:
    """The preset search path as an edge builds it: $SRAT_PRESETS, the test's home, the
    repository's presets."""
    return Home.from_env().preset_dirs


@cache
def preset_config(name: str) -> RunConfig:
    return validate_config(load_preset(name, env_dirs()))


def write_preset(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def user_presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An extra preset directory on SRAT_PRESETS, searched before the repository's."""
    directory = tmp_path / "user-presets"
    directory.mkdir()
    monkeypatch.setenv("SRAT_PRESETS", str(directory))
    return directory


# --- the paper grid ------------------------------------------------------------------------


def test_paper_results_cover_the_full_grid() -> None:
    rows = paper_rows()
    keys = {(r["dataset"], r["imbalance"], float(r["ratio"]), r["method"]) for r in rows}
    assert len(rows) == len(keys) == 88
    assert {r["method"] for r in rows} == set(PAPER_METHODS)
    assert {(r["dataset"], r["imbalance"], int(float(r["ratio"]))) for r in rows} == {
        (d, i, k) for d in ("cifar10", "svhn") for i in ("exp", "step") for k in (10, 100)
    }


def test_every_paper_row_has_exactly_one_grid_preset() -> None:
    names = list_presets(env_dirs())
    wanted = [grid_name(row) for row in paper_rows()]
    missing = [name for name in wanted if name not in names]
    assert missing == []
    assert len(set(wanted)) == 88
    # and no grid-shaped preset outside the paper's rows
    grid_presets = {name for name in names if GRID_NAME.fullmatch(name)}
    assert grid_presets == set(wanted)


@pytest.mark.parametrize("row", paper_rows(), ids=grid_name)
def test_grid_preset_matches_its_paper_row(row: dict[str, str]) -> None:
    config = preset_config(grid_name(row))
    assert config.data.dataset == row["dataset"]
    assert config.data.imbalance == row["imbalance"]
    assert config.data.ratio == float(row["ratio"])
    assert config.method == row["method"]
    # the paper's protocol (Section 5.1)
    assert config.train.epochs == 200
    assert config.train.lr == 0.1
    assert config.train.lr_milestones == [160, 180]
    assert config.train.reweight_epoch == 160
    assert config.model.arch == "resnet18"
    assert config.attack.steps == 10
    assert config.attack.eps == pytest.approx(8 / 255, abs=1e-12)
    assert config.eval.steps == 20
    assert config.eval.eps == pytest.approx(8 / 255, abs=1e-12)
    step = 1 / 255 if row["dataset"] == "svhn" else 2 / 255
    assert config.attack.step_size == pytest.approx(step, abs=1e-12)
    assert config.eval.step_size == pytest.approx(step, abs=1e-12)


def test_no_two_grid_presets_share_a_cell() -> None:
    cells: dict[tuple[str, str, float, str], list[str]] = {}
    for name in list_presets(env_dirs()):
        if GRID_NAME.fullmatch(name):
            c = preset_config(name)
            key = (c.data.dataset, c.data.imbalance, c.data.ratio, c.method)
            cells.setdefault(key, []).append(name)
    assert len(cells) == 88
    assert all(len(names) == 1 for names in cells.values()), cells


# --- short names, demo, digits -------------------------------------------------------------


def test_exp100_ldam_is_srat_ldam_on_cifar10() -> None:
    config = preset_config("exp100-ldam")
    assert config.method == "SRAT-LDAM"
    assert config.data.dataset == "cifar10"
    assert config.data.imbalance == "exp"
    assert config.data.ratio == 100
    assert config.train.epochs == 200


@pytest.mark.parametrize("imbalance", ["exp10", "exp100", "step10", "step100"])
@pytest.mark.parametrize("loss", ["ce", "focal", "ldam"])
def test_short_names_are_srat_on_cifar10(imbalance: str, loss: str) -> None:
    short = preset_config(f"{imbalance}-{loss}")
    full = preset_config(f"cifar10-{imbalance}-srat-{loss}")
    assert short.method == f"SRAT-{'Focal' if loss == 'focal' else loss.upper()}"
    assert short.model_dump(exclude={"name"}) == full.model_dump(exclude={"name"})


def test_demo_preset() -> None:
    config = preset_config("demo")
    assert config.data.dataset == "digits"
    assert config.data.imbalance == "exp"
    assert config.data.ratio == 10
    assert config.method == "SRAT-LDAM"
    assert config.model.arch == "small_cnn"
    assert config.name == "demo"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_digits_preset_for_every_method(method: str) -> None:
    config = preset_config(f"digits-{method.lower()}")
    assert config.method == method
    assert config.data.dataset == "digits"


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in PRESET_DIR.glob("*.toml")), ids=lambda name: name
)
def test_every_preset_file_validates_and_resolves(name: str) -> None:
    config = preset_config(name)
    resolved = resolve(config, Home.from_env().data_dir)
    assert resolved.train_size == sum(resolved.class_counts) > 0
    assert len(resolved.class_weights) == resolved.num_classes


def test_every_preset_file_is_listed_and_bases_are_hidden() -> None:
    on_disk = {p.stem for p in PRESET_DIR.glob("*.toml")}
    assert len(on_disk) == 164  # the 88 grid cells, bases, short names, digits, new baselines
    visible, everything = list_presets(env_dirs()), list_presets(env_dirs(), include_bases=True)
    assert set(everything) == on_disk
    assert set(visible) == {n for n in on_disk if not n.startswith("_")}
    assert list(visible) == sorted(visible)


@pytest.mark.parametrize("name", ["exp100-ldam", "demo", "svhn-step10-ce", "digits-gairat"])
def test_listed_presets_have_a_description(name: str) -> None:
    text = describe(name, env_dirs())
    assert text
    assert "\n" not in text


# --- extends, loops, lookup ----------------------------------------------------------------


def test_extends_merges_nested_tables(user_presets: Path) -> None:
    write_preset(
        user_presets,
        "base-x",
        'extends = "demo"\n[train]\nepochs = 5\nbatch_size = 7\n[loss]\nsep_tau = 0.2\n',
    )
    write_preset(user_presets, "child-x", 'extends = "base-x"\n[train]\nepochs = 3\n')
    config = validate_config(load_preset("child-x", env_dirs()))
    assert config.train.epochs == 3  # child wins
    assert config.train.batch_size == 7  # from the middle of the chain
    assert config.loss.sep_tau == 0.2
    assert config.train.weight_decay == 2e-4  # from _digits, two levels up
    assert config.data.dataset == "digits"  # from _digits
    assert config.method == "SRAT-LDAM"  # from digits-srat-ldam
    assert config.name == "child-x"


def test_user_preset_shadows_repository_preset(user_presets: Path) -> None:
    write_preset(user_presets, "demo", 'extends = "_digits"\nmethod = "CE"\n')
    assert validate_config(load_preset("demo", env_dirs())).method == "CE"
    assert preset_path("demo", env_dirs()).parent == user_presets


def test_home_presets_are_searched(srat_home: Path) -> None:
    write_preset(srat_home / "presets", "mine", 'extends = "demo"\n[train]\nepochs = 2\n')
    assert "mine" in list_presets(env_dirs())
    assert validate_config(load_preset("mine", env_dirs())).train.epochs == 2


def test_search_path_and_data_dir_are_parameters(
    tmp_path: Path, srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preset functions and `prepare` use the search path and data folder passed in; the
    environment, pointing elsewhere, is read by `Home.from_env()` (the edges) only."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    write_preset(mine, "only-mine", 'extends = "demo"\ndescription = "mine"\n[train]\nepochs = 4\n')
    write_preset(theirs, "only-theirs", 'extends = "demo"\n')
    write_preset(srat_home / "presets", "demo", 'extends = "_digits"\nmethod = "CE"\n')
    monkeypatch.setenv("SRAT_PRESETS", str(theirs))
    monkeypatch.setenv("SRAT_DATA", str(tmp_path / "their-data"))
    dirs = [mine, PRESET_DIR]
    assert "only-mine" in list_presets(dirs)
    assert "only-theirs" not in list_presets(dirs, include_bases=True)
    assert expand_patterns(["only-*"], dirs) == ["only-mine"]
    assert describe("only-mine", dirs) == "mine"
    assert preset_path("demo", dirs) == PRESET_DIR / "demo.toml"  # not the home's shadow
    with pytest.raises(SratError, match="unknown preset"):
        load_preset("only-theirs", dirs)
    prepared = prepare(preset="only-mine", preset_dirs=dirs, data_dir=tmp_path / "my-data")
    assert prepared.config.method == "SRAT-LDAM"  # demo from `dirs`, not the home's CE
    assert prepared.config.train.epochs == 4
    assert prepared.resolved.data_root == str(tmp_path / "my-data")


def test_extends_loop_is_an_error(user_presets: Path) -> None:
    write_preset(user_presets, "loop-a", 'extends = "loop-b"\n')
    write_preset(user_presets, "loop-b", 'extends = "loop-a"\n')
    with pytest.raises(SratError, match="loop") as caught:
        load_preset("loop-a", env_dirs())
    message = str(caught.value)
    assert "loop-a" in message
    assert "loop-b" in message
    assert "\n" not in message


def test_self_extends_is_an_error(user_presets: Path) -> None:
    write_preset(user_presets, "selfish", 'extends = "selfish"\n')
    with pytest.raises(SratError, match="loop"):
        load_preset("selfish", env_dirs())


def test_describe_terminates_on_a_loop(user_presets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_preset(user_presets, "loop-c", 'extends = "loop-d"\n')
    write_preset(user_presets, "loop-d", 'extends = "loop-c"\n')
    real_read = presets_module.read_toml
    calls = 0

    def guarded_read(path: Path) -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls > 50:
            raise RuntimeError("describe() is looping")
        return real_read(path)

    monkeypatch.setattr(presets_module, "read_toml", guarded_read)
    try:
        text = describe("loop-c", env_dirs())
    except SratError as err:
        assert "loop" in str(err)
    else:
        assert isinstance(text, str)


def test_unknown_extends_target_is_an_error(user_presets: Path) -> None:
    write_preset(user_presets, "orphan", 'extends = "no-such-base"\n')
    with pytest.raises(SratError, match="no-such-base"):
        load_preset("orphan", env_dirs())


def test_non_string_extends_is_an_error(user_presets: Path) -> None:
    write_preset(user_presets, "weird", "extends = 3\n")
    with pytest.raises(SratError, match="extends"):
        load_preset("weird", env_dirs())


def test_invalid_toml_preset_is_one_line_error(user_presets: Path) -> None:
    write_preset(user_presets, "broken", "[train\nepochs = \n")
    with pytest.raises(SratError, match="not valid TOML") as caught:
        load_preset("broken", env_dirs())
    assert "\n" not in str(caught.value)


def test_unknown_preset_suggests() -> None:
    with pytest.raises(SratError) as caught:
        load_preset("exp100-ldma", env_dirs())
    message = str(caught.value)
    assert "did you mean" in message
    assert "exp100-ldam" in message
    assert "\n" not in message


def test_load_preset_returns_a_fresh_dict() -> None:
    first = load_preset("demo", env_dirs())
    first["train"]["epochs"] = 1
    assert load_preset("demo", env_dirs())["train"]["epochs"] == 30


# --- patterns -------------------------------------------------------------------------------


def test_expand_exp100_pattern() -> None:
    assert expand_patterns(["exp100-*"], env_dirs()) == ["exp100-ce", "exp100-focal", "exp100-ldam"]


def test_expand_grid_pattern_and_plain_names() -> None:
    names = expand_patterns(["svhn-step10-*"], env_dirs())
    assert len(names) == 11
    assert all(name.startswith("svhn-step10-") for name in names)
    assert expand_patterns(["demo", "exp100-ldam", "demo"], env_dirs()) == ["demo", "exp100-ldam"]
    assert expand_patterns(["exp100-ldam", "exp100-*"], env_dirs()) == [
        "exp100-ldam",
        "exp100-ce",
        "exp100-focal",
    ]


def test_patterns_do_not_match_bases() -> None:
    with pytest.raises(SratError):
        expand_patterns(["_*"], env_dirs())


@pytest.mark.parametrize("pattern", ["imagenet-*", "exp1000-?"])
def test_unknown_pattern_is_an_error(pattern: str) -> None:
    with pytest.raises(SratError, match="no preset matches"):
        expand_patterns([pattern], env_dirs())


def test_unknown_plain_name_in_patterns_is_an_error() -> None:
    with pytest.raises(SratError, match="did you mean"):
        expand_patterns(["exp100-ldm"], env_dirs())


def test_synthetic_stand_in_keeps_a_cifar_presets_class_counts() -> None:
    """`--set data.dataset=synthetic` times a CIFAR-10 preset offline with its exact counts."""
    real = validate_config(load_preset("cifar10-exp100-ce", env_dirs()))
    raw = load_preset("cifar10-exp100-ce", env_dirs())
    raw["data"]["dataset"] = "synthetic"
    stand_in = validate_config(raw)
    counts = resolve(stand_in, Home.from_env().data_dir).class_counts
    assert counts == resolve(real, Home.from_env().data_dir).class_counts
    assert sum(counts) == 12406  # the paper's CIFAR-10 Exp-100 training set


# --- own CIFAR-100-LT protocols ------------------------------------------------------------

# each method's own CIFAR-100 preset and its CIFAR-10 counterpart (TRADES and TAET publish no
# CIFAR-100 protocol)
CIFAR100_OWN = {
    "at-bsl-cifar100-ir50": "at-bsl-cifar10-ir50",
    "at-bsl-aua-cifar100-ir50": "at-bsl-aua-cifar10-ir50",
    "at-bsl-ra-cifar100-ir50": "at-bsl-ra-cifar10-ir50",
    "at-bsl-cbudget-cifar100-ir50": "at-bsl-cbudget-cifar10-ir50",
    "reat-cifar100-ir50": "reat-cifar10-ir50",
    "robal-cifar100-ir50": "robal-cifar10-ir50",
    "awp-cifar100-ir50": "awp-cifar10-ir50",
    "trades-awp-cifar100-ir50": "trades-awp-cifar10-ir50",
}


def test_own_cifar100_presets_are_exactly_these() -> None:
    names = {n for n in list_presets(env_dirs()) if n.endswith("-cifar100-ir50")}
    assert names == set(CIFAR100_OWN)


@pytest.mark.parametrize("name", sorted(CIFAR100_OWN), ids=lambda name: name)
def test_own_cifar100_preset_is_cifar100_lt_exp50(name: str) -> None:
    config = preset_config(name)
    counterpart = preset_config(CIFAR100_OWN[name])
    resolved = resolve(config, Home.from_env().data_dir)
    assert config.data.dataset == "cifar100"
    assert (config.data.imbalance, config.data.ratio) == ("exp", 50)
    assert resolved.num_classes == 100
    assert resolved.class_counts[0] == 500
    assert resolved.class_counts[-1] == 10  # 500 / 50
    assert config.method == counterpart.method
    assert config.data.policy == counterpart.data.policy


def test_robal_cifar100_is_the_references_robal_n() -> None:
    """configs/CIFAR100_LT/cifar100_LT0.1_pgdat_robal_N_{train,eval}.yaml (wutong16)."""
    config = preset_config("robal-cifar100-ir50")
    robal = config.robal
    assert (robal.margin, robal.tau_m, robal.tau_b, robal.tau_p) == (0.2, 0.0, 0.0, 1.5)
    assert (robal.scale, robal.gamma) == (10.0, 0.03125)
    assert config.loss.trades_beta == 3.0
    assert (config.train.epochs, config.train.batch_size, config.train.weight_decay) == (
        80,
        64,
        2e-4,
    )
    assert config.train.lr_milestones == [59, 74]
    assert config.attack.steps == 5
    assert config.model.arch == "wrn34_10"


def test_class_budget_cifar100_is_robustlts() -> None:
    """configs/cifar100lf/robustlt_atbsl_cifar100.yaml: alpha 0.4, beta 0.6 of 100 epochs."""
    config = preset_config("at-bsl-cbudget-cifar100-ir50")
    assert config.attack.class_budget
    assert config.attack.budget_alpha == 0.4
    assert config.attack.budget_warmup == 60
    assert config.attack.budget_warmup_start == "zero"
    assert config.loss.prior_tau == 1.0
    assert config.model.arch == "wrn28_10"
    assert config.train.lr_milestones == [75, 90]
    budgets = resolve(config, Home.from_env().data_dir).class_budgets
    assert budgets is not None
    # the head class (n_c = n_max) gets (1 - alpha) eps = 0.6 * 8/255
    assert budgets[0] == pytest.approx(4.8 / 255, abs=1e-9)


def test_at_bsl_and_reat_cifar100_schedules() -> None:
    """train_at_bsl_cifar100.py (README: --arch wrn) and REAT's train.py --dataset cifar100."""
    at_bsl = preset_config("at-bsl-cifar100-ir50")
    assert at_bsl.model.arch == "wrn34_10"
    assert (at_bsl.train.epochs, at_bsl.train.weight_decay) == (100, 5e-4)
    assert at_bsl.train.lr_milestones == [74, 89]
    reat = preset_config("reat-cifar100-ir50")
    assert reat.model.arch == "resnet18"
    assert (reat.train.epochs, reat.train.weight_decay) == (80, 5e-4)
    assert reat.train.lr_milestones == [60, 75]
    assert reat.reat.tfa_weight == 1.0


def test_one_broken_preset_hides_no_other(
    srat_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`srat presets ls` lists every preset, warning about a file that does not parse or
    extends an unknown one (naming that file); running it is one line naming the file."""
    from cli_harness import make_invoker

    srat = make_invoker(capsys, monkeypatch)
    write_preset(srat_home / "presets", "bad", "x = [")
    write_preset(srat_home / "presets", "orphan", 'extends = "nosuch"\n')
    listed = srat("presets", "ls", "--json")
    assert listed.code == 0, listed.err
    rows = {row["name"]: row for row in json.loads(listed.out)}
    assert "demo" in rows and rows["demo"]["description"] and "error" not in rows["demo"]
    orphan = str(srat_home / "presets" / "orphan.toml")
    assert orphan in rows["orphan"]["error"] and "nosuch" in rows["orphan"]["error"]
    assert "bad.toml is not valid TOML" in rows["bad"]["error"]
    assert listed.err.count("warning: ") == 2
    run = srat("run", "--preset", "orphan", "--dry-run")
    assert run.code == 2 and orphan in run.err and "nosuch" in run.err


def test_every_preset_the_readme_and_the_messages_name_exists() -> None:
    # `--preset NAME` or `-p NAME` in README.md, and "e.g. NAME" hints in the engine's
    # messages: a name that no file has sends a reader to an error
    texts = [(REPO / "README.md").read_text()]
    texts += [path.read_text() for path in (REPO / "srat_engine").rglob("*.py")]
    named = set()
    for text in texts:
        named |= set(re.findall(r"(?:--preset|-p) '?([a-z0-9][a-z0-9*-]+)'?", text))
        named |= set(re.findall(r"preset, e\.g\. ([a-z0-9][a-z0-9-]+)", text))
    named -= {"P", "NAME"}
    assert len(named) >= 20  # the patterns still find the README's examples
    dirs = [PRESET_DIR]
    for name in sorted(named):
        assert expand_patterns([name], dirs), name  # raises SratError for an unknown name
