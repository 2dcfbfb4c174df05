# Two entry points (see README): `make demo` and `make test`. Both bootstrap what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

TOOLS := .tools/bin/kubectl .tools/.apt-stamp .tools/checkov-venv/bin/checkov \
	.tools/npm/node_modules/.bin/gitlab-ci-local

.PHONY: demo test bootstrap lint sync-crds clean

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q -e '.[operator,sandbox,worker,test]'
	touch $@

# apt first: unzip (binaries), npm (gitlab-ci-local), prometheus/promtool and rsync (tests).
.tools/.apt-stamp: tools/install-apt.sh
	tools/install-apt.sh
	mkdir -p .tools && touch $@

.tools/bin/kubectl: $(VENV)/.stamp .tools/.apt-stamp tools/install-binaries.sh
	tools/install-binaries.sh

.tools/checkov-venv/bin/checkov: tools/install-checkov.sh
	tools/install-checkov.sh

.tools/npm/node_modules/.bin/gitlab-ci-local: .tools/.apt-stamp tools/install-gitlab-ci-local.sh
	tools/install-gitlab-ci-local.sh

bootstrap: $(VENV)/.stamp $(TOOLS)

demo: bootstrap
	scripts/demo.sh

lint: bootstrap
	$(VENV)/bin/ruff check operator worker sandbox tests benchmarks tools
	$(VENV)/bin/mypy
	$(PY) tools/gen_crd.py --check
	scripts/sync-chart-crds.sh --check

# CI=true turns any skipped test (a missing tool) into a failure: see tests/conftest.py.
test: bootstrap lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

# After a change to operator/deepseek_operator/api.py: regenerate the CRD, its docs and every copy.
sync-crds: $(VENV)/.stamp
	$(PY) tools/gen_crd.py --docs
	scripts/sync-chart-crds.sh
	manifests/install/generate.sh

clean:
	rm -rf $(VENV) .tools
