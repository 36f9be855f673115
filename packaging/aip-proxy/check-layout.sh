#!/bin/sh
# Says whether an aip-proxy binary has the function layout of aip-proxy.symbol-order: how many of
# the listed functions it defines, and how far into its .text the last of them starts. Built by
# build.sh, the listed functions sit in the first 2–3 MB of the ~8.9 MB; in a plain build they
# are spread over all of it. Exits 1 when the binary is not laid out or the list is stale.
#
#   packaging/aip-proxy/check-layout.sh [BINARY]    # default: the release build's aip-proxy
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
binary=${1:-$target/release/aip-proxy}
order=$here/aip-proxy.symbol-order
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sort -u "$order" >"$tmp/listed"
# "NAME ADDRESS" for each defined symbol; nm pads addresses to 16 hex digits, so they sort as text.
nm --defined-only "$binary" | awk 'NF == 3 { print $3, $1 }' | sort -k1,1 >"$tmp/defined"
join "$tmp/listed" "$tmp/defined" >"$tmp/found"
listed=$(wc -l <"$tmp/listed")
found=$(cut -d' ' -f1 "$tmp/found" | sort -u | wc -l)
set -- $(readelf -SW "$binary" | awk '$2 == ".text" { print $4, $6 }')
text_start=$((0x$1)) text_kb=$((0x$2 / 1024))
last=$(cut -d' ' -f2 "$tmp/found" | sort | tail -n 1)
reach_kb=$(( (0x${last:-0} - text_start) / 1024 ))
verdict="laid out"
[ $((reach_kb * 3)) -lt "$text_kb" ] || verdict="link order: not laid out"
[ $((found * 10)) -ge $((listed * 9)) ] || verdict="stale list: regenerate with packaging/aip-proxy/symbol-order.sh"
echo "layout: $found of $listed listed functions are in the binary; the last starts ${reach_kb} kB into its ${text_kb} kB .text ($verdict)"
[ "$verdict" = "laid out" ]
