# Two commands: `make run` (the app, on the demo workspace unless one is configured) and `make test`.
# Each creates or reuses .venv and installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKSPACE := $(or $(STUDIO_WORKSPACE),workspace)
PORT ?= 8501
SYSTEM_PACKAGES := darknet chromium chromium-driver

.PHONY: run test demo bench system-deps clean-venv

$(VENV)/.run-deps: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	@touch $@

## run: serve the studio on http://localhost:$(PORT) (generates the demo workspace on first use)
run: $(VENV)/.run-deps
	@if [ -z "$$STUDIO_WORKSPACE" ] && [ ! -d "$(WORKSPACE)/metadata" ]; then \
		echo "No workspace configured: generating the demo workspace in $(WORKSPACE)"; \
		$(PY) -m pipeline demo --workspace "$(WORKSPACE)" --if-missing; fi
	STUDIO_WORKSPACE="$(abspath $(WORKSPACE))" $(PY) -m streamlit run dashboard/app.py --server.port $(PORT)

## demo: (re)generate the demo workspace only
demo: $(VENV)/.run-deps
	$(PY) -m pipeline demo --workspace "$(WORKSPACE)"

## test: the whole suite, with real darknet, Chromium and the GCS emulator when they can be installed
test: $(VENV)/.test-deps system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

## system-deps: install darknet, chromium and chromedriver with apt when we are root and they are missing
system-deps:
	@missing=""; \
	command -v darknet >/dev/null || missing="$$missing darknet"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	else \
		echo "Missing system packages:$$missing. Tests that need them will be skipped."; \
		echo "Install them with: sudo apt-get update && sudo apt-get install -y $(SYSTEM_PACKAGES)"; \
	fi

## bench: every benchmark under bench/ (slow; prints side-by-side tables)
bench: $(VENV)/.test-deps
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
