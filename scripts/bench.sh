#!/usr/bin/env bash
# The benchmarks (docs/benchmarks.md): each part measures drover against a
# reference in the same run and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
make --no-print-directory build >/dev/null
for b in scripts/bench-cni.sh scripts/bench-flexvolume.sh scripts/bench-overlay.sh scripts/bench-scale.sh; do
	echo "== $b"
	bash "$b"
done
echo "== scripts/e2e.sh bench"
bash scripts/e2e.sh bench
