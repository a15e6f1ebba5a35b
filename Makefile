# The README's two commands are `make demo` and `make test`; both set up the
# control node first (idempotent, quick when nothing is missing).

VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup demo test lint unit integration molecule bench lab-up lab-down clean

setup:
	@scripts/setup-host

demo: setup
	ansible-playbook playbooks/lab.yml
	ansible-playbook playbooks/smoke.yml
	ansible-playbook playbooks/setup.yml
	ansible-playbook playbooks/delivery.yml
	ansible-playbook playbooks/pair_device.yml -e device=device-1
	ansible-playbook playbooks/pair_device.yml -e device=device-2
	scripts/pair-cloudlets cloudlet-a cloudlet-b -- -e replace=true
	ansible-playbook playbooks/check_svm.yml
	ansible-playbook playbooks/migrate.yml -e svm=demo-counter -e target=cloudlet-b
	ansible-playbook playbooks/check_svm.yml -e svm_wait=60

test: setup lint unit integration molecule

lint: setup
	ruff check .
	yamllint -s .
	ansible-lint

unit: setup
	pytest -q tests/unit

integration: setup
	pytest -q -p no:cacheprovider tests/integration

# Every role that has a scenario; each scenario builds (and removes) a lab of its own.
MOLECULE_ROLES := $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml))

molecule: setup
	set -e; for role in $(MOLECULE_ROLES); do \
	  start=$$(date +%s); (cd roles/$$role && molecule test); \
	  echo "molecule $$role: passed in $$(( $$(date +%s) - start )) s"; \
	done

bench: setup
	python benchmarks/bench_lab.py
	python benchmarks/bench_crypto.py
	python benchmarks/bench_manager_load.py
	python benchmarks/bench_credentials.py
	python benchmarks/bench_device_pairing.py
	python benchmarks/bench_svm_demo.py
	python benchmarks/bench_ceremonies.py
	python benchmarks/bench_migration.py

lab-up: setup
	ansible-playbook playbooks/lab.yml

lab-down: setup
	ansible-playbook playbooks/lab.yml -e lab_state=absent

clean: lab-down
	rm -rf $(VENV)
