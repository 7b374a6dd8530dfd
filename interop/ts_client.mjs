// Interop checks: the official TypeScript MCP SDK (@modelcontextprotocol/sdk) as a client of
// policy-sidecar, over StreamableHTTPClientTransport with the bearer token in `requestInit`.
//
// Run by interop/run.sh. Every check prints `PASS <name>` or `FAIL <name>: <why>`; the exit
// status is 1 when any check failed.
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

const REASON = "Policy evaluation denied due to no determining policies";
const DENIED = `Tool Execution Denied: Tool call not allowed due to policy enforcement [${REASON}]`;
const STEP_TIMEOUT_MS = 20_000;

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    idp: { type: "string" },
    demo: { type: "string" },
    label: { type: "string" },
    "deny-style": { type: "string", default: "jsonrpc_error" },
  },
});
for (const key of ["url", "idp", "demo", "label"]) {
  if (!args[key]) {
    console.error(`--${key} is required`);
    process.exit(2);
  }
}
const denyStyle = args["deny-style"];
const prefix = `typescript/${args.label}`;
const tag = `ts-${args.label}`;
let failed = 0;

function report(name, why) {
  if (why === undefined) {
    console.log(`PASS ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name}: ${why}`);
  }
}

// Runs one check: it passes when `body` resolves to undefined, else fails with the text.
async function check(name, body) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
  });
  try {
    report(name, await Promise.race([body(), limit]));
  } catch (error) {
    report(name, `${error?.name}: ${error?.message}`);
  } finally {
    clearTimeout(timer);
  }
}

async function token(clientId, role) {
  const form = new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, aud: "mcp-gateway" });
  if (role) form.set("role", role);
  const response = await fetch(`${args.idp}/token`, { method: "POST", body: form, signal: AbortSignal.timeout(10_000) });
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
  return (await response.json()).access_token;
}

// A client and the HTTP exchanges its transport made (method and status).
async function connect(bearer) {
  const exchanges = [];
  const recordingFetch = async (url, init) => {
    const response = await fetch(url, { ...init, signal: init?.signal ?? AbortSignal.timeout(15_000) });
    exchanges.push({ method: init?.method ?? "GET", status: response.status });
    return response;
  };
  const headers = bearer ? { Authorization: `Bearer ${bearer}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(args.url), {
    requestInit: { headers },
    fetch: recordingFetch,
  });
  const client = new Client({ name: "mcp-policy-interop", version: "1.0.0" });
  await client.connect(transport, { timeout: 15_000 });
  return { client, transport, exchanges };
}

const textOf = (result) => (result.content ?? []).map((c) => c.text ?? "").join("");

async function expectDenied(client, name, args) {
  let result;
  try {
    result = await client.callTool({ name, arguments: args }, undefined, { timeout: 15_000 });
  } catch (error) {
    if (!(error instanceof McpError)) throw error;
    if (denyStyle !== "jsonrpc_error") return `expected a tool result, got error ${error.code} ${error.message}`;
    if (error.code !== -32002 || error.message !== `MCP error -32002: ${DENIED}`) {
      return `error ${error.code} ${JSON.stringify(error.message)}`;
    }
    return undefined;
  }
  if (denyStyle !== "tool_result") return `expected error -32002, got ${JSON.stringify(result)}`;
  const expected = `AuthorizeActionException - ${DENIED}`;
  if (result.isError !== true || textOf(result) !== expected) return `got ${JSON.stringify(result)}`;
  return undefined;
}

async function listed(client) {
  return (await client.listTools(undefined, { timeout: 15_000 })).tools.map((t) => t.name).sort();
}

async function main() {
  await check(`${prefix}: a session without a token is refused with 401`, async () => {
    try {
      const { client } = await connect(undefined);
      await client.close();
      return "the session was opened";
    } catch (error) {
      if (error instanceof StreamableHTTPError && error.code === 401) return undefined;
      return `${error?.name} code=${error?.code}: ${error?.message}`;
    }
  });

  const alice = await connect(await token("alice", "refund-agent"));
  await check(`${prefix}: protocol version`, async () => {
    const version = alice.transport.protocolVersion;
    console.log(`INFO ${prefix}: negotiated protocol version ${version}`);
    return version ? undefined : "no protocol version negotiated";
  });
  await check(`${prefix}: tools/list hides tools the caller may never call`, async () => {
    const names = await listed(alice.client);
    const want = ["get_order", "process_refund"];
    return JSON.stringify(names) === JSON.stringify(want) ? undefined : `listed ${names}`;
  });
  await check(`${prefix}: process_refund 500 is allowed`, async () => {
    const result = await alice.client.callTool({ name: "process_refund", arguments: { amount: 500, customer_id: tag } });
    if (result.isError) return `isError: ${textOf(result)}`;
    return JSON.parse(textOf(result)).status === "approved" ? undefined : `unexpected ${textOf(result)}`;
  });
  await check(`${prefix}: process_refund 2000 is denied with the policy error`, () =>
    expectDenied(alice.client, "process_refund", { amount: 2000, customer_id: tag }),
  );
  await check(`${prefix}: delete_order (no policy) is denied`, () =>
    expectDenied(alice.client, "delete_order", { order_id: tag }),
  );
  await check(`${prefix}: update_order without the order-agent role is denied`, () =>
    expectDenied(alice.client, "update_order", { order_id: tag, status: "x" }),
  );
  await check(`${prefix}: session ends with a DELETE passed through`, async () => {
    await alice.transport.terminateSession();
    await alice.client.close();
    const deletes = alice.exchanges.filter((e) => e.method === "DELETE").map((e) => e.status);
    return deletes.length === 1 && deletes[0] >= 200 && deletes[0] < 300 ? undefined : `DELETE answers ${deletes}`;
  });

  const bob = await connect(await token("bob", "order-agent"));
  await check(`${prefix}: the order-agent role tag lists update_order`, async () => {
    const names = await listed(bob.client);
    return names.includes("update_order") && !names.includes("delete_order") ? undefined : `listed ${names}`;
  });
  await check(`${prefix}: update_order with the order-agent role is allowed`, async () => {
    const result = await bob.client.callTool({ name: "update_order", arguments: { order_id: `${tag}-bob`, status: "shipped" } });
    return result.isError ? `isError: ${textOf(result)}` : undefined;
  });
  await bob.client.close();

  await check(`${prefix}: only the allowed calls reached the upstream, once each`, async () => {
    const response = await fetch(`${args.demo}/calls`, { signal: AbortSignal.timeout(10_000) });
    const seen = (await response.json()).filter((c) => JSON.stringify(c.arguments).includes(tag));
    const want = [
      { tool: "process_refund", arguments: { amount: 500, customer_id: tag } },
      { tool: "update_order", arguments: { order_id: `${tag}-bob`, status: "shipped" } },
    ];
    return JSON.stringify(seen) === JSON.stringify(want) ? undefined : `the upstream executed ${JSON.stringify(seen)}`;
  });
}

try {
  await main();
} catch (error) {
  report(`${prefix}: session`, `${error?.name}: ${error?.message}`);
}
process.exit(failed === 0 ? 0 : 1);
