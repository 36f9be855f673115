"""A fake MCP server for the aip-agent tests: newline-delimited JSON-RPC on stdin/stdout.

Usage: mcp_echo.py LOG

Appends every line it receives, byte for byte, to LOG. Answers every request (a message with
a method and an id) with {"jsonrpc":"2.0","id":<id>,"result":{"seen":<params>,"at":<unix time>}},
where "at" is when the line arrived. Also:
  test/emit  first writes each string of params.lines as a line of its own, verbatim;
  test/env   adds "env": the values of the environment variables named in params.names;
  test/exit  exits with status params.code without answering.
On SIGTERM or SIGINT it appends the signal's name to LOG and dies of the signal.
"""

import json
import os
import signal
import sys
import threading
import time

log_path = sys.argv[1]
STOP = {signal.SIGTERM, signal.SIGINT}


def on_signal():
    # A Python-level handler runs between bytecodes, so a signal landing just before the blocking
    # read would wait for the next line; a blocked signal taken by sigwait is never missed.
    signum = signal.sigwait(STOP)
    with open(log_path, "ab") as log:
        log.write(signal.Signals(signum).name.encode() + b"\n")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    signal.raise_signal(signum)


for signum in STOP:
    signal.signal(signum, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
threading.Thread(target=on_signal, daemon=True).start()
out = sys.stdout.buffer

for line in sys.stdin.buffer:
    at = time.time()
    with open(log_path, "ab") as log:
        log.write(line if line.endswith(b"\n") else line + b"\n")
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        continue
    params = message.get("params")
    if message["method"] == "test/exit":
        sys.exit(params["code"])
    if message["method"] == "test/emit":
        for text in params["lines"]:
            out.write(text.encode() + b"\n")
    result = {"seen": params, "at": at}
    if message["method"] == "test/env":
        result["env"] = {name: os.environ.get(name) for name in params["names"]}
    response = {"jsonrpc": "2.0", "id": message["id"], "result": result}
    out.write(json.dumps(response).encode() + b"\n")
    out.flush()
