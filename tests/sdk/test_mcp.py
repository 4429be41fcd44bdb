"""The official MCP Python SDK (`mcp`) as a client of memproxy's MCP memory server: over
streamable HTTP at /mcp (authenticated like the memory API, scoped by key, user header and
project) and over stdio (`memproxy mcp`). It lists the tools and runs each; a key bound
to one user cannot reach another user's memory through MCP."""

import json
import os
import tempfile
import urllib.request

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from conftest import _bin

TOOLS = {"memory_search", "memory_add", "memory_get", "memory_delete", "memory_list"}


def _api(proxy, method, path, body=None, key=None):
    req = urllib.request.Request(
        proxy["base"] + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key or proxy['key']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def _payload(result):
    assert not getattr(result, "is_error", getattr(result, "isError", False)), result
    return json.loads(result.content[0].text)


async def _fails(session, tool, args):
    try:
        result = await session.call_tool(tool, args)
    except Exception:  # the SDK raises on a JSON-RPC error
        return True
    return bool(getattr(result, "is_error", getattr(result, "isError", False)))


async def _exercise(session, expect_project):
    """Lists the tools and runs each in the session's scope."""
    await session.initialize()
    names = {t.name for t in (await session.list_tools()).tools}
    assert TOOLS <= names, names
    added = _payload(await session.call_tool("memory_add", {"content": "The build uses ninja and ccache"}))
    assert added["project"] == expect_project
    found = _payload(await session.call_tool("memory_search", {"query": "ninja ccache"}))
    assert [r["id"] for r in found["results"]] == [added["id"]], found
    got = _payload(await session.call_tool("memory_get", {"id": added["id"]}))
    assert got["content"] == "The build uses ninja and ccache"
    listed = _payload(await session.call_tool("memory_list", {}))
    assert [m["id"] for m in listed["memories"]] == [added["id"]]
    gone = _payload(await session.call_tool("memory_delete", {"id": added["id"]}))
    assert gone["deleted"] is True
    assert await _fails(session, "memory_get", {"id": added["id"]})


def _http(proxy, headers):
    async def run(body):
        client = create_mcp_http_client(headers=headers)
        async with client:
            async with streamable_http_client(proxy["base"] + "/mcp", http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    return await body(session)

    return run


def test_mcp_over_http_lists_and_runs_every_tool(proxy):
    headers = {
        "Authorization": f"Bearer {proxy['key']}",
        "x-memory-user-id": "mcp-http-user",
        "x-memory-project": "mcp-proj",
    }
    anyio.run(_http(proxy, headers), lambda s: _exercise(s, "mcp-proj"))
    # The /p/<project>/ prefix works too.
    client = _http(dict(proxy, base=proxy["base"] + "/p/other"), {
        "Authorization": f"Bearer {proxy['key']}",
        "x-memory-user-id": "mcp-http-user",
    })
    anyio.run(client, lambda s: _exercise(s, "other"))




def test_a_key_bound_to_one_user_cannot_read_another_through_mcp(proxy):
    other = _api(proxy, "POST", "/v1/memories", {"user_id": "mcp-victim", "content": "victim secret zebra"})
    key = _api(proxy, "POST", "/key/generate", {"user_id": "mcp-owner"})["key"]
    headers = {"Authorization": f"Bearer {key}", "x-memory-user-id": "mcp-victim"}

    async def probe(session):
        await session.initialize()
        found = _payload(await session.call_tool("memory_search", {"query": "victim secret zebra"}))
        assert found["results"] == [], found
        assert await _fails(session, "memory_get", {"id": other["id"]})
        assert await _fails(session, "memory_delete", {"id": other["id"]})
        mine = _payload(await session.call_tool("memory_add", {"content": "owner note"}))
        return mine

    mine = anyio.run(_http(proxy, headers), probe)
    # The key's memory went to its own user, and the victim's memory is intact.
    assert _api(proxy, "GET", f"/v1/memories/{mine['id']}?user_id=mcp-owner")["content"] == "owner note"
    assert _api(proxy, "GET", f"/v1/memories/{other['id']}?user_id=mcp-victim")["content"] == "victim secret zebra"

    async def unauthenticated():
        async with httpx2.AsyncClient() as c:
            r = await c.post(proxy["base"] + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            return r.status_code

    assert anyio.run(unauthenticated) == 401


def test_mcp_over_stdio_lists_and_runs_every_tool():
    data_dir = tempfile.mkdtemp(prefix="memproxy-mcp-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "MEMPROXY_"))}
    env["MEMPROXY_DATA_DIR"] = data_dir
    params = StdioServerParameters(
        command=_bin("MEMPROXY_BIN", "memproxy"),
        args=["mcp", "--user", "stdio-user", "--project", "stdio-proj"],
        env=env,
    )

    async def run():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await _exercise(session, "stdio-proj")

    anyio.run(run)
