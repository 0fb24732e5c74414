# The two commands: `make demo` runs the main job, `make test` the test suite.
# Each creates the project's virtual environment (.venv) if missing and installs the project into it.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install clean screenshot

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/harness quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

# docs/boards-screenshot.png: a board's page in headless chromium (apt-get install chromium chromium-driver)
screenshot: $(STAMP)
	$(BIN)/python docs/boards_screenshot.py

clean:
	rm -rf runs .pytest_cache
