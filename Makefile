# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
# Both create (or reuse) the virtual environment in .venv first; re-running is cheap.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
IMAGE  ?= reland-platform:0.1.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DGLBACKEND := pytorch

.PHONY: setup run test test-all bench lock clean image

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt docker/install.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	docker/install.sh $(BIN)/python editable
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

# The Kubeflow tasks' image (needs Docker): see docker/Dockerfile and docs/operations.md.
image:
	docker build -f docker/Dockerfile -t $(IMAGE) .
