#!/usr/bin/env bash
# Benchmarks the drover/local Flexvolume driver against the same steps done
# by hand (losetup, mkfs.ext4, mount, mount --bind) in the same run, and
# rewrites the "## Flexvolume driver" section of docs/benchmarks.md (other
# sections are kept, scripts/bench-doc.sh). Needs root, e2fsprogs and util-linux.
#   bash scripts/bench-flexvolume.sh [-n 30] [-volumes 50] [-size 256Mi]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "bench-flexvolume: needs root (loop devices, mkfs, mounts)" >&2
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 go build -trimpath -o "$tmp/local" ./flexvolume/local
go build -o "$tmp/bench" ./test/flexvolume/bench
"$tmp/bench" -driver "$tmp/local" "$@" >"$tmp/result.md"
cat "$tmp/result.md"

{
	echo "## Flexvolume driver"
	echo
	echo "Command: \`bash scripts/bench-flexvolume.sh${*:+ $*}\` (as root; \`make bench\` runs it)."
	echo "Wall time per call as kubelet sees it (the driver's includes its process"
	echo "start); the hand path execs losetup, mkfs.ext4 (same options as the"
	echo "driver), mount and mount --bind directly, no shell; unmount by hand is"
	echo "umount, umount, losetup -d. p99 is the nearest-rank maximum at this"
	echo "sample size."
	echo
	cat "$tmp/result.md"
} >"$tmp/section.md"
bash scripts/bench-doc.sh "$tmp/section.md"
