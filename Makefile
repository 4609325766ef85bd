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

# Two pytest workers, a test file each at a time (so a module's fixtures, e.g. a trained
# template, are built once): much of the suite waits on Slurm and on the runs it started, and
# the second worker uses that time (on this 2-core box: 12m00s in one process, 7m52s in two).
test: $(STAMP)  # munge and slurm-wlm too (root and apt-get; else the Slurm tests skip)
	@bash tests/slurm/install-slurm.sh
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)  # engine vs public-code training step, then the TUI's responsiveness
	$(VENV)/bin/srat bench --model small
	$(PY) benchmarks/bench_tui.py

lint: $(STAMP)  # style, formatting, and the layering contracts of pyproject.toml
	$(VENV)/bin/ruff check srat_engine srat_tui tests benchmarks
	$(VENV)/bin/ruff format --check srat_engine srat_tui tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
