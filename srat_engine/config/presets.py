"""Named configurations: TOML files in `presets/`, with single inheritance through `extends`.

Naming rule for the paper's grid (Tables 1-4): `{dataset}-{imbalance}{K}-{method}`, all lower
case, e.g. `cifar10-exp100-srat-ldam`, `svhn-step10-cb-reweight`. Short names
`{imbalance}{K}-{loss}` (e.g. `exp100-ldam`) are SRAT-{LOSS} on CIFAR-10, the paper's headline
setting. `digits-{method}` runs any method on the embedded digits set; `demo` is
`digits-srat-ldam` at Exp-10. Files starting with `_` are shared bases, hidden from listings.

Every function takes the search path `dirs` (folders, first match wins) as a parameter: a
home's `Home.preset_dirs`, which the edges build from the environment.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

from srat_engine.errors import SratError

_META_KEYS = ("extends", "description")


def list_presets(dirs: Sequence[Path], include_bases: bool = False) -> dict[str, Path]:
    """Preset name -> file, first folder of `dirs` wins; folders that do not exist are skipped."""
    found: dict[str, Path] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            name = path.stem
            if name.startswith("_") and not include_bases:
                continue
            found.setdefault(name, path)
    return dict(sorted(found.items()))


def _unknown(name: str, known: list[str]) -> SratError:
    near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return SratError(f"unknown preset {name!r}{hint} (see `srat presets ls`)")


def preset_path(name: str, dirs: Sequence[Path]) -> Path:
    """The file of preset `name` (bases included) on `dirs`; unknown names raise with
    suggestions."""
    presets = list_presets(dirs, include_bases=True)
    if name not in presets:
        raise _unknown(name, [n for n in presets if not n.startswith("_")])
    return presets[name]


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into one SratError line."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SratError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SratError(f"cannot read config file {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SratError(f"{path} is not valid TOML: {err}") from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, merging nested tables; neither input is modified."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_raw(path: Path, dirs: Sequence[Path], _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset or config file with its `extends` chain (presets on `dirs`) applied, meta keys
    removed."""
    if path in _seen:
        chain = " -> ".join(p.stem for p in (*_seen, path))
        raise SratError(f"preset inheritance loops: {chain}")
    raw = read_toml(path)
    parent = raw.get("extends")
    own = {k: v for k, v in raw.items() if k not in _META_KEYS}
    if parent is None:
        return own
    return deep_merge(load_raw(_parent(path, parent, dirs), dirs, (*_seen, path)), own)


def load_preset(name: str, dirs: Sequence[Path]) -> dict[str, Any]:
    """The raw config dict of a named preset on `dirs` (not yet validated)."""
    raw = load_raw(preset_path(name, dirs), dirs)
    raw.setdefault("name", name)
    return raw


def _parent(path: Path, parent: object, dirs: Sequence[Path]) -> Path:
    """The file `path`'s `extends` names; an unknown or malformed one says which file has it."""
    if not isinstance(parent, str):
        raise SratError(f"{path}: extends must be a preset name")
    try:
        return preset_path(parent, dirs)
    except SratError as err:
        raise SratError(f"{path}: extends {err}") from None


def describe(name: str, dirs: Sequence[Path]) -> str:
    """A preset's one-line description, from its own file or the nearest base that has one."""
    path = preset_path(name, dirs)
    seen: set[Path] = set()
    while path not in seen:
        seen.add(path)
        raw = read_toml(path)
        if "description" in raw:
            return str(raw["description"])
        if "extends" not in raw:
            return ""
        path = _parent(path, raw["extends"], dirs)
    raise SratError(f"preset inheritance loops at {path.stem} (from {name})")


def expand_patterns(patterns: list[str], dirs: Sequence[Path]) -> list[str]:
    """Preset names on `dirs` matching shell-style patterns (`exp100-*`), in listing order."""
    names = list(list_presets(dirs))
    chosen: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matches = fnmatch.filter(names, pattern)
            if not matches:
                raise SratError(f"no preset matches {pattern!r} (see `srat presets ls`)")
            chosen.extend(m for m in matches if m not in chosen)
        else:
            preset_path(pattern, dirs)  # raises with suggestions
            if pattern not in chosen:
                chosen.append(pattern)
    return chosen
