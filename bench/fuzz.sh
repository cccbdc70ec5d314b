#!/usr/bin/env bash
# fuzz.sh: fuzz every Fuzz target of the packages that have them (the
# handshake parsers and the whole-server FuzzServer in cmd/sluice), one after
# the other, for FUZZTIME each. New crashers land in the package's
# testdata/fuzz/<target>/ directory: commit them with the fix.
#
# usage: bench/fuzz.sh [target-regexp]     (default: every target)
# env:   FUZZTIME=5m   per target (a duration, or Nx for N runs)
#        PKGS="./handshake ./cmd/sluice"
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-5m}
PKGS=${PKGS:-"./handshake ./cmd/sluice"}
match=${1:-.}

failed=()
for pkg in $PKGS; do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' | grep -E -- "$match" || true); do
		echo "fuzz.sh: $pkg $target for $FUZZTIME" >&2
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
			failed+=("$pkg:$target")
		fi
	done
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz.sh: failing targets: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz.sh: ok" >&2
