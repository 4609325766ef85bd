# Two entry points for a fresh machine: `make demo` and `make test`.
# torch and torchvision are installed as a matched pair from the package index: a CPU-only torch
# build next to the index's torchvision fails at `import torchvision` (see DESIGN.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PAIR := "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PAIR)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/srat run --preset demo

# Three pytest workers, a test file each at a time (so a module's fixtures, e.g. a trained
# template, are built once). A third of the suite's time is waiting (Slurm's minute-scale
# limits, subprocesses starting), which a third worker fills: on this 2-core box, one tree on
# 2026-12-04 (a slow host: `import torch` 3.8 s), 8m54s and 9m40s in two workers, 8m14s in
# three; on 2026-12-02, a faster host, 7m07s in two, 7m28s in three.
test: $(STAMP)  # munge and slurm-wlm too (root and apt-get; else the Slurm tests skip)
	@bash tests/slurm/install-slurm.sh
	$(PY) -m pytest -q -n 3 --dist loadfile

bench: $(STAMP)  # engine vs public-code training step, then the TUI's responsiveness
	$(VENV)/bin/srat bench --model small
	$(PY) benchmarks/bench_tui.py

lint: $(STAMP)  # style, formatting, and the layering contracts of pyproject.toml
	$(VENV)/bin/ruff check srat_engine srat_tui tests benchmarks
	$(VENV)/bin/ruff format --check srat_engine srat_tui tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
