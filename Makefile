# bulwark: the commands a newcomer needs. Every target installs what it uses.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INVENTORY ?= inventory/production.py
AUDIT_DIR ?= audit

.PHONY: help venv test unit lint render

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed  ## create .venv with bulwark and its test tools

lint: venv  ## ruff over the whole tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: venv  ## unit tests: no hosts, no root
	$(BIN)/pytest -q tests/unit

test: lint unit  ## the one test command (CI runs this)

render: venv  ## render every config of INVENTORY into AUDIT_DIR
	$(BIN)/bulwark render $(INVENTORY) --out $(AUDIT_DIR)
