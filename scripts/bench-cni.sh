#!/usr/bin/env bash
# CNI plugin benchmark: drover against the reference bridge + host-local
# plugins and a no-op floor, through libcni in-process, in namespaces the
# benchmark makes and removes. Prints a Markdown report and writes it into
# the "## CNI plugin" section of docs/benchmarks.md. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
go run ./test/cnibench -pods "${DROVER_BENCH_PODS:-110}" \
	-write docs/benchmarks.md -command "bash scripts/bench-cni.sh" "$@"
