# Sourced by bench/proxy/stdio-harness.sh and packaging/aip-proxy/symbol-order.sh once they have
# set `root` (the repository's top directory). Finds the release build, then builds the stdio
# harness's driver and echo server into a new working directory with its policies, and moves
# there. Sets: harness, target, proxy, requests, work.
#
# AIP_BENCH_HARNESS=DIR takes the harness from DIR instead of bench/harness; AIP_PROXY=FILE
# measures that binary instead of the release build's aip-proxy. CARGO_TARGET_DIR is honoured.
harness=$(cd "${AIP_BENCH_HARNESS:-$root/bench/harness}" && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$(pwd)/$target ;; esac
proxy=${AIP_PROXY:-$target/release/aip-proxy}
requests=$target/release/examples/aat-bench-requests
test -x "$proxy" && test -x "$requests" || {
  echo "build first: cargo build --release -p aip-proxy-verifier, then the same with --example aat-bench-requests" >&2
  exit 2
}
proxy=$(cd "$(dirname "$proxy")" && pwd)/$(basename "$proxy")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/driver" "$harness/driver.c"
gcc -O2 -o "$work/echo_server" "$harness/echo_server.c"
cp "$harness"/policy-*.yaml "$work/"
cd "$work"
