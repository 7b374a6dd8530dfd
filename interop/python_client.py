"""Interop checks: the official Python MCP SDK (`mcp` 2.x) as a client of policy-sidecar.

Run by interop/run.sh. Every check prints `PASS <name>` or `FAIL <name>: <why>`; the exit status
is 1 when any check failed. Tokens come from the identity provider's token endpoint
(oauth2-mock-server, client_credentials grant); the demo tool server's `GET /calls` tells what
reached the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

REASON = "Policy evaluation denied due to no determining policies"
DENIED = f"Tool Execution Denied: Tool call not allowed due to policy enforcement [{REASON}]"
STEP_TIMEOUT = 20.0

results: list[bool] = []


def report(name: str, ok: bool, why: str = "") -> None:
    results.append(ok)
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)


async def check(name: str, body: Callable[[], Awaitable[str | None]]) -> None:
    """Runs one check; it passes when `body` returns None, else fails with the returned text."""
    try:
        why = await asyncio.wait_for(body(), STEP_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any error is this check's failure
        why = f"{type(exc).__name__}: {exc!r}"
    # One line per check: the first 400 characters of the reason, whitespace folded.
    report(name, why is None, " ".join((why or "").split())[:400])


def token(idp: str, client_id: str, role: str | None, audience: str = "mcp-gateway") -> str:
    form = {"grant_type": "client_credentials", "client_id": client_id, "aud": audience}
    if role is not None:
        form["role"] = role
    request = urllib.request.Request(f"{idp}/token", data=urllib.parse.urlencode(form).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def upstream_calls(demo: str, tag: str) -> list[dict[str, Any]]:
    """The tool calls the demo server executed whose arguments carry `tag`."""
    with urllib.request.urlopen(f"{demo}/calls", timeout=10) as response:
        calls = json.load(response)
    return [c for c in calls if tag in json.dumps(c["arguments"])]


class Recorder:
    """The HTTP requests the SDK sent and the answers it got (httpx event hooks)."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.responses: list[httpx2.Response] = []

    async def on_request(self, request: httpx2.Request) -> None:
        self.requests.append(request)

    async def on_response(self, response: httpx2.Response) -> None:
        self.responses.append(response)


def http_client(bearer: str | None, recorder: Recorder) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(10.0, read=15.0),
        event_hooks={"request": [recorder.on_request], "response": [recorder.on_response]},
    )


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def expect_denied(client: Client, deny_style: str, tool: str, arguments: dict[str, Any]) -> str | None:
    """None when the call is answered with the policy denial of docs/replies.md."""
    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        if deny_style != "jsonrpc_error":
            return f"expected a tool result, got error {exc.code} {exc.message!r}"
        if exc.code != -32002 or exc.message != DENIED:
            return f"error {exc.code} {exc.message!r}"
        return None
    if deny_style != "tool_result":
        return f"expected error -32002, got result isError={result.is_error} {text_of(result)!r}"
    expected = f"AuthorizeActionException - {DENIED}"
    if not result.is_error or text_of(result) != expected:
        return f"result isError={result.is_error} {text_of(result)!r}"
    return None


