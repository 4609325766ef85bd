"""The `srat` command line: presets, dry runs and the user-error contract (exit 2, one line)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from cli_harness import Result, Srat, make_invoker
from typer.testing import CliRunner

from srat_engine import __version__
from srat_engine.config.presets import list_presets, load_preset, preset_path
from srat_engine.config.schema import RunConfig, validate_config
from srat_engine.errors import SratError
from srat_engine.runs.home import Home
from srat_tui.cli.app import app

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def run_dirs(home: Path) -> list[Path]:
    runs = home / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


def assert_usage_error(result: Result, home: Path) -> None:
    assert result.code == 2, result
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ")
    assert run_dirs(home) == []


# --- the root command ----------------------------------------------------------------------


def test_version_prints_the_engine_version_and_exits_0(srat: Srat) -> None:
    result = srat("--version")
    assert result.code == 0, result.err
    assert result.out == f"srat {__version__}\n"
    assert result.err == ""
    # eager: it answers before a command is parsed, even one that would fail
    assert srat("--version", "run", "--preset", "no-such-preset").out == f"srat {__version__}\n"


def test_help_lists_every_command(srat: Srat) -> None:
    result = srat("--help")
    assert result.code == 0, result.err
    commands = ("run", "presets", "runs", "sweep", "eval", "theory", "bench", "tsne", "curves",
                "figure1", "tui")  # fmt: skip
    listed = {line.strip("│ ").split(" ")[0] for line in result.out.splitlines()}
    assert set(commands) <= listed
    assert "--version" in result.out


@pytest.mark.parametrize("group", [(), ("runs",), ("sweep",), ("presets",)])
def test_command_lists_give_each_command_one_line_where_there_is_room(
    srat: Srat, monkeypatch: pytest.MonkeyPatch, group: tuple[str, ...]
) -> None:
    """A docstring's line breaks do not reach the lists: on a wide terminal every row of the
    Commands panel starts with a command's name (a continuation row would start blank)."""
    monkeypatch.setenv("COLUMNS", "400")
    result = srat(*group, "--help")
    assert result.code == 0, result.err
    panel = result.out.split("Commands")[1].splitlines()[1:]
    rows = [line.strip("│").rstrip() for line in panel if line.startswith("│")]
    assert len(rows) >= 2
    assert all(row[1:2].isalnum() for row in rows), rows


# --- presets ls -----------------------------------------------------------------------------


def test_presets_ls_lists_presets_and_hides_bases(srat: Srat) -> None:
    result = srat("presets", "ls")
    assert result.code == 0, result.err
    first_words = {line.split()[0] for line in result.out.splitlines() if line.strip()}
    assert "exp100-ldam" in first_words
    assert "demo" in first_words
    assert set(list_presets(Home.from_env().preset_dirs)) <= first_words
    assert not any(word.startswith("_") for word in first_words)
    assert "_paper-cifar10" not in result.out
    assert "_digits" not in result.out


