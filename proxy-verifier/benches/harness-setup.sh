# Sourced by stdio-harness.sh and symbol-order.sh after they set `harness` (the shared harness's
# directory). Checks the release build, then builds the harness's driver and echo server into a
# new working directory with its policies, and moves there. Sets: benches, root, proxy,
# requests, order (the function list of proxy-verifier/build.rs), work.
benches=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$benches/../.." && pwd)
proxy=$root/target/release/aip-proxy
requests=$root/target/release/examples/aat-bench-requests
order=$root/proxy-verifier/link/aip-proxy.symbol-order
test -x "$proxy" && test -x "$requests" || {
  echo "build first: cargo build --release -p aip-proxy-verifier, then the same with --example aat-bench-requests" >&2
  exit 2
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/driver" "$harness/driver.c"
gcc -O2 -o "$work/echo_server" "$harness/echo_server.c"
cp "$harness"/policy-*.yaml "$work/"
cd "$work"
