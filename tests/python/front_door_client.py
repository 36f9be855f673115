#!/usr/bin/env python3
"""An agent using the official MCP Python SDK, unmodified, against an MCP server behind
aip-proxy's front door, driven one command at a time by a test.

Usage: front_door_client.py URL ISSUER AGENT_ID KEY_PEM ALG
       front_door_client.py --stdio COMMAND [ARG…]
       front_door_client.py --anonymous URL

URL is the front door's MCP endpoint; ISSUER the authority the agent expects to be sent to;
KEY_PEM the agent's key as `aip-ca agents export-key` wrote it (PKCS#8 PEM); ALG EdDSA or
ES256. The SDK is given no authority URL and no scope: `PrivateKeyJWTOAuthProvider` finds the
authority through the 401 and the protected resource metadata it points to, asks for the scope
the challenge names and gets a Bearer AAT from `/oauth/token` (client_credentials with an
SDK-signed private_key_jwt assertion). The client connects and initializes a session, then
reads one JSON command per line on stdin and answers each with one JSON line on stdout:
  {"op":"list"}                        -> {"ok":true,"tools":[names…]}
  {"op":"call","tool":T,"args":{…}}    -> {"ok":true,"content":[texts…],"structured":…,"is_error":B}
  {"op":"token"}                       -> {"ok":true,"access_token":…,"token_type":…,"scope":…,
                                           "expires_in":…,"claims":{the AAT's payload}}
  {"op":"quit"}                        -> {"ok":true,"quit":true}, then the session ends
With --stdio the SDK's stdio client runs COMMAND as its MCP server instead (`aip-agent
--upstream URL …`, which brings the AAT and the DPoP proofs itself; `token` is then refused);
with --anonymous it connects to URL without any authorization (a front door whose policy asks
for no AAT).
A JSON-RPC error answers {"ok":false,"error":{"code":…,"message":…,"data":…}}; any other failure
of a command {"ok":false,"error":{"code":null,"message":…,"data":null},"exception":TYPE}, and
the client goes on with the next command. When the session cannot be set up, it exits 1 with
the error on stderr.
"""

import asyncio
import json
import sys

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider, SignedJWTParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

# The token storage and payload decoding of the one-shot SDK client next to this script.
from mcp_sdk_client import MemoryStorage, payload


def answer(value: dict) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def command(session: ClientSession, storage: MemoryStorage, request: dict) -> dict:
    op = request.get("op")
    if op == "list":
        listed = await session.list_tools()
        return {"ok": True, "tools": [tool.name for tool in listed.tools]}
    if op == "call":
        result = await session.call_tool(request["tool"], request.get("args") or {})
        return {
            "ok": True,
            "content": [block.text for block in result.content if getattr(block, "type", None) == "text"],
            "structured": result.structured_content,
            "is_error": bool(result.is_error),
        }
    if op == "token":
        tokens = storage.tokens
        if tokens is None:
            raise RuntimeError("the SDK holds no token")
        return {
            "ok": True,
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            "scope": tokens.scope,
            "expires_in": tokens.expires_in,
            "claims": payload(tokens.access_token),
        }
    raise ValueError(f"unknown op {op!r}")


async def run(url: str, issuer: str, agent_id: str, key_pem: str, alg: str) -> None:
    with open(key_pem, encoding="ascii") as f:
        signing_key = f.read()
    storage = MemoryStorage()
    provider = PrivateKeyJWTOAuthProvider(
        server_url=url,
        storage=storage,
        client_id=agent_id,
        assertion_provider=SignedJWTParameters(
            issuer=agent_id,
            subject=agent_id,
            signing_key=signing_key,
            signing_algorithm=alg,
        ).create_assertion_provider(),
        issuer=issuer,
    )
    async with httpx2.AsyncClient(auth=provider) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            await serve(read, write, storage)


async def run_anonymous(url: str) -> None:
    async with streamable_http_client(url) as (read, write):
        await serve(read, write, MemoryStorage())


async def run_stdio(command: list[str]) -> None:
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(params) as (read, write):
        await serve(read, write, MemoryStorage())


async def serve(read, write, storage: MemoryStorage) -> None:
    """Initializes a session, then answers the test's commands until `quit` or end of input."""
    async with ClientSession(read, write) as session:
        await session.initialize()
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return
            if not line.strip():
                continue
            request = json.loads(line)
            if request.get("op") == "quit":
                answer({"ok": True, "quit": True})
                return
            try:
                out = await command(session, storage, request)
            except MCPError as e:
                out = {"ok": False, "error": {"code": e.code, "message": e.message, "data": e.data}}
            except Exception as e:  # noqa: BLE001 - any failure is reported to the test
                out = {
                    "ok": False,
                    "error": {"code": None, "message": str(e), "data": None},
                    "exception": type(e).__name__,
                }
            answer(out)


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 2 else None
    if mode == "--stdio":
        session = run_stdio(sys.argv[2:])
    elif mode == "--anonymous" and len(sys.argv) == 3:
        session = run_anonymous(sys.argv[2])
    elif len(sys.argv) == 6:
        session = run(*sys.argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(session)
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        print(f"failed: {e!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
