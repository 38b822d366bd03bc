#!/usr/bin/env bash
# Puts a benchmark's section into docs/benchmarks.md: replaces the section
# whose "## " heading is the first line of SECTION_FILE (up to the next
# "## " heading), or appends it; other sections are kept.
#   bash scripts/bench-doc.sh SECTION_FILE
set -euo pipefail
cd "$(dirname "$0")/.."
section=$1
heading=$(head -1 "$section")
case "$heading" in
"## "*) ;;
*)
	echo "bench-doc: $section must start with a '## ' heading" >&2
	exit 2
	;;
esac
doc=docs/benchmarks.md
mkdir -p docs
[ -f "$doc" ] || printf '# drover benchmarks\n' >"$doc"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
awk -v section="$section" -v heading="$heading" '
	/^## / { if (skip) skip = 0 }
	$0 == heading { while ((getline l < section) > 0) print l; print ""; done = 1; skip = 1; next }
	!skip { print }
	END { if (!done) { print ""; while ((getline l < section) > 0) print l } }
' "$doc" >"$tmp"
cat -s "$tmp" >"$doc"
echo "bench-doc: wrote \"${heading#\#\# }\" in $doc" >&2
