# Two commands: `make run` starts the server with demo data; `make test` runs every test,
# installing and starting what the tests need (PostgreSQL) when it is missing.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: run build test test-short vet fmt bench clean

run: build
	./bin/pulsebase serve --demo --device-mtls-addr 127.0.0.1:8443

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/pulsebase ./cmd/pulsebase

# test: vet, gofmt, then the whole suite with the race detector against a throwaway
# PostgreSQL cluster that scripts/pg-test.sh installs (if needed), starts and stops.
test:
	@scripts/test.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

clean:
	rm -rf bin pulsebase-data
