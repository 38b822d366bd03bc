# Sourced by the test, bench and demo scripts: where things are.
: "${DROVER_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/drover}"
export DROVER_CACHE
export DROVER_BIN="${DROVER_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin}"
export DROVER_REF_PLUGINS="${DROVER_REF_PLUGINS:-$DROVER_CACHE/cni-plugins-v1.10.0}"
