# modelrollout: `make demo` shows it working, `make test` installs what is missing and runs everything.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
K8S_VERSION ?= v1.35.4
export K8S_VERSION
CRD := crds/modelrollout.dev_modelrollouts.yaml
CHART_CRD := charts/modelrollout/crds/modelrollout.dev_modelrollouts.yaml
HELM_VERSION ?= v3.22.0
export HELM_VERSION
KWOK_VERSION ?= v0.8.0
TRAEFIK_VERSION ?= v3.6.12
export KWOK_VERSION TRAEFIK_VERSION

.PHONY: help deps demo-deps venv envtest helm workload traefik cluster-parts prometheus browser lint crds test unit integration e2e cluster demo demo-llm bench-plane bench-judge bench-scale bench-status-cost bench-dashboard bench-webhooks clean

help:
	@echo "make demo     four rollouts end to end: real models, real traffic, the controller's verdicts"
	@echo "              (the first run builds the control plane, Traefik and the workload controllers: about 14 min on 2 cores)"
	@echo "make demo-llm three LLM rollouts: TTFT, finish reasons, cost per 1,000 tokens (stand-in vLLM servers)"
	@echo "make e2e      the end-to-end suite (part of make test)"
	@echo "make test     install what is missing, then lint and run the whole suite"
	@echo "make cluster  local control plane in the foreground (prints export KUBECONFIG=...);"
	@echo "              WORKLOAD=1: with kube-controller-manager, kube-scheduler and kwok"
	@echo "make crds     regenerate $(CRD) from controller/api/models.py (and the chart's copy)"

$(VENV)/.installed: pyproject.toml
	@echo "installing the Python packages into $(VENV) (one time, about 25 s)" >&2
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# kube-apiserver, etcd and kubectl built from the Go module proxy, once per machine (in parallel;
# about 5 min on 2 cores the first time, docs/development.md).
envtest:
	bash hack/build-envtest.sh >/dev/null

# kube-controller-manager + kube-scheduler (the same release as kube-apiserver) and kwok, built
# from the Go module proxy once per machine (docs/development.md): Deployments roll out for real.
workload:
	bash hack/build-cluster.sh workload kwok >/dev/null

# Traefik v3 (a real Gateway API data plane), built from the Go module proxy once per machine
# (about 7 min on 2 cores the first time, docs/development.md).
traefik:
	bash hack/build-cluster.sh traefik >/dev/null

# What the e2e suite and the demo run on (their default data plane): the three parts in parallel.
cluster-parts:
	bash hack/build-cluster.sh workload kwok traefik >/dev/null

prometheus:
	bash hack/install-prometheus.sh >/dev/null

# Debian's chromium + chromedriver: the dashboard's browser test (tests/integration/test_dashboard.py).
browser:
	bash hack/install-chromium.sh >/dev/null

# helm built from the Go module proxy, once per machine: only the chart tests use it (make test,
# make integration), not make demo or make e2e.
helm:
	bash hack/build-helm.sh >/dev/null

# Everything make test needs, helm included (after the control plane: it shares no Kubernetes
# package versions with it, so it is a build of its own, ~1 min on 2 cores).
deps: venv envtest helm prometheus browser cluster-parts
# What make demo and make e2e need: no helm.
demo-deps: venv envtest prometheus cluster-parts $(VENV)/.e2e-installed

lint: venv
	$(VENV)/bin/ruff check controller tests e2e bench
	$(VENV)/bin/mypy controller
	@# Every test module imports (a renamed name fails here in seconds, not 15 minutes in).
	$(PY) -m pytest -q --collect-only -p no:cacheprovider tests > /dev/null

crds: venv
	$(PY) -m controller.api.crdgen > $(CRD)
	cp $(CRD) $(CHART_CRD)

# Lint, tests/ and e2e/ all run, whatever fails first, so one run shows every result; the exit
# code is non-zero if any of them failed.
test: deps $(VENV)/.e2e-installed
	@failed=""; \
	$(MAKE) --no-print-directory lint || failed="$$failed lint"; \
	$(PY) -m pytest -q tests || failed="$$failed tests/"; \
	$(PY) -m pytest -q e2e || failed="$$failed e2e/"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi

