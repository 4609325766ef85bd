#!/usr/bin/env bash
# Wheels of srat's requirements that the lent GPU machine's image lacks, into .whl/ (ignored by
# git; carried by `benchmarks/device_check.sh`'s call). That machine cannot reach a package
# index and its python3 is CPython 3.12 on x86-64 with torch, torchvision, numpy, scipy,
# scikit-learn, matplotlib, typer, rich, psutil, filelock, pytest and nvidia-ml-py already there
# (/work/.library/device/KINDS.md). Run here, where PyPI answers:  bash benchmarks/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The versions this checkout's .venv (made by `make install`) runs and tests with, each named
# (--no-deps: nothing fetched implicitly, so one version of each travels): srat's requirements
# that the image lacks, and the ones it has in versions srat was not tested with (they go first
# on PYTHONPATH there, before the image's).
names=(
    pydantic pydantic-core annotated-types typing-inspection typing-extensions
    tinydb tomli-w torchattacks submitit
    textual textual-plotext plotext platformdirs mdit-py-plugins
    typer annotated-doc rich markdown-it-py mdurl pygments shellingham
)
python=${PYTHON:-.venv/bin/python}
# name==version for each, as this .venv has it (pip normalises - and _ alike)
pins=$("$python" - "${names[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"{name} is not installed in this .venv: run `make install` first")
PY
)
mapfile -t wanted <<< "$pins"
rm -rf .whl && mkdir .whl
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "${wanted[@]}" 2> >(grep -v "is ignored" >&2)
ls .whl
du -sh .whl
