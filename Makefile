# Two entry points (see README): `make demo` and `make test`. Both bootstrap what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test bootstrap lint unit typecheck clean

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q -e '.[operator,worker,test]'
	touch $@

.tools/bin/kubectl .tools/bin/helm: $(VENV)/.stamp tools/install-binaries.sh
	tools/install-binaries.sh

.tools/.apt-stamp: tools/install-apt.sh
	tools/install-apt.sh
	mkdir -p .tools && touch $@

bootstrap: $(VENV)/.stamp .tools/bin/kubectl .tools/bin/helm .tools/.apt-stamp

demo: bootstrap
	scripts/demo.sh

lint: bootstrap
	$(VENV)/bin/ruff check operator worker tests benchmarks scripts
	$(VENV)/bin/mypy

test: bootstrap lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .tools
