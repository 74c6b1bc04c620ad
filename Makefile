# bulwark: the commands a newcomer needs. Every target installs what it uses.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INVENTORY ?= inventory/production.py
AUDIT_DIR ?= audit

# Daemons whose own checkers validate rendered files in the unit tests (sshd -t, nft -c ...).
# Installed without starting them: a policy-rc.d that denies service starts is in place meanwhile.
CHECKER_PACKAGES := openssh-server nftables

.PHONY: help venv checkers test unit lint render

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed  ## create .venv with bulwark and its test tools

checkers:  ## install the daemons' config checkers (root; services are not started)
	@missing=$$(for p in $(CHECKER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing checkers: $$missing"; \
		own_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then own_policy=1; \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; rc=$$?; \
		if [ -n "$$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; \
	fi

lint: venv  ## ruff over the whole tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: venv checkers  ## unit tests: no hosts
	$(BIN)/pytest -q tests/unit

test: lint unit  ## the one test command (CI runs this)

render: venv  ## render every config of INVENTORY into AUDIT_DIR
	$(BIN)/bulwark render $(INVENTORY) --out $(AUDIT_DIR)
