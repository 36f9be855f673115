#!/usr/bin/env python3
"""An MCP server protected by the authority, built with the official MCP Python SDK.

Usage: protected_mcp_server.py ISSUER

Serves Streamable HTTP at http://127.0.0.1:<free port>/mcp with the SDK's resource-server
auth: RFC 9728 protected resource metadata naming ISSUER (the authority) as its authorization
server and the tool name as its one scope, and a `TokenVerifier` that checks each bearer AAT
with joserfc against ISSUER's `/v1/jwks` (`aat_verify.py`): signature, `iss` = ISSUER, `aud`
= this server's resource URL. Tokens without the scope `whoami` are refused (403).

Its one tool, `whoami`, answers with what the verified token says: the agent, its audience,
issuer, jti and granted tools.

Once listening it prints `listening <resource URL>` on stdout; it runs until killed. Why a
token was refused goes to stderr.
"""

import asyncio
import socket
import sys

import uvicorn
from pydantic import BaseModel
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from aat_verify import AatRefused, AatVerifier

TOOL = "whoami"


class Identity(BaseModel):
    """What a verified access token says about its bearer."""

    agent: str
    aud: str | list[str] | None
    iss: str | None
    jti: str | None
    tools: list[str]


class JoserfcAatVerifier(TokenVerifier):
    """Accepts AATs of the authority for this resource, verified with joserfc."""

    def __init__(self, issuer: str, resource: str):
        self.resource = resource
        self.aats = AatVerifier(f"{issuer}/v1/jwks", issuer, resource)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await asyncio.to_thread(self.aats.verify, token)
        except AatRefused as e:
            print(f"refused a bearer token: {e}", file=sys.stderr, flush=True)
            return None
        return AccessToken(
            token=token,
            client_id=claims["agent"]["id"],
            scopes=list(claims.get("capabilities", {}).get("tools", [])),
            expires_at=claims["exp"],
            resource=self.resource,
            subject=claims["sub"],
            claims=claims,
        )


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    issuer = sys.argv[1].rstrip("/")
    # Bound before the app is built, so the resource URL names the real port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    resource = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"

    server = MCPServer(
        name="aip-interop",
        token_verifier=JoserfcAatVerifier(issuer, resource),
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=[TOOL],
            validate_token_resource=True,
        ),
        log_level="WARNING",
    )

    @server.tool(name=TOOL, description="What the verified access token says about its bearer")
    def whoami() -> Identity:
        token = get_access_token()
        claims = token.claims or {}
        return Identity(
            agent=token.client_id,
            aud=claims.get("aud"),
            iss=claims.get("iss"),
            jti=claims.get("jti"),
            tools=token.scopes,
        )

    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"listening {resource}", flush=True)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
