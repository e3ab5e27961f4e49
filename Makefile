# Cordon: every entry point. `make help` lists them.
#
# Builds share one cargo target directory; set CARGO_TARGET_DIR to keep it outside the clone
# (.ci/run does). The Python tools (moto, pytest) live in a project-local virtualenv, .venv/.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export CARGO_TARGET_DIR ?= $(CURDIR)/target
PYTHON ?= python3
VENV := $(CURDIR)/.venv
VPY := $(VENV)/bin/python
BIN_DIR := $(CARGO_TARGET_DIR)/debug
STATE_DIR := $(CURDIR)/.local
LOCAL_AWS = cd integration-tests && CORDON_TEMPLATE=$(LOCAL_TEMPLATE) CORDON_BIN_DIR=$(BIN_DIR) $(VPY) -m local_aws

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: integration-tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r integration-tests/requirements.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Install the local AWS stack's Python tools (moto, boto3, pytest) into .venv/

.PHONY: build
build: ## Build every step binary (debug profile, as the local stack runs them)
	cargo build --locked --workspace --bins

# The template the local stack deploys from: the CDK app synthesized with placeholder code and the
# local context (every optional rule switched on), so roles, API templates and rules are the real ones.
LOCAL_TEMPLATE := $(STATE_DIR)/cdk.out/Cordon.template.json
LOCAL_CONTEXT := -c placeholderCode=true -c guardDutySeverity=4
CDK_SOURCES := $(wildcard cdk/lib/*.ts cdk/bin/*.ts) cdk/cdk.json statemachine.asl.json

$(LOCAL_TEMPLATE): $(CDK_SOURCES) $(CURDIR)/cdk/node_modules/.installed
	cd cdk && CDK_DISABLE_CLI_TELEMETRY=true npx cdk synth --no-notices -q $(LOCAL_CONTEXT) -o $(STATE_DIR)/cdk.out >/dev/null

.PHONY: local-template
local-template: $(LOCAL_TEMPLATE) ## Synthesize the template the local stack deploys from (.local/cdk.out)

.PHONY: local-up
local-up: venv build local-template ## Start the local AWS stack and print its environment (leave it running)
	@$(LOCAL_AWS) up --bin-dir $(BIN_DIR) --state-dir $(STATE_DIR)

.PHONY: local-down
local-down: ## Stop the local AWS stack
	@if [ -x $(VPY) ]; then $(LOCAL_AWS) down --state-dir $(STATE_DIR); fi

# FAIL_AT="Quarantine network" (a containment state of integration-tests/local_aws/failures.py,
# with or without ": final attempt"): the response fails there, is announced, the fault is removed
# and the execution redriven.
FAIL_AT ?=
.PHONY: demo
demo: venv build local-template ## Run a full incident response on the seeded instance in the local stack (FAIL_AT="Quarantine network": fail there, then redrive)
	@$(LOCAL_AWS) down --state-dir $(STATE_DIR) >/dev/null 2>&1 || true
	@$(LOCAL_AWS) up --bin-dir $(BIN_DIR) --state-dir $(STATE_DIR) >/dev/null
	@status=0; ($(LOCAL_AWS) demo --state-dir $(STATE_DIR) $(if $(FAIL_AT),--fail-at '$(FAIL_AT)')) || status=$$?; \
	  ($(LOCAL_AWS) down --state-dir $(STATE_DIR) >/dev/null); exit $$status

$(VENV)/.bench-installed: bench/requirements.txt $(VENV)/.installed
	$(VPY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

FLEET ?= 25
RUNS ?= 7
.PHONY: bench
bench: venv $(VENV)/.bench-installed local-template ## Cold start, memory, size, containment time, fleet (FLEET=25) vs a boto3 baseline: bench/results.json
	cargo build --release --locked --workspace --bins
	CORDON_TEMPLATE=$(LOCAL_TEMPLATE) $(VPY) bench/bench.py --bin-dir $(CARGO_TARGET_DIR)/release --runs $(RUNS) --fleet $(FLEET)

.PHONY: fmt
fmt: ## Format the Rust code
	cargo fmt --all

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests (AWS mocked on the real SDK clients)
	cargo test --locked --workspace

.PHONY: integration
integration: venv build local-template ## Integration tests: the real state machine and binaries on the local stack
	cd integration-tests && CORDON_TEMPLATE=$(LOCAL_TEMPLATE) CORDON_BIN_DIR=$(BIN_DIR) $(VPY) -m pytest -q -p no:cacheprovider

$(CURDIR)/cdk/node_modules/.installed: cdk/package.json cdk/package-lock.json
	cd cdk && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: cdk-deps
cdk-deps: $(CURDIR)/cdk/node_modules/.installed ## Install the CDK and ASL tooling (pinned, npm ci) into cdk/node_modules

.PHONY: asl
asl: cdk-deps ## Validate statemachine.asl.json with asl-validator
	cd cdk && npm run -s lint:asl

.PHONY: cdk-test
cdk-test: venv cdk-deps ## CDK tests (template assertions, cdk-nag) and cfn-lint, no AWS account, no Rust build
	cd cdk && npm test
	cd cdk && CFN_LINT=$(VENV)/bin/cfn-lint npm run -s lint:cfn

.PHONY: policy-lint
policy-lint: venv local-template ## Lint every policy of the synthesized template with parliament (acknowledgements: integration-tests/local_aws/policy_lint_acknowledgements.json)
	cd integration-tests && CORDON_TEMPLATE=$(LOCAL_TEMPLATE) $(VPY) -m local_aws.policy_lint

.PHONY: synth
synth: cdk-deps ## Write the CloudFormation template to cdk/cdk.out (placeholder function code)
	cd cdk && npm run -s synth
	@echo "template: cdk/cdk.out/Cordon.template.json"

.PHONY: deploy
deploy: venv cdk-deps ## Build the step binaries for Lambda (arm64) and deploy with the CDK (needs AWS credentials)
	$(VPY) -m pip install --quiet --disable-pip-version-check cargo-lambda==1.9.2
	PATH="$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 --locked
	cd cdk && npm run -s deploy -- $(CDK_ARGS)

.PHONY: destroy
destroy: cdk-deps ## Remove the stack (the evidence bucket, its key and the logs are kept)
	cd cdk && npm run -s destroy -- $(CDK_ARGS)

.PHONY: scripts-test
scripts-test: venv ## shellcheck the collection scripts and run linux.sh for real (read-only checks)
	PATH="$(VENV)/bin:$$PATH" bash steps/ssm-collect/scripts/test_linux.sh

.PHONY: test
test: lint unit asl scripts-test cdk-test policy-lint integration ## Everything CI runs: lint, unit tests, ASL, CDK and policy checks, scenarios on the local stack (with the action-coverage check)

.PHONY: clean
clean: local-down ## Remove build output, the virtualenv and local stack state
	rm -rf $(VENV) $(STATE_DIR) target cdk/node_modules cdk/cdk.out
