#!/bin/sh
# Builds the release aip-proxy with the functions it runs laid out together at the start of .text
# (lld's --symbol-ordering-file with aip-proxy.symbol-order), then checks that the layout took.
# The binary lands where `cargo build --release` puts it (target/release/aip-proxy, or under
# CARGO_TARGET_DIR). README.md says why and when.
#
#   packaging/aip-proxy/build.sh
#
# `cargo rustc` hands the options to the final link of that one binary only: every crate keeps the
# symbol names of `cargo build --release -p aip-proxy-verifier`, the build the list is made from,
# and only this binary is linked again (RUSTFLAGS would recompile every crate). The option is
# lld's, rustc's default linker on x86_64 Linux; GNU ld refuses it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
order=$here/aip-proxy.symbol-order
# -Xlinker passes each argument whole (a comma in the path would split a -Wl, argument).
cargo rustc --release --locked --manifest-path "$here/../../Cargo.toml" \
  -p aip-proxy-verifier --bin aip-proxy -- \
  -C link-arg=-Xlinker -C "link-arg=--symbol-ordering-file=$order" \
  -C link-arg=-Xlinker -C link-arg=--no-warn-symbol-ordering
"$here/check-layout.sh"
