# Two commands: `make run` (the app, on the demo workspace unless one is configured) and `make test`.
# Each creates or reuses .venv and installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKSPACE := $(or $(STUDIO_WORKSPACE),workspace)
PORT ?= 8501
PIP_LOG := $(VENV)/pip.log
# Quiet pip: no progress, no version check; its warnings (e.g. a configured find-links folder that
# does not exist, once per requirement) go to $(PIP_LOG), shown only when the install fails.
PIP_INSTALL = $(PY) -m pip install --quiet --disable-pip-version-check --no-input
SYSTEM_PACKAGES := darknet chromium chromium-driver

.PHONY: run test demo bench system-deps clean-venv

$(VENV)/.run-deps: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing requirements.txt into $(VENV) (pip's messages: $(PIP_LOG))"
	@$(PIP_INSTALL) -r requirements.txt >>$(PIP_LOG) 2>&1 || { tail -n 30 $(PIP_LOG); exit 1; }
	@touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps requirements-test.txt
	@echo "Installing requirements-test.txt into $(VENV) (pip's messages: $(PIP_LOG))"
	@$(PIP_INSTALL) -r requirements-test.txt >>$(PIP_LOG) 2>&1 || { tail -n 30 $(PIP_LOG); exit 1; }
	@touch $@

## run: serve the studio on http://localhost:$(PORT) (generates the demo workspace on first use)
run: $(VENV)/.run-deps
	@if [ -z "$$STUDIO_WORKSPACE" ] && [ ! -d "$(WORKSPACE)/metadata" ]; then \
		echo "No workspace configured: generating the demo workspace in $(WORKSPACE)"; \
		$(PY) -m pipeline demo --workspace "$(WORKSPACE)" --if-missing; fi
	@# Streamlit in the background so the last line printed is the address, once it answers.
	@STUDIO_WORKSPACE="$(abspath $(WORKSPACE))" $(PY) -m streamlit run dashboard/app.py --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; exit 0' INT TERM; \
	until $(PY) -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(PORT)/_stcore/health', timeout=1)" 2>/dev/null; do \
		kill -0 $$pid 2>/dev/null || exit 1; sleep 0.3; done; \
	echo; echo "==> The studio is running at http://localhost:$(PORT)  (workspace: $(abspath $(WORKSPACE)); Ctrl+C stops it)"; echo; \
	wait $$pid

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