async def session_checks(args: argparse.Namespace, mode: str) -> None:
    prefix = f"python/{mode}/{args.label}"
    tag = f"py-{mode}-{args.label}"
    alice = token(args.idp, "alice", "refund-agent")
    bob = token(args.idp, "bob", "order-agent")
    recorder = Recorder()

    async with http_client(alice, recorder) as http:
        transport = streamable_http_client(args.url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=15) as client:  # type: ignore[arg-type]

            async def negotiated() -> str | None:
                version = client.protocol_version
                print(f"INFO {prefix}: negotiated protocol version {version}", flush=True)
                want = "2026-07-28" if mode in ("auto", "2026-07-28") else None
                if want and version != want:
                    return f"negotiated {version}, expected {want}"
                if mode == "legacy" and version >= "2026":
                    return f"legacy mode negotiated {version}"
                return None

            await check(f"{prefix}: protocol version", negotiated)

            async def listed() -> str | None:
                names = sorted(t.name for t in (await client.list_tools(cache_mode="bypass")).tools)
                if names != ["get_order", "process_refund"]:
                    return f"listed {names}, expected get_order and process_refund only"
                return None

            await check(f"{prefix}: tools/list hides tools the caller may never call", listed)

            async def allowed() -> str | None:
                result = await client.call_tool("process_refund", {"amount": 500, "customer_id": tag})
                if result.is_error:
                    return f"isError: {text_of(result)!r}"
                if json.loads(text_of(result)).get("status") != "approved":
                    return f"unexpected result {text_of(result)!r}"
                return None

            await check(f"{prefix}: process_refund 500 is allowed", allowed)
            await check(
                f"{prefix}: process_refund 2000 is denied with the policy error",
                lambda: expect_denied(client, args.deny_style, "process_refund", {"amount": 2000, "customer_id": tag}),
            )
            await check(
                f"{prefix}: delete_order (no policy) is denied",
                lambda: expect_denied(client, args.deny_style, "delete_order", {"order_id": tag}),
            )
            await check(
                f"{prefix}: update_order without the order-agent role is denied",
                lambda: expect_denied(client, args.deny_style, "update_order", {"order_id": tag, "status": "x"}),
            )

            if mode != "legacy":

                async def headers() -> str | None:
                    calls = [r for r in recorder.requests if r.headers.get("mcp-method") == "tools/call"]
                    if not calls:
                        return "no POST carried Mcp-Method: tools/call"
                    names = {r.headers.get("mcp-name") for r in calls}
                    if names != {"process_refund", "delete_order", "update_order"}:
                        return f"Mcp-Name headers {names}"
                    return None

                await check(f"{prefix}: 2026-07-28 requests carry Mcp-Method and Mcp-Name", headers)

    if mode == "legacy":

        async def deleted() -> str | None:
            answers = [r.status_code for r in recorder.responses if r.request.method == "DELETE"]
            gets = [r.status_code for r in recorder.responses if r.request.method == "GET"]
            if len(answers) != 1 or not 200 <= answers[0] < 300:
                return f"DELETE answers {answers}"
            if not gets:
                return "the SDK opened no GET event stream"
            return None

        await check(f"{prefix}: session ends with a DELETE passed through", deleted)

    async with http_client(bob, Recorder()) as http:
        transport = streamable_http_client(args.url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=15) as client:  # type: ignore[arg-type]

            async def listed_for_bob() -> str | None:
                names = sorted(t.name for t in (await client.list_tools(cache_mode="bypass")).tools)
                if names != ["get_order", "process_refund", "update_order"]:
                    return f"listed {names}"
                return None

            await check(f"{prefix}: the order-agent role tag lists update_order", listed_for_bob)

            async def bob_updates() -> str | None:
                result = await client.call_tool("update_order", {"order_id": f"{tag}-bob", "status": "shipped"})
                return f"isError: {text_of(result)!r}" if result.is_error else None

            await check(f"{prefix}: update_order with the order-agent role is allowed", bob_updates)

    async def forwarded() -> str | None:
        seen = [(c["tool"], c["arguments"]) for c in upstream_calls(args.demo, tag)]
        expected = [
            ("process_refund", {"amount": 500, "customer_id": tag}),
            ("update_order", {"order_id": f"{tag}-bob", "status": "shipped"}),
        ]
        if seen != expected:
            return f"the upstream executed {seen}, expected {expected}"
        return None

    await check(f"{prefix}: only the allowed calls reached the upstream, once each", forwarded)


async def auth_checks(args: argparse.Namespace) -> None:
    prefix = f"python/{args.label}"
    for what, bearer in [
        ("without a token", None),
        ("with a token for another audience", token(args.idp, "alice", "refund-agent", audience="other")),
    ]:
        recorder = Recorder()

        async def refused(bearer: str | None = bearer, recorder: Recorder = recorder) -> str | None:
            try:
                async with http_client(bearer, recorder) as http:
                    transport = streamable_http_client(args.url, http_client=http)
                    async with Client(transport, mode="legacy", read_timeout_seconds=10) as client:  # type: ignore[arg-type]
                        await client.call_tool("process_refund", {"amount": 1, "customer_id": "x"})
                return "the call succeeded"
            except Exception:  # noqa: BLE001 - the SDK's error type for a 401 is not the point
                pass
            statuses = [r.status_code for r in recorder.responses]
            if statuses[:1] != [401]:
                return f"HTTP statuses {statuses}, expected 401 first"
            challenge = recorder.responses[0].headers.get("www-authenticate", "")
            if 'error="invalid_token"' not in challenge or "resource_metadata=" not in challenge:
                return f"WWW-Authenticate: {challenge!r}"
            return None

        await check(f"{prefix}: a session {what} is refused with 401", refused)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the sidecar's MCP endpoint")
    parser.add_argument("--idp", required=True, help="the identity provider's issuer URL")
    parser.add_argument("--demo", required=True, help="the demo tool server's base URL (for GET /calls)")
    parser.add_argument("--label", required=True, help="names this target in the check names")
    parser.add_argument("--deny-style", choices=["jsonrpc_error", "tool_result"], default="jsonrpc_error")
    parser.add_argument("--modes", default="legacy,auto", help="comma-separated: legacy, auto, 2026-07-28")
    args = parser.parse_args()

    await auth_checks(args)
    for mode in args.modes.split(","):
        try:
            await asyncio.wait_for(session_checks(args, mode), 120)
        except Exception as exc:  # noqa: BLE001 - a broken session fails its mode, the run goes on
            report(f"python/{mode}/{args.label}: session", False, f"{type(exc).__name__}: {exc!r}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
