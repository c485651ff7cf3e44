# wsfleet on this machine. The logic lives in scripts/*.sh; these targets only call them.
#   make up [N=2] [PORT=8080] [REDIS_PORT=6379] [REDIS=single|sentinel|cluster] [REDIS_URL=redis://…] [RUNTIME=docker]
#   make scale N=4 | make promote | make status | make logs | make monitor | make down
#   make load-test [CONNECTIONS=5000] [MESSAGES=20] [SCENARIO=closed-loop] [ARGS="--json r.json"]
#   make bench [SECTION=closed-loop] | make fuzz [FUZZ_SECONDS=60]
# Variables given on the command line (N=4, PORT=8081, RUN_DIR=…) reach the scripts through
# the environment; the scripts hold the defaults.

SHELL := bash
.DEFAULT_GOAL := help

.PHONY: help up down scale promote status logs monitor test check-compose check-kubernetes fmt lint bench load-test fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-14s %s\n", $$1, $$2 }'

up: ## build, start Redis (REDIS=sentinel|cluster: a topology), N (2) instances and nginx on :8080; wait until ready
	@bash scripts/up.sh

down: ## drain and stop every instance, nginx and our Redis; nothing of ours is left
	@bash scripts/down.sh

scale: ## grow or shrink the live colour to N instances (make scale N=4)
	@bash scripts/scale.sh

promote: ## blue-green: build, start the other colour, smoke-test, switch nginx, drain the old
	@bash scripts/promote.sh

status: ## table of instances and fleet totals; exit 1 when the fleet is down (STATUS_JSON=1: raw)
	@bash scripts/status.sh

logs: ## follow every process's logs (prettier with jq)
	@bash scripts/logs.sh

monitor: ## live view: connections and message rate per instance, until Ctrl-C
	@bash scripts/monitor.sh

test: ## release build, compose file check, then cargo test --workspace (incl. the fleet e2e test)
	@bash scripts/test.sh

check-compose: ## static checks of compose/ (no Docker engine needed)
	@bash scripts/check-compose.sh

check-kubernetes: ## offline checks of deploy/kubernetes/ (kubectl kustomize, kubernetes-validate)
	@bash scripts/check-kubernetes.sh

fmt: ## cargo fmt --all
	@bash scripts/lint.sh --fix

lint: ## cargo fmt --check and clippy -D warnings
	@bash scripts/lint.sh

bench: ## wsfleet vs its ceilings on its own fleet; writes docs/benchmarks/results.md (SECTION=one)
	@bash scripts/bench.sh $(SECTION)

fuzz: ## run each cargo-fuzz target of fuzz/ for FUZZ_SECONDS (60); needs no nightly
	@bash scripts/fuzz.sh

load-test: ## closed-loop load test through nginx (CONNECTIONS=5000 MESSAGES=20, ARGS=…)
	@bash scripts/load-test.sh $(ARGS)
