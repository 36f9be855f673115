// An agent using the official MCP TypeScript SDK, unmodified, against an MCP server the
// authority protects: `PrivateKeyJwtProvider` (client_credentials with private_key_jwt) behind
// `StreamableHTTPClientTransport`.
//
// Usage: node oauth-client.mjs SERVER_URL ISSUER AGENT_ID KEY_PEM ALG TOOL
//
// KEY_PEM is the agent's key as `aip-ca agents export-key` wrote it (PKCS#8 PEM). With ALG
// ES256 the provider gets the PEM itself; with ALG EdDSA it gets the key as a JWK (the SDK
// imports PEM strings only for RSA and EC keys), converted with node's crypto. The SDK finds
// the authority through the server's protected resource metadata, gets an AAT from
// /oauth/token (scope = TOOL) and calls TOOL. Prints one JSON object on stdout:
//   {"result": <the tool's structured result>, "access_token": AAT, "token_type": …,
//    "scope": …, "expires_in": …}
// Exits 1 with the error on stderr when anything fails.
//
// The snippets between the --8<-- markers are docs/issuer.md's example ("Standard OAuth
// clients"); a test keeps the two the same.
import { readFileSync } from "node:fs";
// --8<-- [start:imports]
import { createPrivateKey } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { PrivateKeyJwtProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// --8<-- [end:imports]

const [serverUrl, issuer, agentId, keyFile, algorithm, tool] = process.argv.slice(2);
if (!tool) {
  console.error("usage: oauth-client.mjs SERVER_URL ISSUER AGENT_ID KEY_PEM ALG TOOL");
  process.exit(2);
}

try {
  const pem = readFileSync(keyFile, "ascii");
  // --8<-- [start:provider]
  const privateKey = algorithm === "EdDSA" ? createPrivateKey(pem).export({ format: "jwk" }) : pem;
  const authProvider = new PrivateKeyJwtProvider({
    clientId: agentId,
    privateKey,
    algorithm,
    scope: tool, // the tools wanted, space-separated
    expectedIssuer: issuer,
  });
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider });
  const client = new Client({ name: "aip-oauth-interop", version: "1.0.0" });
  await client.connect(transport);
  const result = await client.callTool({ name: tool, arguments: {} });
  await client.close();
  // --8<-- [end:provider]
  if (result.isError) {
    throw new Error(`${tool} failed: ${JSON.stringify(result.content)}`);
  }
  const tokens = authProvider.tokens();
  process.stdout.write(
    JSON.stringify({
      result: result.structuredContent,
      access_token: tokens.access_token,
      token_type: tokens.token_type,
      scope: tokens.scope,
      expires_in: tokens.expires_in,
    }) + "\n",
  );
  process.exit(0);
} catch (e) {
  console.error(`failed: ${e?.stack ?? e}`);
  process.exit(1);
}
