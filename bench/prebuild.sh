#!/usr/bin/env bash
# prebuild.sh DIR: build sluice, sluice-bench and the Go peer (go-socks5,
# from bench/gopeer) as static binaries into DIR, each with its build info
# (go version -m: Go release, commit) in DIR/NAME.buildinfo, so that the bench
# scripts run with BIN=DIR on a machine that has no Go (copy the repository
# and DIR there) and still say what they measured. GOOS and GOARCH pass
# through for another target.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 1 ] || { echo "usage: bench/prebuild.sh DIR" >&2; exit 2; }
mkdir -p "$1"
dir=$(cd "$1" && pwd)
export CGO_ENABLED=0
# -buildvcs=auto: the commit is recorded even where GOFLAGS turns that off.
go build -trimpath -buildvcs=auto -o "$dir/sluice" ./cmd/sluice
go build -trimpath -buildvcs=auto -o "$dir/sluice-bench" ./cmd/sluice-bench
(cd bench/gopeer && go build -trimpath -buildvcs=auto -o "$dir/go-socks5" .)
for b in sluice sluice-bench go-socks5; do go version -m "$dir/$b" >"$dir/$b.buildinfo"; done
echo "built into $dir: sluice sluice-bench go-socks5 (run the bench scripts with BIN=$dir)"
