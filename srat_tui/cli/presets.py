"""`srat presets ls|show`: the named configurations (every cell of the paper's tables)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from srat_engine.config.presets import describe, expand_patterns, list_presets, load_preset
from srat_engine.errors import SratError
from srat_engine.runs.home import Home
from srat_tui.cli.common import stdout_console
from srat_tui.render.format import inert

app = typer.Typer(help="Named configurations (every cell of the paper's tables).")


@app.command("ls")
def presets_ls(
    patterns: Annotated[
        list[str] | None, typer.Argument(help="shell patterns, e.g. 'exp100-*'")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="each preset's name and description as JSON")
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="whole descriptions, however narrow the terminal")
    ] = False,
) -> None:
    """List presets with their descriptions."""
    dirs = Home.from_env().preset_dirs
    names = expand_patterns(patterns, dirs) if patterns else list(list_presets(dirs))
    rows: list[dict[str, str]] = []
    broken: list[str] = []
    for name in names:
        try:
            rows.append({"name": name, "description": describe(name, dirs)})
        except SratError as err:  # one bad file (yours, in a preset folder) hides no other
            rows.append({"name": name, "description": "", "error": str(err)})
            broken.append(str(err))
    for error in broken:
        typer.echo(inert(f"warning: {error}"), err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console = stdout_console()
    # in a terminal, a preset a line (its description cut to "…"): `presets show` has it all;
    # piped, whole lines for grep
    crop = console.is_terminal and not wide
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        shown = row["description"] if "error" not in row else "(unreadable: see the warning)"
        line = inert(f"{row['name']:<{width}}  {shown}")
        console.print(line, no_wrap=crop, overflow="ellipsis" if crop else None, soft_wrap=not crop)


@app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="preset name")],
    raw: Annotated[bool, typer.Option("--raw", help="the preset file as written")] = False,
) -> None:
    """Print a preset as a complete TOML file you can copy, edit and pass to --config."""
    from srat_engine.config.presets import preset_path
    from srat_engine.config.schema import config_toml, validate_config

    dirs = Home.from_env().preset_dirs
    if raw:
        typer.echo(preset_path(name, dirs).read_text(encoding="utf-8"), nl=False)
        return
    config = validate_config(load_preset(name, dirs))
    description = inert(" ".join(describe(name, dirs).split()))
    header = (
        f"# preset {name}: {description}\n"
        f"# every field, resolved; save it, edit it, run it: srat run --config FILE\n\n"
    )
    typer.echo(header + config_toml(config), nl=False)
