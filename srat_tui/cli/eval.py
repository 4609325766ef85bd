"""`srat eval RUN`: robust accuracy of a finished run under PGD-20, CW-l_inf or AutoAttack.

Results go to the run's eval.json (one entry per attack, earlier attacks kept) and its index
record; `srat runs show/compare/export` read them from there.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from srat_engine.runs.evaluations import attack_title, check_request, result_key
from srat_tui.cli.common import open_run, stdout_console
from srat_tui.render.format import inert

app = typer.Typer()


def _reference_entries(
    attack: str, result: dict[str, Any], checkpoint: str
) -> dict[str, dict[str, Any]]:
    """The result to print, plus for AutoAttack the PGD-20 run on the same examples; keyed as
    eval.json keys them (`result_key`), so a best-epoch result says so."""
    entries = {result_key(attack, checkpoint): result}
    reference = result.get("pgd20")
    if attack == "autoattack" and isinstance(reference, dict):
        shared = {k: result.get(k) for k in ("n", "class_n", "clean_overall", "clean_class",
                                              "checkpoint_epoch", "time")}  # fmt: skip
        pgd = {**shared, **reference, "attack": "pgd20"}
        entries = {result_key("pgd20", checkpoint): pgd, **entries}
    return entries


@app.command("eval")
def eval_(
    run_id: Annotated[str, typer.Argument(help="run id")],
    attack: Annotated[
        str, typer.Option("--attack", "-a", help="pgd20 | cw | autoattack")
    ] = "pgd20",
    n: Annotated[
        int | None,
        typer.Option("--n", help="test examples per class (default: the whole test set)"),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", "-d", help="auto | cpu | cuda | cuda:N (default: config)"),
    ] = None,
    checkpoint: Annotated[
        str,
        typer.Option(
            "--checkpoint",
            help="last (the run's end) | best (best.pt: the epoch with the best per-epoch PGD "
            "robust accuracy, chosen on the test set; stored as <attack>@best)",
        ),
    ] = "last",
    as_json: Annotated[bool, typer.Option("--json", help="the stored result as JSON")] = False,
) -> None:
    """Robust accuracy of a finished run's checkpoint, per class, into its eval.json.

    pgd20: the run's own evaluation PGD. cw: PGD on the Carlini-Wagner margin loss.

    autoattack: APGD-CE, APGD-T, FAB-T, Square (standard), plus PGD-20 on the same
    examples and the gradient-masking check. All in fp32, BatchNorm in eval mode.
    """
    check_request(attack, n, checkpoint)  # before torch loads: a typo costs nothing
    from srat_engine.evaluation.runner import check_evaluable, evaluate_run
    from srat_engine.runs.home import Home
    from srat_engine.runs.sync import record_in_index
    from srat_tui.render.evaluations import eval_renderables

    run = open_run(run_id)
    doc = run.config()
    # the run's own evaluation PGD runs its eval.steps: "PGD-20" only when that is 20
    named = attack_title(attack, doc.get("config", {}).get("eval", {}).get("steps"))
    chosen = device or str(doc.get("config", {}).get("device", "auto"))
    check_evaluable(run, checkpoint)  # a running or untrained run fails before the progress

    def announce() -> None:  # once the checkpoint has loaded: a corrupt one says only that
        if not as_json:
            size = f"{n} per class" if n is not None else "the whole test set"
            which = "" if checkpoint == "last" else ", best-epoch checkpoint"
            line = (f"evaluating {run.id}: {named} on {size}, device {chosen}"
                    f"{which}")  # fmt: skip
            print(inert(line), file=sys.stderr, flush=True)

    result = evaluate_run(run, attack, n, chosen, checkpoint=checkpoint, on_start=announce)
    record_in_index(run, Home.from_env().index)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    resolved = doc.get("resolved", {})
    console = stdout_console(piped_width=240)  # as wide as `srat runs` prints when piped
    title = f"{named} on run {run.id} ({doc.get('config', {}).get('method')})"
    if checkpoint == "best":
        title += (f", best epoch {result.get('checkpoint_epoch')} (chosen by PGD on the test "
                  "set)")  # fmt: skip
    for renderable in eval_renderables(
        _reference_entries(attack, result, checkpoint),
        resolved.get("class_names", []),
        resolved.get("under_classes", []),
        title=title,
    ):
        console.print(renderable)
    console.print(inert(f"stored in {run.path / 'eval.json'} ({result['seconds']:.1f} s)"))
