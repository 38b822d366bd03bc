#!/usr/bin/env bash
# The test command: set-up, lint, build, then every test with the race
# detector, as root, in namespaces, loop devices and mounts the tests make,
# then the real-node suite (kubelet and containerd per node, scripts/e2e.sh).
# With arguments (go test flags such as -run X) only the first part runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
make --no-print-directory lint
make --no-print-directory build
go test -race -count=1 -timeout 40m ./... "$@"
if [ $# -eq 0 ]; then
	bash scripts/e2e.sh
fi
