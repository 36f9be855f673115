// An unmodified MCP client, built on the official TypeScript SDK, driven by the end-to-end tests.
//
// The server command is the JSON array in AIP_E2E_COMMAND (argv, no shell). The test writes one
// JSON request per line on stdin and reads one JSON answer per line on stdout:
//   {"op":"list"}                              -> {"tools":[names…]}
//   {"op":"call","tool":T,"arguments":{…}}     -> {"result":{…}} or {"error":{code,message,data}}
//   {"op":"close"}                             -> {"closed":true}, then the client exits
import readline from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [command, ...args] = JSON.parse(process.env.AIP_E2E_COMMAND);
const transport = new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
const client = new Client({ name: "aip-e2e-client", version: "1.0.0" });
await client.connect(transport);

const answer = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const request = JSON.parse(line);
  try {
    if (request.op === "list") {
      const { tools } = await client.listTools();
      answer({ tools: tools.map((t) => t.name) });
    } else if (request.op === "call") {
      answer({ result: await client.callTool({ name: request.tool, arguments: request.arguments }) });
    } else if (request.op === "close") {
      await client.close();
      answer({ closed: true });
      break;
    } else {
      answer({ error: { code: 0, message: `unknown op ${request.op}` } });
    }
  } catch (e) {
    answer({ error: { code: e.code ?? null, message: String(e.message ?? e), data: e.data ?? null } });
  }
}
process.exit(0);