def test_presets_ls_prints_one_line_per_preset(srat: Srat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = srat("presets", "ls")
    assert result.code == 0, result.err
    names = [line.split()[0] for line in result.out.splitlines() if line.strip()]
    assert names == list(list_presets(Home.from_env().preset_dirs))


def test_presets_ls_in_a_terminal_cuts_descriptions_to_its_width(
    srat: Srat, monkeypatch: pytest.MonkeyPatch
) -> None:
    piped = srat("presets", "ls", "at-bsl-*").out.splitlines()
    assert max(map(len, piped)) > 100  # whole descriptions, for grep
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich: stdout is a terminal
    monkeypatch.setenv("COLUMNS", "80")
    shown = srat("presets", "ls", "at-bsl-*").out.splitlines()
    assert len(shown) == len(piped)  # still a preset a line
    assert all(len(line) <= 80 for line in shown)
    for whole, cut in zip(piped, shown, strict=True):
        if len(whole) > 80:
            assert cut.endswith("…") and whole.startswith(cut[:-1])
        else:
            assert cut == whole
    assert srat("presets", "ls", "--wide", "at-bsl-*").out.splitlines() == piped


def test_presets_ls_json(srat: Srat) -> None:
    result = srat("presets", "ls", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    names = [row["name"] for row in rows]
    assert names == list(list_presets(Home.from_env().preset_dirs))
    assert not any(name.startswith("_") for name in names)
    demo = next(row for row in rows if row["name"] == "demo")
    assert "digits" in demo["description"]


def test_presets_ls_pattern(srat: Srat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # these rows are short; keep them unwrapped
    result = srat("presets", "ls", "svhn-step10-*")
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if line.strip()]
    assert len(lines) == 11
    assert all(line.startswith("svhn-step10-") for line in lines)
    rows = json.loads(srat("presets", "ls", "--json", "svhn-step10-*").out)
    assert len(rows) == 11
    listed = list_presets(Home.from_env().preset_dirs)
    assert {row["name"] for row in rows} == {n for n in listed if "svhn-step10-" in n}


def test_presets_ls_unknown_pattern(srat: Srat, srat_home: Path) -> None:
    assert_usage_error(srat("presets", "ls", "imagenet-*"), srat_home)


# --- presets show ---------------------------------------------------------------------------


def test_presets_show_prints_valid_complete_toml(srat: Srat) -> None:
    result = srat("presets", "show", "exp100-ldam")
    assert result.code == 0, result.err
    parsed = tomllib.loads(result.out)
    shown = RunConfig.model_validate(parsed)
    assert shown == validate_config(load_preset("exp100-ldam", Home.from_env().preset_dirs))
    assert shown.method == "SRAT-LDAM"
    # complete: every section is written out, not just the preset's own keys
    assert set(parsed) >= {"data", "model", "train", "attack", "eval", "loss", "gair"}
    # and a field left unset (TOML has no null) is named under its table, with what unset means
    lines = result.out.splitlines()
    below = lines[lines.index("[loss]") + 1]
    assert below.startswith("# reduction is unset: mean: (1/N) sum w_i L_i (Eq. 5)")
    assert "reduction" not in parsed["loss"]


def test_presets_show_raw_prints_the_file(srat: Srat) -> None:
    result = srat("presets", "show", "--raw", "exp100-ldam")
    assert result.code == 0, result.err
    path = preset_path("exp100-ldam", Home.from_env().preset_dirs)
    assert result.out == path.read_text(encoding="utf-8")
    assert 'extends = "cifar10-exp100-srat-ldam"' in result.out


def test_presets_show_unknown(srat: Srat, srat_home: Path) -> None:
    result = srat("presets", "show", "exp100-ldma")
    assert_usage_error(result, srat_home)
    assert "did you mean" in result.err


def test_presets_show_multiline_description_stays_toml(
    srat: Srat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "user-presets"
    user.mkdir()
    (user / "multi.toml").write_text(
        'description = """first line\nsecond line"""\nextends = "demo"\n', encoding="utf-8"
    )
    monkeypatch.setenv("SRAT_PRESETS", str(user))
    result = srat("presets", "show", "multi")
    assert result.code == 0, result.err
    assert RunConfig.model_validate(tomllib.loads(result.out)).data.dataset == "digits"


# --- run --dry-run --------------------------------------------------------------------------


def test_dry_run_json_prints_config_and_resolved(srat: Srat, srat_home: Path) -> None:
    result = srat("run", "--preset", "demo", "--dry-run", "--json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    config = RunConfig.model_validate(document["config"])
    assert config == validate_config(load_preset("demo", Home.from_env().preset_dirs))
    resolved = document["resolved"]
    for key in ("class_counts", "class_weights", "ldam_margins", "under_classes"):
        assert key in resolved
    assert len(resolved["class_counts"]) == 10
    counts = resolved["class_counts"]
    assert counts[0] == 124  # smallest digits class (174) less 50 held out for testing
    assert counts[-1] == 12  # floor(124 / 10)
    assert counts == sorted(counts, reverse=True)
    assert resolved["under_classes"] == [5, 6, 7, 8, 9]
    assert sum(resolved["class_weights"]) == pytest.approx(10.0)
    assert max(resolved["ldam_margins"]) == pytest.approx(0.5)
    assert document["source"] == "demo"
    assert run_dirs(srat_home) == []
    assert not (srat_home / "runs").exists()


def test_dry_run_applies_overrides_and_device(srat: Srat, srat_home: Path) -> None:
    result = srat(
        "run",
        "-p",
        "demo",
        "--set",
        "method=cb-reweight",
        "-s",
        "train.epochs=3",
        "--device",
        "cpu",
        "--dry-run",
        "--json",
    )
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert document["config"]["method"] == "CB-Reweight"
    assert document["config"]["train"]["epochs"] == 3
    assert document["config"]["device"] == "cpu"
    assert document["resolved"]["ldam_margins"] is None
    assert document["resolved"]["reweight_epoch"] == 0
    assert run_dirs(srat_home) == []


def test_dry_run_text(srat: Srat, srat_home: Path) -> None:
    result = srat("run", "--preset", "exp100-ldam", "--dry-run")
    assert result.code == 0, result.err
    assert "dry run" in result.out
    assert "SRAT-LDAM" in result.out
    assert "PGD-10" in result.out
    assert "PGD-20" in result.out
    assert run_dirs(srat_home) == []


def test_dry_run_with_config_file(srat: Srat, srat_home: Path, tmp_path: Path) -> None:
    shown = srat("presets", "show", "demo").out
    config_file = tmp_path / "edited.toml"
    config_file.write_text(shown.replace("epochs = 30", "epochs = 4"), encoding="utf-8")
    result = srat("run", "--config", str(config_file), "--dry-run", "--json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert document["config"]["train"]["epochs"] == 4
    assert document["source"] == str(config_file)
    assert run_dirs(srat_home) == []


# --- user errors: exit 2, one line on stderr, nothing created ------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--preset", "exp100-ldma"), "did you mean"),
        (("--preset", "demo", "--set", "data.ratio=-1"), "data.ratio"),
        (("--preset", "demo", "--set", "loss.sep_lambda=nan"), "loss.sep_lambda"),
        (("--preset", "demo", "--set", "loss.sep_tau=-0.1"), "loss.sep_tau"),
        (("--preset", "demo", "--set", "attack.eps=-1"), "attack.eps"),
        (("--preset", "demo", "--set", "attack.eps=8"), "attack.eps=8 is wider than the whole"),
        (("--preset", "demo", "--set", "eval.eps=2"), "budgets are in pixel units (8/255"),
        (("--preset", "demo", "--set", "data.dataset=imagenet"), "data.dataset"),
        (("--preset", "demo", "--set", "method=foo"), "method"),
        (("--preset", "demo", "--set", "loss.sep_lamda=1"), "loss.sep_lambda"),
        (("--preset", "demo", "--set", "noequals"), "key=value"),
        (("--preset", "demo", "--device", "gpu"), "device"),
        (("--preset", "demo", "--set", "data.n_max=1000"), "n_max"),
        (("--preset", "demo", "--set", "train.epochs=true"), "train.epochs: must be a number"),
        (("--preset", "demo", "--set", "data.options.test_per_clas=5"), "accepted: test_per_class"),
        (
            (
                "--preset",
                "demo",
                "--set",
                "data.dataset=synthetic",
                "--set",
                "data.options.classes=1",
            ),
            "option classes must be an integer >= 2",
        ),
        ((), "exactly one"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_run_user_errors(
    srat: Srat, srat_home: Path, args: tuple[str, ...], needle: str, dry_run: bool
) -> None:
    result = srat("run", *args, *(("--dry-run",) if dry_run else ()))
    assert_usage_error(result, srat_home)
    assert needle in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[train\nepochs = \n", "not valid TOML"),
        (b"\xff\xfe\x00garbage", "cannot read"),
        (b"[train]\nepochs = 0\n", "train.epochs"),
        (b"[trian]\nepochs = 1\n", "did you mean train"),
    ],
    ids=["invalid-toml", "not-utf8", "invalid-value", "unknown-section"],
)
def test_run_bad_config_file(
    srat: Srat, srat_home: Path, tmp_path: Path, content: bytes, needle: str
) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_bytes(content)
    result = srat("run", "--config", str(config_file))
    assert_usage_error(result, srat_home)
    assert needle in result.err


def test_run_config_is_a_directory(srat: Srat, srat_home: Path, tmp_path: Path) -> None:
    result = srat("run", "--config", str(tmp_path))
    assert_usage_error(result, srat_home)
    assert str(tmp_path) in result.err


def test_run_missing_config_file(srat: Srat, srat_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = srat("run", "--config", str(missing))
    assert_usage_error(result, srat_home)
    assert "not found" in result.err
    assert str(missing) in result.err


def test_run_both_preset_and_config(srat: Srat, srat_home: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "ok.toml"
    config_file.write_text('extends = "demo"\n', encoding="utf-8")
    result = srat("run", "--preset", "demo", "--config", str(config_file))
    assert_usage_error(result, srat_home)
    assert "exactly one" in result.err


def test_app_raises_srat_error_for_main_to_convert() -> None:
    # `app` itself lets SratError out; `main()` (the console script) turns it into exit 2
    outcome = CliRunner().invoke(app, ["run", "--preset", "no-such-preset"])
    assert isinstance(outcome.exception, SratError)
    assert "no-such-preset" in str(outcome.exception)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "--preset", "exp100-ldma"), "did you mean"),
        (("run", "--preset", "demo", "--set", "loss.sep_lambda=nan"), "loss.sep_lambda"),
    ],
    ids=["unknown-preset", "nan-lambda"],
)
def test_console_script_end_to_end_errors(
    srat_home: Path, args: tuple[str, ...], needle: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "srat_tui.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert run_dirs(srat_home) == []


# --- a real run without data ---------------------------------------------------------------


def test_run_without_cifar_files_is_refused_before_creating_a_run(
    srat: Srat, srat_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline without the files, a run would fail at once: the launch refuses it in one line
    naming what to place where, and creates nothing (detached or not)."""
    monkeypatch.setenv("COLUMNS", "80")
    data_dir = srat_home / "data"
    for detach in ((), ("--detach",)):
        result = srat("run", "--preset", "cifar10-exp100-ce", "--device", "cpu", *detach)
        assert result.code == 2, result.err
        assert len(result.err_lines) == 1, result.err
        assert result.err_lines[0].startswith("error: ")
        assert "cifar-10-python.tar.gz" in result.err_lines[0]
        assert str(data_dir) in result.err_lines[0]
        assert run_dirs(srat_home) == []
    dry = srat("run", "--preset", "cifar10-exp100-ce", "--dry-run")
    assert dry.code == 0 and "a launch would refuse it" in dry.out
    # with downloads allowed it may try (and the dry run says nothing)
    allowed = srat(
        "run", "--preset", "cifar10-exp100-ce", "--dry-run", "--set", "data.download=true"
    )
    assert allowed.code == 0 and "a launch would refuse it" not in allowed.out


def test_seeds_make_one_run_per_seed_of_each_configuration(srat: Srat) -> None:
    result = srat("run", "--preset", "demo", "--seeds", "0-2", "--set", "seed=9", "--dry-run",
                  "--json")  # fmt: skip
    assert result.code == 0, result.err
    decoder, text, seeds = json.JSONDecoder(), result.out, []
    while text.strip():
        document, end = decoder.raw_decode(text.strip())
        seeds.append(document["config"]["seed"])
        text = text.strip()[end:]
    assert seeds == [0, 1, 2]  # --seeds wins over --set seed=
    refused = srat("run", "--preset", "demo", "--seeds", "0,1")
    assert refused.code == 2 and refused.err_lines == [
        "error: 2 runs: add --detach to queue them all"
    ]
    bad = srat("run", "--preset", "demo", "--seeds", "2-1", "--dry-run")
    assert bad.code == 2 and "runs backwards" in bad.err


# --- srat-tui's own command line ------------------------------------------------------------


def srat_tui(*args: str) -> subprocess.CompletedProcess[str]:
    """The `srat-tui` console script's function in a real process, without a terminal; the
    timeout fails a regression that starts the full-screen app instead of answering."""
    return subprocess.run(
        [sys.executable, "-m", "srat_tui.tui.app", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_srat_tui_help_prints_usage_instead_of_opening_the_app(flag: str) -> None:
    proc = srat_tui(flag)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: srat-tui")
    assert "$SRAT_HOME" in proc.stdout and "srat tui" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("args", [("--bogus",), ("tui",), ("runs", "ls")])
def test_srat_tui_refuses_unknown_arguments_in_one_line(args: tuple[str, ...]) -> None:
    proc = srat_tui(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == [
        f"error: srat-tui takes no arguments but --help (got {args[0]!r})"
    ]
    assert proc.stdout == ""


def test_srat_tui_command_still_opens_the_app(srat: Srat, monkeypatch: pytest.MonkeyPatch) -> None:
    # `srat tui` calls the same main() with sys.argv ["srat", "tui"]: "tui" is srat's, not an
    # unknown argument of srat-tui's
    from srat_tui.tui.app import SratApp

    opened: list[bool] = []
    monkeypatch.setattr(SratApp, "run", lambda self: opened.append(True))
    result = srat("tui")
    assert (result.code, result.err, opened) == (0, "", [True])
