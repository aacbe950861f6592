# petrel's build. Every target that runs code installs dependencies first
# (scripts/install-deps.sh: PostgreSQL, etcd-server, iproute2, haproxy,
# python3 and psql from Debian's packages, each when missing; the Go modules).

export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
BIN     := bin/petrel
UP_ARGS ?=

.PHONY: all build deps up down test bench chaos fmt vet clean package package-test

# petrel's version; the commit is git's. Both are linked into the binaries
# (`petrel version`, and every member's record in status).
VERSION ?= 0.1.0
COMMIT  := $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/petrel-db/petrel/internal/version.Version=$(VERSION) -X github.com/petrel-db/petrel/internal/version.Commit=$(COMMIT)

all: build

# petrel, the lean node agent `petrel node` runs in its place, and the
# agent's watchdog: all three in bin/, where each finds the next. Built
# static (Go's own DNS resolver and /etc/passwd lookups, no libc): the
# node agent is 2-3 MiB smaller resident without libc mapped.
TAGS ?= netgo,osusergo
build:
	@echo "building bin/petrel, bin/petrel-node, bin/petrel-watchdog (the first build compiles every module: a minute or two)"
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/ ./cmd/petrel ./cmd/petrel-node ./cmd/petrel-watchdog

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

# The Debian package (dist/petrel_<version>_amd64.deb): the three binaries
# (static, CGO off), systemd units for petrel node, proxy and edge, a
# commented /etc/petrel.toml and /etc/petrel/secrets.env (0600). Built by
# nfpm, run from its module at a pinned version (packaging/nfpm.yaml).
NFPM        ?= github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKG_VERSION := $(VERSION)+git$(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
package:
	@echo "building the binaries for the package (static) into dist/bin"
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o dist/bin/ ./cmd/petrel ./cmd/petrel-node ./cmd/petrel-watchdog
	@echo "packaging petrel $(PKG_VERSION) with nfpm (the first run downloads and builds nfpm)"
	rm -f dist/petrel_*.deb
	VERSION=$(PKG_VERSION) $(GO) run $(NFPM) package --config packaging/nfpm.yaml --packager deb --target dist/
	@ls -l dist/*.deb

# Installs the package on a clean Debian root (a debootstrap chroot, made
# from Debian's packages) and starts a node from it against an etcd on
# loopback: scripts/package-test.sh. Needs root.
package-test: package
	./scripts/package-test.sh dist/petrel_*.deb

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...

clean:
	rm -rf bin dist
