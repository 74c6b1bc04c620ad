# bulwark: the commands a newcomer needs. Every target installs what it uses.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INVENTORY ?= inventory/production.py
AUDIT_DIR ?= audit

# Daemons whose own checkers validate rendered files in the unit tests (sshd -t, nft -c ...),
# the headless browser that opens the audit's report.html in them (chromium), the WebDAV
# client the end-to-end tests sync files with (rclone), and OpenLDAP's slaptest, slapadd and
# ldapsearch (slapd, told to configure nothing; ldap-utils), rspamd's rspamadm, Dovecot's sieve
# compiler, cryptsetup, which backs up and restores LUKS headers of file images in the
# storage tests (cryptsetup-bin), and borg, which the backup agent's tests run (borgbackup).
# Installed without starting them: a policy-rc.d that denies service starts is in place meanwhile.
CHECKER_PACKAGES := openssh-server nftables postfix dovecot-core dovecot-imapd dovecot-pop3d \
	dovecot-lmtpd dovecot-auth-lua nginx-core libnginx-mod-stream chromium rclone slapd ldap-utils \
	knot knot-dnsutils rspamd dovecot-sieve cryptsetup-bin borgbackup

.PHONY: help venv checkers test unit lint render
.PHONY: lab-up lab-down lab-status lab-secrets deploy-lab lab-verify molecule-lab molecule-vm

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
		echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; rc=$$?; \
		if [ -n "$$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; \
	fi

lint: venv  ## ruff over the whole tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: venv checkers  ## unit tests: no hosts
	$(BIN)/pytest -q tests/unit

test: lint unit molecule-lab molecule-vm  ## the one test command (CI runs this): lint, unit, lab, VMs

render: venv  ## render every config of INVENTORY into AUDIT_DIR
	$(BIN)/bulwark render $(INVENTORY) --out $(AUDIT_DIR)

# --- The lab: both sites as containers on this machine (root; see bulwark/lab) ---------------
LAB_INVENTORY := inventory/lab.py
LAB_STATE := /var/lib/bulwark-lab
LAB_VAULT := inventory/lab.vault
LAB_ENV := BULWARK_VAULT_KEY=$(LAB_STATE)/vault.key

lab-up: venv  ## build the lab (installs its own host packages), or nothing if it is up
	$(BIN)/bulwark lab up -i $(LAB_INVENTORY)

lab-down: venv  ## remove the lab entirely (keeps the base image and apt caches)
	$(BIN)/bulwark lab down

lab-status: venv  ## what of the lab is up
	$(BIN)/bulwark lab status -i $(LAB_INVENTORY)

lab-secrets: venv  ## the lab vault (key in /var/lib/bulwark-lab) with every secret it needs
	mkdir -p $(LAB_STATE)
	@# The credentials file holds the passwords of one checkout's vault (credentials.vault names
	@# it). When another checkout (a CI clone) wrote it last, this vault's passwords are unknown:
	@# the lab starts a new vault, whose passwords are written afresh.
	@if [ -f $(LAB_VAULT) ] && [ "$$(cat $(LAB_STATE)/credentials.vault 2>/dev/null)" != "$(abspath $(LAB_VAULT))" ]; then \
		echo "lab vault: the lab's credentials belong to another checkout: a new lab vault"; \
		rm -f $(LAB_VAULT); fi
	@# A new vault makes new passwords: the credentials of another checkout's vault would be stale.
	test -f $(LAB_STATE)/vault.key -a -f $(LAB_VAULT) || { rm -f $(LAB_STATE)/credentials.json; \
		$(LAB_ENV) $(BIN)/bulwark vault init --vault $(LAB_VAULT); }
	$(LAB_ENV) $(BIN)/bulwark secrets generate $(LAB_INVENTORY) --credentials-out $(LAB_STATE)/credentials.json
	echo "$(abspath $(LAB_VAULT))" > $(LAB_STATE)/credentials.vault
	@# The platform's DNS records (TLSA from the certificates just made) served to the internet.
	$(LAB_ENV) $(BIN)/bulwark lab dns -i $(LAB_INVENTORY)

deploy-lab: lab-up lab-secrets  ## the whole platform deployed into the lab
	$(BIN)/bulwark lab apt-update -i $(LAB_INVENTORY)
	$(LAB_ENV) $(BIN)/pyinfra -y $(LAB_INVENTORY) deploy.py
	@echo; $(BIN)/bulwark lab status -i $(LAB_INVENTORY)
	@echo "ssh: bulwark lab ssh HOST; e2e clients: bulwark lab internet -- CMD; passwords: $(LAB_STATE)/credentials.json"

lab-verify: venv  ## integration (testinfra) and end-to-end tests against the running lab
	$(BIN)/pytest -q --junitxml=$(LAB_STATE)/verify-integration.xml tests/integration
	$(BIN)/bulwark lab internet -i $(LAB_INVENTORY) -- $(BIN)/pytest -q --junitxml=$(LAB_STATE)/verify-e2e.xml tests/e2e

molecule-lab: venv  ## create, converge, idempotence, verify, destroy the lab scenario
	rm -f $(LAB_STATE)/verify-*.xml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test -s lab \
		|| { $(BIN)/python -m bulwark.lab.failures $(LAB_STATE)/verify-*.xml; exit 1; }

# --- The VM scenario: what needs a real kernel (LUKS), in qemu guests (root; bulwark/lab/vm.py) ---
VM_STATE := /var/lib/bulwark-vm

molecule-vm: venv  ## the storage role proven in qemu guests (KVM if it boots here, else TCG)
	rm -f $(VM_STATE)/verify-*.xml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test -s vm \
		|| { $(BIN)/python -m bulwark.lab.failures $(VM_STATE)/verify-*.xml; exit 1; }
