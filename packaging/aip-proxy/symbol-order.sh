#!/bin/sh
# Regenerates aip-proxy.symbol-order (next to this script), the order in which build.sh has the
# linker lay out the functions aip-proxy runs, so that they sit together at the start of .text.
#
# Why: the kernel maps an executable's page-cache pages 64 kB at a time around each fault
# ("fault-around"), so the resident size of .text is 64 kB per distinct 64 kB window that runs
# anything. Left in link order, the code the proxy runs is spread over ~80 of the ~140 windows of
# its 8.9 MB .text (~5 MB resident); laid out together, ~2.3 MB is resident (docs/decisions.md).
#
# How: runs each case of the stdio harness (bench/harness: policy only, DLP, DLP redacting, AAT
# + proof + DLP) under callgrind with a few thousand calls, and writes the executed functions of
# the binary, hottest first (callgrind-symbols.py). Then it runs the DLP case once more with the
# registry link (a real `aip-ca serve`, cached revocation mode: keys, list and event stream over
# HTTP) and appends what only that run executed, so that the harness cases' functions stay
# packed together.
#
# Symbol names carry hashes that change with dependency or toolchain upgrades, with the
# features a build unifies (building the example in the same command as the binary turns on
# dev-dependency features and renames most functions, hence the two commands below), and with
# the package's build units (adding or removing a build script renames every function of
# aip-proxy-verifier). Names the linker doesn't find are skipped, so a stale file costs memory,
# never correctness; check-layout.sh says when it is stale. Regenerate after such changes, from
# a plain release build (or one made by build.sh: the names are the same):
#
#   cargo build --release -p aip-proxy-verifier
#   cargo build --release -p aip-proxy-verifier --example aat-bench-requests
#   cargo build -p aip-cli --bin aip-ca                    # any profile: it only serves
#   packaging/aip-proxy/symbol-order.sh                    # needs valgrind, python3, curl
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
order=$here/aip-proxy.symbol-order
command -v valgrind >/dev/null || { echo "symbol-order.sh needs valgrind" >&2; exit 2; }
. "$root/bench/proxy/harness-setup.sh"
ca=${AIP_CA:-$target/debug/aip-ca}
test -x "$ca" || { echo "build first: cargo build -p aip-cli --bin aip-ca (or set AIP_CA)" >&2; exit 2; }
ca_pid=
trap '[ -z "$ca_pid" ] || kill "$ca_pid" 2>/dev/null; rm -rf "$work"' EXIT
n=2000
"$requests" "$work/aat" $((n + 200)) >/dev/null
profile() { # NAME PAYLOAD POLICY
  ./driver "$n" pingpong "$2" "valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/$1.cg $proxy --policy $3 --audit $work/audit.jsonl --target ./echo_server 2>/dev/null" >/dev/null
  rm -f audit.jsonl*
}
profile policy-only allowed policy-basic.yaml
profile dlp allowed policy-dlp.yaml
profile dlp-redacting secret policy-dlp.yaml
profile aat "file:$work/aat/requests.jsonl" "$work/aat/policy-aat.yaml"

# The registry link, against a real authority on a free loopback port.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry=http://127.0.0.1:$port
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
admin=$("$ca" init --dir "$work/ca" --listen "127.0.0.1:$port" --insecure-no-passphrase --json 2>/dev/null |
  json_field admin_token)
"$ca" serve --dir "$work/ca" >"$work/serve.log" 2>&1 &
ca_pid=$!
for _ in $(seq 100); do curl -sf "$registry/health" >/dev/null && break; sleep 0.1; done
reader=$("$ca" access-token create --role reader --json --registry "$registry" --token "$admin" |
  json_field token)
cat policy-dlp.yaml - >policy-registry.yaml <<EOF
  registry:
    enabled: true
    endpoint: "$registry"
    revocation:
      mode: cached
      check_interval: 60s
    auth:
      type: bearer
      token: "$reader"
  aat:
    enabled: true
    require: false
    trusted_issuers: ["$registry"]
EOF
mkdir registry && profile registry/dlp-redacting secret policy-registry.yaml

# Valgrind hides SHA-NI, so natively SHA-256 runs a compress function callgrind never sees.
python3 "$here/callgrind-symbols.py" \
  --also '^_ZN4sha26sha2567x86_sha8compress' "$proxy" ./*.cg >"$order.tmp"
python3 "$here/callgrind-symbols.py" "$proxy" registry/*.cg |
  grep -vxF -f "$order.tmp" >>"$order.tmp" || true
mv "$order.tmp" "$order"
echo "$(wc -l <"$order") functions -> $order"
