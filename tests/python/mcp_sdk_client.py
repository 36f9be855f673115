#!/usr/bin/env python3
"""An agent using the official MCP Python SDK, unmodified, against an MCP server the authority
protects: `PrivateKeyJWTOAuthProvider` with SDK-signed assertions (`SignedJWTParameters`).

Usage: mcp_sdk_client.py SERVER_URL ISSUER AGENT_ID KEY_PEM ALG TOOL

KEY_PEM is the agent's key as `aip-ca agents export-key` wrote it (PKCS#8 PEM); ALG is EdDSA
or ES256. The SDK finds the authority through the server's protected resource metadata, gets
an AAT from `/oauth/token` (client_credentials, private_key_jwt, `resource` = the server), and
calls TOOL. Prints one JSON object on stdout:
  {"result": <the tool's structured result>, "access_token": AAT, "token_type": …,
   "scope": …, "expires_in": …, "claims": <the AAT's payload, decoded>}
Exits 1 with the error on stderr when anything fails.
"""

import asyncio
import base64
import json
import sys

from mcp.client.auth import TokenStorage
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

# The snippets between the --8<-- markers are docs/issuer.md's example ("Standard OAuth
# clients"); a test keeps the two the same.
# --8<-- [start:imports]
import httpx2
from mcp import ClientSession
from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider, SignedJWTParameters
from mcp.client.streamable_http import streamable_http_client
# --8<-- [end:imports]


class MemoryStorage(TokenStorage):
    """Tokens and client information kept for the life of the process."""

    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def payload(token: str) -> dict:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


async def run(server_url: str, issuer: str, agent_id: str, key_pem: str, alg: str, tool: str) -> dict:
    with open(key_pem, encoding="ascii") as f:
        signing_key = f.read()
    storage = MemoryStorage()
    # --8<-- [start:provider]
    provider = PrivateKeyJWTOAuthProvider(
        server_url=server_url,
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
        async with streamable_http_client(server_url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool(tool, {})
    # --8<-- [end:provider]
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")
    tokens = storage.tokens
    return {
        "result": result.structured_content,
        "access_token": tokens.access_token,
        "token_type": tokens.token_type,
        "scope": tokens.scope,
        "expires_in": tokens.expires_in,
        "claims": payload(tokens.access_token),
    }


def main() -> int:
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        out = asyncio.run(run(*sys.argv[1:]))
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        print(f"failed: {e!r}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
