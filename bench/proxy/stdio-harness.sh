#!/bin/sh
# Per-call overhead and peak RSS of aip-proxy on the stdio harness (bench/harness: driver.c,
# echo_server.c and the two bench policies, the harness that measured the Go reference proxy).
# Builds the harness into a temporary directory, then for each case prints the direct and
# proxied p50 (pingpong), the proxied pipelined throughput and the proxy's peak RSS, three runs
# each. Runs from any working directory; bench/README.md explains the output.
#
# The last case sends `file:` requests that each carry an AAT and a fresh per-call proof,
# written by the `aat-bench-requests` example just before each run (proofs are valid for 300 s),
# to a proxy that verifies them offline (issuer keys from a JWKS file, revocation from a signed
# list file) with the DLP policy; its direct baseline sends the same lines to the echo server.
#
# Each run also measures relay-floor.c in the proxy's place (`case=relay-floor`): a relay that
# copies bytes and looks at nothing, i.e. what the two extra pipe hops alone add that day.
#
# It first says whether the binary has the optional function layout of packaging/aip-proxy
# (check-layout.sh): a plain release build doesn't; packaging/aip-proxy/build.sh makes one that does.
#
# AIP_BENCH_PM_QOS=1 holds a PM QoS CPU latency request of 0 (/dev/cpu_dma_latency, root only)
# for the whole run, so idle cores poll instead of halting. On a virtual machine whose guest
# halt-polling is off (/sys/module/haltpoll/parameters/guest_halt_poll_ns = 0) every wake-up
# otherwise waits for the hypervisor, and the echo server's direct p50 reads ~50 µs instead of
# ~8 µs (docs/benchmarks.md). It applies to the direct and proxied runs alike.
#
# AIP_PROXY=FILE measures another aip-proxy binary; AIP_BENCH_HARNESS=DIR takes the harness from
# DIR (harness-setup.sh).
#
#   cargo build --release -p aip-proxy-verifier    # the binary users build
#   cargo build --release -p aip-proxy-verifier --example aat-bench-requests
#   bench/proxy/stdio-harness.sh [N]     # N calls per measurement, default 20000
set -eu
n=${1:-20000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ "${AIP_BENCH_PM_QOS:-0}" = 1 ]; then
  exec 3>/dev/cpu_dma_latency || { echo "AIP_BENCH_PM_QOS=1 needs write access to /dev/cpu_dma_latency" >&2; exit 2; }
  printf 0 >&3 # hex; the request lasts while descriptor 3 is open
fi
. "$here/harness-setup.sh"
gcc -O2 -pthread -o relay-floor "$here/relay-floor.c"
echo "proxy: $proxy"
"$root/packaging/aip-proxy/check-layout.sh" "$proxy" || true
field() { sed "s/.*$1=\([0-9.]*\).*/\1/"; }
for run in 1 2 3; do
  direct=$(./driver "$n" pingpong allowed ./echo_server | field p50_us)
  p50=$(./driver "$n" pingpong allowed "./relay-floor ./echo_server" | field p50_us)
  echo "run=$run case=relay-floor direct_p50_us=$direct proxy_p50_us=$p50 added_p50_us=$(echo "$p50 - $direct" | bc)"
  for case in "policy-only allowed policy-basic.yaml" "dlp allowed policy-dlp.yaml" "dlp-redacting secret policy-dlp.yaml"; do
    set -- $case
    proxied="$proxy --policy $3 --audit $work/audit.jsonl --target ./echo_server 2>/dev/null"
    direct=$(./driver "$n" pingpong "$2" ./echo_server | field p50_us)
    p50=$(./driver "$n" pingpong "$2" "$proxied" | field p50_us); rm -f audit.jsonl*
    rps=$(./driver "$n" pipeline "$2" "$proxied" | field rps); rm -f audit.jsonl*
    rss=$(./driver "$n" pingpong "$2" "/usr/bin/time -f maxrss_kb=%M $proxy --policy $3 --audit $work/audit.jsonl --target ./echo_server" 2>&1 | grep -o 'maxrss_kb=[0-9]*' | field maxrss_kb); rm -f audit.jsonl*
    echo "run=$run case=$1 direct_p50_us=$direct proxy_p50_us=$p50 added_p50_us=$(echo "$p50 - $direct" | bc) pipelined_calls_per_s=$rps max_rss_kb=$rss"
  done
  "$requests" "$work/aat" $((n + 200)) >/dev/null
  payload=file:$work/aat/requests.jsonl
  proxied="$proxy --policy $work/aat/policy-aat.yaml --audit $work/audit.jsonl --target ./echo_server 2>/dev/null"
  direct=$(./driver "$n" pingpong "$payload" ./echo_server | field p50_us)
  p50=$(./driver "$n" pingpong "$payload" "$proxied" | field p50_us); rm -f audit.jsonl*
  echo "run=$run case=aat+proof+dlp direct_p50_us=$direct proxy_p50_us=$p50 added_p50_us=$(echo "$p50 - $direct" | bc)"
done
