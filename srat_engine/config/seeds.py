"""Seeds as people type them ("0", "0,1,2", "0-2"): one run per seed, the same config else."""

from __future__ import annotations

import re

from srat_engine.errors import SratError

_SEED_RANGE = re.compile(r"(\d+)-(\d+)")
# One launch makes one run directory per seed: a typo like 0-100000 must not try to queue a
# hundred thousand runs (or build the list before saying so).
MAX_SEEDS = 1000
# The largest seed: torch generators take 64-bit seeds, NumPy's and scikit-learn's 32-bit ones
MAX_SEED = 2**32 - 1


def check_seed(seed: int, name: str = "--seed") -> int:
    """`seed` if 0 <= seed <= MAX_SEED, else SratError naming `name`."""
    if not 0 <= seed <= MAX_SEED:
        raise SratError(f"{name} must be between 0 and {MAX_SEED} (got {seed})")
    return seed


def parse_seeds(text: str) -> list[int]:
    """ "0", "0,1,2", "0 1 2" or "0-2"; duplicates dropped, order kept."""
    seeds: list[int] = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        span = _SEED_RANGE.fullmatch(token)
        if span:
            first, last = int(span.group(1)), int(span.group(2))
            if last < first:
                raise SratError(f"seeds: range {token!r} runs backwards")
            if last - first + 1 + len(seeds) > MAX_SEEDS:
                raise SratError(
                    f"seeds: {token!r} asks {last - first + 1} runs; one launch takes at most "
                    f"{MAX_SEEDS} seeds"
                )
            seeds.extend(range(first, last + 1))
        elif token.isdigit():
            seeds.append(int(token))
        else:
            raise SratError(f"seeds: expected integers ≥ 0 like 0 or 0,1,2 (got {token!r})")
    if not seeds:
        raise SratError("seeds: give at least one seed, e.g. 0 or 0,1,2")
    unique = list(dict.fromkeys(seeds))
    if len(unique) > MAX_SEEDS:
        raise SratError(f"seeds: {len(unique)} seeds; one launch takes at most {MAX_SEEDS}")
    return unique


def seed_override(seed: int) -> str:
    """The `--set` assignment that makes a run of this seed."""
    return f"seed={seed}"
