"""The export files of the paper-layout blocks: csv, Markdown, LaTeX and JSON text."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from srat_engine.reporting.export import (
    EXTENSIONS,
    RobustSource,
    cell_text,
    export_format,
    format_export,
    format_of_path,
    latex_escape,
    training_title,
)
from srat_engine.reporting.report import Stat, TableBlock, group_seeds, paper_table


def record(run_id: str, seed: int, values: tuple[float, ...], **fields: Any) -> dict[str, Any]:
    base = {
        "id": run_id,
        "method": "SRAT-LDAM",
        "dataset": "cifar10",
        "imbalance": "step",
        "ratio": 100.0,
        "arch": "resnet18",
        "seed": seed,
        "epochs": 200,
        "final": True,
    }
    base.update(fields)
    base.update(zip(("std_overall", "std_under", "rob_overall", "rob_under"), values, strict=True))
    base.setdefault(
        "config_key",
        f"{base['method']}|{base['dataset']}|{base['imbalance']}|{base['ratio']}|{base['epochs']}",
    )
    return base


def blocks(with_paper: bool = True) -> list[TableBlock]:
    records = [
        record("s0", 0, (60.0, 50.0, 30.0, 20.0)),
        record("s1", 1, (62.0, 52.0, 32.0, 20.0)),
        record("s2", 2, (64.0, 54.0, 34.0, 20.0)),
        record("ce10", 0, (63.5, 41.0, 37.0, 14.0), method="CE", ratio=10.0),
        # A method name with LaTeX specials; custom labels reach the export unchanged otherwise.
        record("odd", 0, (10.0, 5.0, 1.0, 0.5), method="my_method 100%"),
        record("exp", 0, (70.0, 71.0, 40.0, 41.0), imbalance="exp", ratio=10.0),
    ]
    return paper_table(group_seeds(records), with_paper=with_paper)


# -- cells -----------------------------------------------------------------------------------


def test_cell_text() -> None:
    assert cell_text(Stat(63.256, 0.414, 3), None, False) == "63.26 ± 0.41"
    assert cell_text(Stat(63.26, None, 1), None, False) == "63.26"
    assert cell_text(Stat(63.26, None, 1), 63.13, True) == "63.26 (paper 63.13)"
    assert cell_text(Stat(63.26, None, 1), 63.13, False) == "63.26"
    assert cell_text(Stat(None, None, 0), 30.0, True) == "- (paper 30.00)"
    # from fewer runs than the cell holds (two of three have no `srat eval` result): said
    assert cell_text(Stat(15.0, None, 1), None, False, runs=3) == "15.00 (n=1)"
    assert cell_text(Stat(15.0, 1.0, 2), 14.0, True, runs=3) == "15.00 ± 1.00 (n=2) (paper 14.00)"
    assert cell_text(Stat(15.0, 1.0, 3), None, False, runs=3) == "15.00 ± 1.00"
    assert cell_text(Stat(None, None, 0), None, False, runs=3) == "-"


def test_a_robust_column_from_fewer_runs_says_so_in_every_format() -> None:
    # AutoAttack results for one of the three seeds: its robust cells average one run
    records = [record("s0", 0, (60.0, 50.0, 15.0, 10.0))]
    records += [record(f"s{i}", i, (62.0, 52.0, None, None)) for i in (1, 2)]
    table = paper_table(group_seeds(records))
    md = format_export(table, "md")
    row = next(line for line in md.splitlines() if line.startswith("| SRAT-LDAM"))
    assert row == "| SRAT-LDAM | 61.33 ± 1.15 | 51.33 ± 1.15 | 15.00 (n=1) | 10.00 (n=1) |"
    assert "sample std (n - 1)" in md
    latex = format_export(table, "latex")
    assert "15.00 (n=1) & 10.00 (n=1)" in latex and "% cells: mean and sample std" in latex
    (line,) = csv.DictReader(io.StringIO(format_export(table, "csv")))
    assert (line["n"], line["std_overall_n"], line["rob_overall_n"]) == ("3", "3", "1")


# -- csv -------------------------------------------------------------------------------------


def test_csv_export_numbers() -> None:
    text = format_export(blocks(), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4  # (block, method, K) with runs: SRAT-LDAM 100, CE 10, odd 100, exp 10
    srat = next(r for r in rows if r["method"] == "SRAT-LDAM" and r["imbalance"] == "step")
    assert srat["dataset"] == "cifar10" and srat["ratio"] == "100" and srat["n"] == "3"
    assert float(srat["std_overall"]) == 62.0
    assert float(srat["std_overall_std"]) == 2.0
    assert float(srat["std_under"]) == 52.0
    assert float(srat["rob_under"]) == 20.0 and float(srat["rob_under_std"]) == 0.0
    assert float(srat["paper_std_overall"]) == 63.13
    assert float(srat["paper_rob_under"]) == 18.89
    ce = next(r for r in rows if r["method"] == "CE")
    assert ce["ratio"] == "10" and ce["n"] == "1"
    assert ce["std_overall_std"] == ""  # one seed: no spread
    assert float(ce["paper_std_overall"]) == 63.26
    odd = next(r for r in rows if r["method"] == "my_method 100%")
    assert odd["paper_std_overall"] == ""


def test_csv_without_paper_has_no_paper_columns() -> None:
    text = format_export(blocks(with_paper=False), "csv")
    header = next(csv.reader(io.StringIO(text)))
    assert header[:4] == ["dataset", "imbalance", "ratio", "method"]
    assert "n" in header and "std_overall" in header and "rob_under_std" in header
    assert not [h for h in header if h.startswith("paper_")]


# -- markdown --------------------------------------------------------------------------------


def test_markdown_export() -> None:
    text = format_export(blocks(), "md")
    assert "±" in text
    assert "62.00 ± 2.00 (paper 63.13)" in text
    assert "63.50 (paper 63.26)" in text  # CE, one seed
    tables = [line for line in text.splitlines() if line.startswith("|")]
    # Header, rule and rows of one table have the same number of cells.
    first = text.split("###")[1]
    widths = {line.count("|") for line in first.splitlines() if line.startswith("|")}
    assert len(widths) == 1
    assert tables[0].startswith("| Method | K=10 Std overall")
    plain = format_export(blocks(with_paper=False), "markdown")
    assert "paper" not in plain and "62.00 ± 2.00" in plain


# -- latex -----------------------------------------------------------------------------------


def _balanced(text: str) -> bool:
    depth = 0
    for match in re.finditer(r"(?<!\\)[{}]", text):
        depth += 1 if match.group() == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def test_latex_export() -> None:
    text = format_export(blocks(), "latex")
    assert text.count("\\begin{tabular}") == 2 == text.count("\\end{tabular}")
    assert "\\pm" in text and "±" not in text
    assert "\\multicolumn{8}{c}{Imbalance Ratio}" in text
    assert "Standard Accuracy" in text and "Robust Accuracy" in text
    assert "my\\_method 100\\%" in text
    assert re.search(r"(?<!\\)_", text) is None  # every underscore escaped
    body = "\n".join(line for line in text.splitlines() if not line.startswith("% "))
    assert re.search(r"(?<!\\)%", body) is None  # only the title comments use a bare %
    assert _balanced(text)
    # Each body row has 1 + 4 * K cells.
    row = next(line for line in text.splitlines() if line.startswith("SRAT-LDAM"))
    assert row.count("&") == 8
    assert "62.00 $\\pm$ 2.00" in row


def test_latex_escape() -> None:
    assert latex_escape("a_b & c%{}$#~^\\") == (
        "a\\_b \\& c\\%\\{\\}\\$\\#\\textasciitilde{}\\textasciicircum{}\\textbackslash{}"
    )
    assert latex_escape("[x]").startswith("{}")


# -- robust columns from `srat eval` ----------------------------------------------------------


def test_masking_marks_only_the_robust_cells_of_flagged_runs() -> None:
    robust = RobustSource("AutoAttack", frozenset({"s1"}))  # one seed of SRAT-LDAM step K=100
    md = format_export(blocks(with_paper=False), "md", robust=robust)
    assert "| K=100 Rob overall [AutoAttack] |" in md and "| K=100 Std overall |" in md
    row = next(line for line in md.splitlines() if line.startswith("| SRAT-LDAM | - |"))
    assert row == (
        "| SRAT-LDAM | - | - | - | - | 62.00 ± 2.00 | 52.00 ± 2.00 | 32.00 ± 2.00 (!) "
        "| 20.00 ± 0.00 (!) |"
    )
    assert md.count("(!) gradient masking suspected") == 1 and md.count(": s1\n") == 1
    latex = format_export(blocks(with_paper=False), "latex", robust=robust)
    row = next(line for line in latex.splitlines() if line.startswith("SRAT-LDAM & -"))
    assert row == (
        "SRAT-LDAM & - & - & - & - & 62.00 $\\pm$ 2.00 & 52.00 $\\pm$ 2.00 "
        "& 32.00 $\\pm$ 2.00$^\\dagger$ & 20.00 $\\pm$ 0.00$^\\dagger$ \\\\"
    )
    assert "Robust Accuracy [AutoAttack]" in latex


# -- json ------------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    original = blocks()
    data = json.loads(format_export(original, "json"))
    assert data == [block.to_dict() for block in original]
    assert [TableBlock.from_dict(block) for block in data] == original
    first = data[0]["rows"]
    srat = next(row for row in first if row["method"] == "SRAT-LDAM")
    assert srat["cells"][0]["values"]["std_overall"] == {"mean": 62.0, "std": 2.0, "n": 3}


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        format_export(blocks(), "xlsx")


def test_the_format_follows_the_file_name_unless_given() -> None:
    assert format_of_path(Path("out/table.TEX")) == "latex"
    assert format_of_path(Path("t.markdown")) == "md"
    assert format_of_path(Path("t.txt")) is None and format_of_path(Path("table")) is None
    assert export_format(None, None) == "md"  # stdout
    assert export_format(None, Path("t.json")) == "json"
    assert export_format(None, Path("t.txt")) == "md"
    assert export_format("TeX", None) == "latex"
    assert export_format("csv", Path("t.txt")) == "csv"  # an extension no format claims
    assert export_format("latex", Path("t.tex")) == "latex"
    with pytest.raises(ValueError, match=r"the format is csv but t\.tex is named as latex"):
        export_format("csv", Path("t.tex"))
    with pytest.raises(ValueError, match="unknown export format 'xlsx'"):
        export_format("xlsx", Path("t.xlsx"))
    # the extension srat gives each format's files names that format
    for fmt, extension in EXTENSIONS.items():
        assert export_format(None, Path(f"t.{extension}")) == fmt


def test_the_training_columns_are_named_by_the_runs_own_evaluation_pgd() -> None:
    def with_steps(steps: int) -> dict[str, Any]:
        return {"config": {"eval": {"steps": steps}}}

    assert training_title([with_steps(20), with_steps(20)]) == "PGD-20 (training)"
    assert training_title([with_steps(5)]) == "PGD-5 (training)"
    assert training_title([with_steps(5), with_steps(20)]) == "PGD-20 / PGD-5 (training)"
    assert training_title([{"id": "no config"}]) == "PGD-20 (training)"  # the default
