"""The official MCP Python SDK (`mcp`) as a client of memproxy's MCP memory server, over
streamable HTTP (`/mcp` on the running proxy, with a key bound to a user) and over stdio
(`memproxy mcp --user ...`): it lists the five memory tools and runs each."""

import json
import os
import tempfile
import urllib.request
import uuid

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import MASTER_KEY, _bin

TOOLS = {"memory_search", "memory_add", "memory_get", "memory_delete", "memory_list"}


def _bound_key(proxy: dict, user: str) -> str:
    req = urllib.request.Request(
        proxy["base"] + "/key/generate",
        data=json.dumps({"user_id": user}).encode(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["key"]


def _result(res) -> dict:
    assert not res.is_error, res.content
    data = getattr(res, "structured_content", None) or getattr(res, "structuredContent", None)
    if data is None:
        data = json.loads(res.content[0].text)
    return data


async def _exercise(session: ClientSession, fact: str) -> None:
    await session.initialize()
    listed = await session.list_tools()
    assert {t.name for t in listed.tools} >= TOOLS
    schema = next(t for t in listed.tools if t.name == "memory_search").input_schema
    assert schema["required"] == ["query"]

    added = _result(await session.call_tool("memory_add", {"content": fact}))
    mem_id = added["id"]
    found = _result(await session.call_tool("memory_search", {"query": fact, "limit": 5}))
    assert any(r["id"] == mem_id for r in found["results"]), found
    got = _result(await session.call_tool("memory_get", {"id": mem_id}))
    assert got["content"] == fact
    page = _result(await session.call_tool("memory_list", {"limit": 10}))
    assert any(m["id"] == mem_id for m in page["items"]), page
    _result(await session.call_tool("memory_delete", {"id": mem_id}))
    missing = await session.call_tool("memory_get", {"id": mem_id})
    assert missing.is_error


def test_mcp_over_streamable_http(proxy):
    user = f"mcp-http-{uuid.uuid4().hex[:8]}"
    key = _bound_key(proxy, user)

    async def run():
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with http:
            async with streamable_http_client(proxy["base"] + "/mcp", http_client=http) as (r, w):
                async with ClientSession(r, w) as session:
                    await _exercise(session, f"{user} keeps the spare key under the blue pot")

    anyio.run(run)


def test_mcp_over_stdio():
    data_dir = tempfile.mkdtemp(prefix="memproxy-mcp-")
    cfg = os.path.join(data_dir, "config.yaml")
    with open(cfg, "w") as f:
        f.write(
            "model_list:\n  - model_name: offline\n    litellm_params:\n"
            "      model: openai/offline\n      mock_response: hi\n"
        )
    params = StdioServerParameters(
        command=_bin("MEMPROXY_BIN", "memproxy"),
        args=["mcp", "--config", cfg, "--user", "mcp-stdio-user", "--log-level", "warn"],
        env={"MEMPROXY_DATA_DIR": data_dir},
    )

    async def run():
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as session:
                await _exercise(session, "the stdio user prefers green tea in the morning")

    anyio.run(run)