unit: venv
	$(PY) -m pytest -q tests/unit

integration: deps
	$(PY) -m pytest -q tests/integration

cluster: venv envtest $(if $(WORKLOAD),workload)
	$(PY) -m tests.support.cluster $(if $(WORKLOAD),--workload)

# The demo's and the e2e suite's extra (scikit-learn for the model servers).
$(VENV)/.e2e-installed: $(VENV)/.installed pyproject.toml
	@echo "installing scikit-learn for the model servers into $(VENV) (one time, about 15 s)" >&2
	$(VENV)/bin/pip install -q -e '.[dev,e2e]'
	touch $@

# Real models, real traffic, real verdicts: four rollouts end to end (docs/demo.md).
# The first run builds the control plane and the cluster parts: about 14 min in all on 2 cores (README.md).
demo: demo-deps
	$(PY) -m e2e.demo

# LLM rollouts: stand-in vLLM servers behind InferencePools, judged on TTFT, finish reasons and cost (docs/llm.md).
demo-llm: demo-deps
	$(PY) -m e2e.demo --llm

# The end-to-end suite (e2e/README.md); E2E_CLUSTER=kind targets a kind cluster instead.
e2e: demo-deps
	$(PY) -m pytest -q e2e

# Start-up time of the local control plane, median of 5 runs (WORKLOAD=1: and of the workload
# controllers + kwok after it, what `make cluster WORKLOAD=1` adds).
bench-plane: venv envtest $(if $(WORKLOAD),workload)
	$(PY) -m tests.support.bench_plane 5 $(if $(WORKLOAD),--workload)

# Judge benchmark: sequential rule vs threshold and fixed-sample checks, and per segment (bench/segments.py),
# seeded, no cluster (~1 min).
bench-judge: venv
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) -m bench.judge --write
	$(PY) -m bench.labels --write

# N rollouts at once on one controller (real plane, Prometheus, controller process), and a soak;
# prints the table for docs/benchmarks.md "Scale" (~25 min on 2 cores before SETTLED; each size's
# settled phase adds creating them and about 1 min). SIZES/SETTLED/SOAK/SHARDS override.
SIZES ?= 100 1000
# Settled (promoted) rollouts created beside each size: what they cost is measured apart (target 0).
SETTLED ?= 1000
SOAK ?= 500x20
# Controller shards, one leader process each (docs/operations.md "Sharding"); 1: one controller.
SHARDS ?= 1
# Side by side with Argo Rollouts (bench/argo.py): ARGO=1000,10000 settled objects on each controller;
# with SIZES= SOAK= it runs alone (the first time it builds Argo Rollouts: about 6 min on one core).
ARGO ?=
# ARGO_CANARY=1000: N canaries in flight on each, on a plane that runs pods (bench/argo_canary.py).
ARGO_CANARY ?=
# The controller's --evidence-checkpoint (docs/operations.md "Evidence checkpoints"); 0s: every analysis written.
CHECKPOINT ?= 0s
bench-scale: venv envtest prometheus
	$(PY) -m bench.scale $(SIZES) --shards $(SHARDS) --settled $(SETTLED) --soak '$(SOAK)' --argo '$(ARGO)' \
		--argo-canary '$(ARGO_CANARY)' --evidence-checkpoint '$(CHECKPOINT)'

# What one status write costs kube-apiserver: the CRD as shipped, without its CEL rules, as a
# merge patch (bench/status_cost.py; three fresh planes, ~1 min).
bench-status-cost: venv envtest
	$(PY) -m bench.status_cost

# How soon a status change reaches a dashboard page: status writes -> server-sent events (~30 s).
bench-dashboard: venv envtest
	$(PY) -m bench.dashboard 100

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Reconcile lag of N rollouts with and without one slow (30 s) webhook receiver (~4 min on 2 cores).
bench-webhooks: venv envtest prometheus
	$(PY) -m bench.webhooks $(or $(N),100)
