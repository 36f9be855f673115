#!/bin/sh
# Regenerates proxy-verifier/link/aip-proxy.symbol-order, the order in which the linker lays out
# the functions aip-proxy runs, so that they sit together at the start of .text.
#
# Why: the kernel maps an executable's page-cache pages 64 kB at a time around each fault
# ("fault-around"), so the resident size of .text is 64 kB per distinct 64 kB window that runs
# anything. Left in link order, the code the proxy runs is spread over ~80 of the ~140 windows of
# its 8.9 MB .text (~5 MB resident); laid out together, ~2.3 MB is resident (docs/benchmarks.md).
#
# How: runs each case of the shared stdio harness (policy only, DLP, DLP redacting, AAT + proof
# + DLP) under callgrind with a few thousand calls, and writes the executed functions of the
# binary, hottest first (callgrind-symbols.py). proxy-verifier/build.rs hands the file to lld
# for release builds. Symbol names carry hashes that change with dependency or toolchain
# upgrades, and with the features a build unifies: building the example in the same command
# as the binary turns on dev-dependency features and renames most functions, hence the two
# commands below. Names the linker doesn't find are skipped, so a stale file costs memory,
# never correctness. Regenerate after such upgrades:
#
#   cargo build --release -p aip-proxy-verifier    # the binary users build
#   cargo build --release -p aip-proxy-verifier --example aat-bench-requests
#   proxy-verifier/benches/symbol-order.sh HARNESS_DIR     # needs valgrind and python3
set -eu
harness=$(cd "${1:?usage: symbol-order.sh HARNESS_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
proxy=$root/target/release/aip-proxy
requests=$(dirname "$proxy")/examples/aat-bench-requests
out=$root/proxy-verifier/link/aip-proxy.symbol-order
test -x "$proxy" && test -x "$requests" || {
  echo "build first: cargo build --release -p aip-proxy-verifier, then the same with --example aat-bench-requests" >&2
  exit 2
}
command -v valgrind >/dev/null || { echo "symbol-order.sh needs valgrind" >&2; exit 2; }
n=2000
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/driver" "$harness/driver.c"
gcc -O2 -o "$work/echo_server" "$harness/echo_server.c"
cp "$harness"/policy-*.yaml "$work/"
cd "$work"
"$requests" "$work/aat" $((n + 200)) >/dev/null
profile() { # NAME PAYLOAD POLICY
  ./driver "$n" pingpong "$2" "valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/$1.cg $proxy --policy $3 --audit $work/audit.jsonl --target ./echo_server 2>/dev/null" >/dev/null
  rm -f audit.jsonl*
}
profile policy-only allowed policy-basic.yaml
profile dlp allowed policy-dlp.yaml
profile dlp-redacting secret policy-dlp.yaml
profile aat "file:$work/aat/requests.jsonl" "$work/aat/policy-aat.yaml"
mkdir -p "$(dirname "$out")"
# Valgrind hides SHA-NI, so natively SHA-256 runs a compress function callgrind never sees.
python3 "$root/proxy-verifier/benches/callgrind-symbols.py" \
  --also '^_ZN4sha26sha2567x86_sha8compress' "$proxy" ./*.cg >"$out.tmp"
mv "$out.tmp" "$out"
echo "$(wc -l <"$out") functions -> $out"
