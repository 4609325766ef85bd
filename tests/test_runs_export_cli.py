"""`srat runs export`: which format it writes, given by `--format` or by `-o`'s file name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import Srat, make_invoker
from fake_runs import make_fake_run

from srat_engine.runs.home import Home


@pytest.fixture
def srat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Srat:
    return make_invoker(capsys, monkeypatch)


def test_the_output_file_name_picks_the_format_unless_one_is_given(
    srat: Srat, srat_home: Path, tmp_path: Path
) -> None:
    make_fake_run(srat_home / "runs", "run-a", status="finished", epochs_done=3, epochs=3,
                  index=Home(srat_home).index)  # fmt: skip
    assert srat("runs", "export").out.startswith("### Digits")  # stdout: Markdown
    latex = tmp_path / "table.tex"
    assert srat("runs", "export", "-o", str(latex)).code == 0
    assert "\\begin{tabular}" in latex.read_text()  # it wrote Markdown into table.tex before
    as_json = tmp_path / "table.json"
    assert srat("runs", "export", "-o", str(as_json)).code == 0
    assert isinstance(json.loads(as_json.read_text()), list)
    plain = tmp_path / "table.txt"  # an extension no format claims: the default
    assert srat("runs", "export", "-o", str(plain)).code == 0
    assert plain.read_text().startswith("### Digits")
    assert srat("runs", "export", "--format", "csv", "-o", str(plain)).code == 0
    assert plain.read_text().startswith("dataset,imbalance,")


def test_a_format_the_file_name_contradicts_is_refused_before_writing(
    srat: Srat, srat_home: Path, tmp_path: Path
) -> None:
    make_fake_run(srat_home / "runs", "run-a", status="finished", epochs_done=3, epochs=3,
                  index=Home(srat_home).index)  # fmt: skip
    target = tmp_path / "table.tex"
    target.write_text("my table\n")
    result = srat("runs", "export", "--format", "csv", "-o", str(target))
    assert result.code == 2
    assert result.err_lines == [f"error: the format is csv but {target} is named as latex: "
                                "leave one out, or make them agree"]  # fmt: skip
    assert target.read_text() == "my table\n"  # nothing lost
    bad = srat("runs", "export", "--format", "xlsx")
    assert bad.code == 2 and "unknown export format 'xlsx'" in bad.err


def test_a_rerun_seed_counts_once_and_the_export_says_which_runs_it_set_aside(
    srat: Srat, srat_home: Path
) -> None:
    index = Home(srat_home).index
    for run_id, seed, created in (
        ("seed0-old", 0, "2026-12-01T10:00:00+00:00"),
        ("seed0-new", 0, "2026-12-02T10:00:00+00:00"),
        ("seed1", 1, "2026-12-01T11:00:00+00:00"),
    ):
        make_fake_run(srat_home / "runs", run_id, status="finished", epochs_done=3, epochs=3,
                      overrides=(f"seed={seed}",), created=created, index=index)  # fmt: skip
    result = srat("runs", "export", "--format", "json")
    assert result.code == 0, result.err
    (cell,) = json.loads(result.out)[0]["rows"][0]["cells"]
    assert cell["run_ids"] == ["seed0-new", "seed1"] and cell["n"] == 2
    assert result.err_lines == [
        "set aside 1 run(s) repeating a seed of their configuration (each seed counts once, "
        "by its newest run): seed0-old"
    ]


def test_nothing_to_export_is_said_and_writes_no_file(
    srat: Srat, srat_home: Path, tmp_path: Path
) -> None:
    target = tmp_path / "table.md"
    empty = srat("runs", "export", "-o", str(target))
    assert empty.code == 2 and empty.err_lines == [
        "error: nothing to export: no run matches (srat runs ls shows what there is)"
    ]
    make_fake_run(srat_home / "runs", "running", epochs_done=1, epochs=3,
                  index=Home(srat_home).index)  # fmt: skip
    unfinished = srat("runs", "export", "-o", str(target))
    assert unfinished.code == 2
    assert "nothing to export: no run has final metrics" in unfinished.err
    assert not target.exists()
    assert srat("sweep", "ls").out.startswith("no sweeps")
