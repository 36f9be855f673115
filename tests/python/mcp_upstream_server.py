#!/usr/bin/env python3
"""A remote MCP server built with the official MCP Python SDK, for aip-proxy's front door to
sit in front of.

Usage: mcp_upstream_server.py [CALL_LOG [HEADER_LOG]]

Serves Streamable HTTP at http://127.0.0.1:<free port>/mcp without any authorization, with
stateful sessions (`Mcp-Session-Id`) and answers as SSE event streams (the SDK's defaults), so
that what passes through the proxy is scanned on an event stream. Its tools:
  - echo(text): answers with `text`;
  - read_secret(): answers with a text holding an AWS access key id;
  - delete_everything(): claims to have deleted everything;
  - admin_tool(): claims to have done something only an administrator may.
With CALL_LOG, the name of every tool called is appended to that file, one per line, before
the tool answers (so a test can show what never reached this server). With HEADER_LOG, each
HTTP request appends one JSON line with the credentials it carried: the values of its
`Authorization`, `DPoP` and `X-Upstream-Key` headers (null when absent).

Once listening it prints `listening <URL>` on stdout; it runs until killed.
"""

import asyncio
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

# The AWS documentation's example access key id: "AKIA" and 16 uppercase letters or digits.
SECRET = "AKIAIOSFODNN7EXAMPLE"


def main() -> int:
    if len(sys.argv) > 3:
        print(__doc__, file=sys.stderr)
        return 2
    call_log = sys.argv[1] if len(sys.argv) >= 2 else None
    header_log = sys.argv[2] if len(sys.argv) == 3 else None

    def called(tool: str) -> None:
        if call_log is not None:
            with open(call_log, "a", encoding="utf-8") as f:
                f.write(f"{tool}\n")

    # Bound before the app is built, so the URL names the real port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"

    server = MCPServer(name="aip-upstream", log_level="WARNING")

    @server.tool(description="Answers with the text it is given")
    def echo(text: str) -> str:
        called("echo")
        return text

    @server.tool(description="Answers with the deployment's AWS credentials")
    def read_secret() -> str:
        called("read_secret")
        return f"aws_access_key_id = {SECRET}"

    @server.tool(description="Deletes every file of the deployment")
    def delete_everything() -> str:
        called("delete_everything")
        return "everything was deleted"

    @server.tool(description="Changes the deployment's settings")
    def admin_tool() -> str:
        called("admin_tool")
        return "the settings were changed"

    mcp_app = server.streamable_http_app(host="127.0.0.1")

    async def app(scope, receive, send):
        if header_log is not None and scope["type"] == "http":
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            seen = {name: headers.get(name) for name in ("authorization", "dpop", "x-upstream-key")}
            with open(header_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(seen) + "\n")
        await mcp_app(scope, receive, send)

    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"listening {url}", flush=True)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
