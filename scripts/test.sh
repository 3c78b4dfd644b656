#!/usr/bin/env bash
# Runs the whole test suite the way CI does: vet and gofmt, then `go test -race ./...`
# against a real PostgreSQL started for this run (installed from Debian's packages when
# missing) and stopped afterwards, whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

unformatted=$(gofmt -l $(git ls-files '*.go' ; git ls-files --others --exclude-standard '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
$GO vet ./...

# SoftHSM2: a real PKCS #11 module for the HSM key-source tests.
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
	if ! apt-cache show softhsm2 >/dev/null 2>&1; then apt-get update -qq >/dev/null; fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
fi

eval "$(scripts/pg-test.sh start)"
trap 'scripts/pg-test.sh stop >/dev/null 2>&1 || true' EXIT

$GO test -race -timeout 20m -count=1 ./...
