# petrel's build. Every target that runs code installs dependencies first
# (scripts/install-deps.sh: PostgreSQL, etcd-server, iproute2, haproxy,
# python3 and psql from Debian's packages, each when missing; the Go modules).

export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
BIN     := bin/petrel
UP_ARGS ?=

.PHONY: all build deps up down test bench chaos fmt vet clean

all: build

# petrel, the lean node agent `petrel node` runs in its place, and the
# agent's watchdog: all three in bin/, where each finds the next. Built
# static (Go's own DNS resolver and /etc/passwd lookups, no libc): the
# node agent is 2-3 MiB smaller resident without libc mapped.
TAGS ?= netgo,osusergo
build:
	@echo "building bin/petrel, bin/petrel-node, bin/petrel-watchdog (the first build compiles every module: a minute or two)"
	$(GO) build -tags $(TAGS) -o bin/ ./cmd/petrel ./cmd/petrel-node ./cmd/petrel-watchdog

deps:
	./scripts/install-deps.sh

# A local multi-region cluster in ./petrel-data; Ctrl-C (or `make down`) stops it.
# e.g. make up UP_ARGS='--regions scl=3,ord=2'
up: deps build
	@echo "starting the local cluster in ./petrel-data (Ctrl-C stops it)"
	./$(BIN) up $(UP_ARGS)

down:
	./$(BIN) down

# -p 1: the end-to-end packages start real Postgres clusters; one package
# at a time keeps a small machine responsive.
test: deps build
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -timeout 18m ./...

# Runs every benchmark program under bench/ (each directory with a main package).
bench: deps build
	@set -e; found=0; \
	for d in bench/*/; do \
		[ -d "$$d" ] || continue; \
		ls "$$d"*.go >/dev/null 2>&1 || continue; \
		found=1; echo "== $$d"; \
		$(GO) run "./$$d"; \
	done; \
	[ $$found = 1 ] || echo "no benchmarks under bench/"

# The long fault-injection run: random fault schedules against real
# clusters for CHAOS_DURATION; the report goes to ./chaos-report/ and every
# run's seed is printed (replay: go run ./cmd/petrel-chaos -seed N -runs 1).
CHAOS_DURATION ?= 30m
CHAOS_ARGS     ?=
chaos: deps build
	$(GO) run ./cmd/petrel-chaos -duration $(CHAOS_DURATION) -out chaos-report $(CHAOS_ARGS)

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
