# wsfleet on this machine. The logic lives in scripts/*.sh; these targets only call them.
#   make up [PORT=8000] [REDIS_PORT=6379] [REDIS_URL=redis://…]
#   make load-test [CONNECTIONS=100] [MESSAGES=100]

SHELL := bash
.DEFAULT_GOAL := help

PORT ?= 8000
CONNECTIONS ?= 100
MESSAGES ?= 100
export PORT CONNECTIONS MESSAGES

.PHONY: help up down status logs test fmt lint bench load-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-10s %s\n", $$1, $$2 }'

up: ## build, start Redis and one wsfleet instance (PORT, default 8000), wait until ready
	@bash scripts/up.sh

down: ## drain and stop the instance, then our Redis
	@bash scripts/down.sh

status: ## GET /status of the running instance
	@bash scripts/status.sh

logs: ## follow the logs in .run/
	@bash scripts/logs.sh

test: ## cargo test --workspace (needs redis-server on PATH)
	@bash scripts/test.sh

fmt: ## cargo fmt --all
	@bash scripts/lint.sh --fix

lint: ## cargo fmt --check and clippy -D warnings
	@bash scripts/lint.sh

bench: ## benchmarks (scripts/bench.sh)
	@test -f scripts/bench.sh || { echo "scripts/bench.sh does not exist yet"; exit 1; }
	@bash scripts/bench.sh

load-test: ## closed-loop load test against the running instance
	@bash scripts/load-test.sh
