#!/usr/bin/env bash
# The test command: set-up, lint, build, then every test with the race
# detector, as root, in namespaces, loop devices and mounts the tests make.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
make --no-print-directory lint
make --no-print-directory build
go test -race -count=1 -timeout 40m ./... "$@"
