#!/usr/bin/env bash
# droverd at scale against a real kube-apiserver: 1000 and 5000 Node
# objects, time until every peer is programmed, peak RSS, and join latency.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/kube-build.sh kube-apiserver >/dev/null
go test -run '^$' -bench . -benchtime 1x -timeout 30m ./test/scalebench/ | grep -E '^\||Benchmark|ok|FAIL'
