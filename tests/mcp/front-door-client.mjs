// An agent using the official MCP TypeScript SDK, unmodified, against an MCP server behind
// aip-proxy's front door, driven one command at a time by a test.
//
// Usage: node front-door-client.mjs URL ISSUER AGENT_ID KEY_PEM ALG
//
// URL is the front door's MCP endpoint; ISSUER the authority the agent expects to be sent to;
// KEY_PEM the agent's key as `aip-ca agents export-key` wrote it (PKCS#8 PEM); ALG EdDSA or
// ES256 (an EdDSA key is given to the SDK as a JWK: it imports PEM strings only for RSA and EC
// keys). The SDK is given no authority URL and no scope: `PrivateKeyJwtProvider` behind
// `StreamableHTTPClientTransport` finds the authority through the 401 and the protected resource
// metadata it points to, and gets a Bearer AAT from /oauth/token (client_credentials with
// private_key_jwt). The client connects and initializes a session, then reads one JSON command
// per line on stdin and answers each with one JSON line on stdout:
//   {"op":"list"}                        -> {"ok":true,"tools":[names…]}
//   {"op":"call","tool":T,"args":{…}}    -> {"ok":true,"content":[texts…],"structured":…,"is_error":B}
//   {"op":"token"}                       -> {"ok":true,"access_token":…,"token_type":…,"scope":…,
//                                            "expires_in":…,"claims":{the AAT's payload}}
//   {"op":"quit"}                        -> {"ok":true,"quit":true}, then the session ends
// A JSON-RPC error answers {"ok":false,"error":{"code":…,"message":…,"data":…}}; any other
// failure of a command {"ok":false,"error":{"code":null,"message":…,"data":null},"exception":NAME},
// and the client goes on with the next command. When the session cannot be set up, it exits 1
// with the error on stderr.
import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import readline from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { PrivateKeyJwtProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

const [url, issuer, agentId, keyFile, algorithm] = process.argv.slice(2);
if (!algorithm) {
  console.error("usage: front-door-client.mjs URL ISSUER AGENT_ID KEY_PEM ALG");
  process.exit(2);
}

const answer = (value) => process.stdout.write(JSON.stringify(value) + "\n");

/** The payload of a compact JWT, decoded without verifying it. */
const payload = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString("utf8"));

let client;
let authProvider;
try {
  const pem = readFileSync(keyFile, "ascii");
  const privateKey = algorithm === "EdDSA" ? createPrivateKey(pem).export({ format: "jwk" }) : pem;
  authProvider = new PrivateKeyJwtProvider({ clientId: agentId, privateKey, algorithm, expectedIssuer: issuer });
  const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider });
  client = new Client({ name: "aip-front-door-client", version: "1.0.0" });
  await client.connect(transport);
} catch (e) {
  console.error(`failed: ${e?.stack ?? e}`);
  process.exit(1);
}

async function command(request) {
  switch (request.op) {
    case "list": {
      const { tools } = await client.listTools();
      return { ok: true, tools: tools.map((t) => t.name) };
    }
    case "call": {
      const result = await client.callTool({ name: request.tool, arguments: request.args ?? {} });
      return {
        ok: true,
        content: (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text),
        structured: result.structuredContent ?? null,
        is_error: result.isError === true,
      };
    }
    case "token": {
      const tokens = authProvider.tokens();
      if (!tokens) {
        throw new Error("the SDK holds no token");
      }
      return {
        ok: true,
        access_token: tokens.access_token,
        token_type: tokens.token_type,
        scope: tokens.scope ?? null,
        expires_in: tokens.expires_in ?? null,
        claims: payload(tokens.access_token),
      };
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(request.op)}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) {
    continue;
  }
  const request = JSON.parse(line);
  if (request.op === "quit") {
    await client.close();
    answer({ ok: true, quit: true });
    break;
  }
  try {
    answer(await command(request));
  } catch (e) {
    if (e instanceof McpError) {
      answer({ ok: false, error: { code: e.code, message: e.message, data: e.data ?? null } });
    } else {
      answer({
        ok: false,
        error: { code: null, message: String(e?.message ?? e), data: null },
        exception: e?.name ?? typeof e,
      });
    }
  }
}
process.exit(0);
