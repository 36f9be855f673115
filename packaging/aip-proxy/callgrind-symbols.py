#!/usr/bin/env python3
"""Print the functions of BINARY that callgrind saw execute, hottest first.

    callgrind-symbols.py [--also REGEX]... BINARY CALLGRIND_OUT...

Reads callgrind output files (written with --demangle=no), adds up each function's own
instruction count over all files, keeps the functions that live in BINARY and are defined text
symbols of it (per `nm`), and prints their symbol names one per line, by descending count. Then
come the defined text symbols that match an --also pattern and aren't listed yet: code that runs
natively but not under valgrind, which hides some CPU features (SHA-NI, say) from the program.
The list is the input of lld's --symbol-ordering-file (see symbol-order.sh and build.sh).
"""

import os
import re
import subprocess
import sys
from collections import Counter

NAMED = re.compile(r"^(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$")


def self_costs(path, binary):
    """Own instruction count per function name, for the functions of `binary` in one file."""
    objects, functions = {}, {}
    costs = Counter()
    in_binary, current_function = False, None
    skip_call_cost = False
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            line = line.rstrip("\n")
            named = NAMED.match(line)
            if named:
                kind, key, name = named.groups()
                table = objects if kind in ("ob", "cob") else functions
                if name is not None:
                    table[key] = name
                if kind == "ob":
                    in_binary = os.path.realpath(objects[key]) == binary
                elif kind == "fn":
                    current_function = functions[key]
                continue
            if line.startswith("calls="):
                # The next cost line is the inclusive cost of that call, not the caller's own.
                skip_call_cost = True
                continue
            if not line or not (line[0].isdigit() or line[0] in "+-*"):
                continue
            if skip_call_cost:
                skip_call_cost = False
                continue
            if not in_binary or current_function is None:
                continue
            fields = line.split()
            if len(fields) > 1:
                costs[current_function] += int(fields[1])
    return costs


def text_symbols(binary):
    listing = subprocess.run(
        ["nm", "--defined-only", binary], check=True, capture_output=True, text=True
    ).stdout
    return {fields[2] for fields in map(str.split, listing.splitlines())
            if len(fields) == 3 and fields[1] in "tTwW"}


def main():
    args, also = sys.argv[1:], []
    while len(args) >= 2 and args[0] == "--also":
        also.append(re.compile(args[1]))
        args = args[2:]
    if len(args) < 2:
        sys.exit("usage: callgrind-symbols.py [--also REGEX]... BINARY CALLGRIND_OUT...")
    binary = os.path.realpath(args[0])
    total = Counter()
    for path in args[1:]:
        total.update(self_costs(path, binary))
    defined = text_symbols(binary)
    # Callgrind marks a recursive activation with a '<digit> suffix; it is the same function.
    merged = Counter()
    for name, cost in total.items():
        merged[re.sub(r"'\d+$", "", name)] += cost
    listed = [name for name, _ in sorted(merged.items(), key=lambda item: (-item[1], item[0]))
              if name in defined]
    extra = sorted(name for name in defined - set(listed)
                   if any(pattern.search(name) for pattern in also))
    print("\n".join(listed + extra))


if __name__ == "__main__":
    main()
