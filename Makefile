# mmie: `make demo` and `make test` do all the set-up on a fresh machine (creating .venv on first use).
SHELL := /bin/bash
PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmie-installed
# Run inside a loopback-only network namespace: no traffic leaves the machine.
LOOPBACK := .ci/loopback
DEMO ?= runs/demo

# Keep every library off the network (common/offline.py sets the same defaults in-process).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

.PHONY: install demo test clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	@echo "installing mmie and its pinned dependencies into $(VENV) (first time: a few minutes, ~7.5 GB)"
	set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
	  | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m pip check
	@touch $(STAMP)

demo: $(STAMP)
	$(LOOPBACK) $(PY) -m common.synthetic --out $(DEMO)/data --seed 0
	$(LOOPBACK) $(PY) -m common.zoo --report $(DEMO)/zoo.json
	$(PY) -m common.summary $(DEMO)

test: $(STAMP)
	$(LOOPBACK) $(PY) -m pytest -q $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO)
