"""The official Node SDKs (openai-node, @anthropic-ai/sdk) against a running memproxy.

Each case runs `node tests/clients/sdk_case.mjs <case>` once: a call that the fixed-mode
mock answers with a call of the offered tool, then the tool's result sent back and
answered with text. Every SDK runs natively (openai-node on `gpt-test`, an OpenAI
deployment; @anthropic-ai/sdk on `claude-test`, an Anthropic one) and translated (the
other), streamed and not. scripts/test.sh installs the pinned packages with `npm ci`;
without node or them the tests are skipped.
"""

import json
import os
import shutil
import subprocess
import uuid

import pytest
from conftest import CLIENTS_DIR, clean_env, client_installed, rows_for

NODE = shutil.which("node")
SCRIPT = CLIENTS_DIR / "sdk_case.mjs"
INSTALLED = (CLIENTS_DIR / "node_modules" / "openai").is_dir() and (
    CLIENTS_DIR / "node_modules" / "@anthropic-ai" / "sdk"
).is_dir()

pytestmark = client_installed(
    bool(NODE) and INSTALLED, f"node or the Node SDKs (openai, @anthropic-ai/sdk in {CLIENTS_DIR})"
)

# case, model, client id, the row's endpoint.
CASES = [
    ("openai-chat", "gpt-test", "openai-node", "chat"),
    ("openai-chat", "claude-test", "openai-node", "chat"),
    ("openai-responses", "gpt-test", "openai-node", "responses"),
    ("openai-responses", "claude-test", "openai-node", "responses"),
    ("anthropic-messages", "claude-test", "anthropic-node", "messages"),
    ("anthropic-messages", "gpt-test", "anthropic-node", "messages"),
]


def run_case(proxy, case, model, stream):
    rid = f"node-{uuid.uuid4().hex[:12]}"
    env = clean_env(
        MEMPROXY_BASE=proxy["base"],
        MEMPROXY_KEY=proxy["key"],
        MODEL=model,
        STREAM="1" if stream else "0",
        REQUEST_ID=rid,
        HOME=os.environ.get("HOME", "/tmp"),
    )
    r = subprocess.run(
        [NODE, str(SCRIPT), case],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout.strip().splitlines()
    assert r.returncode == 0 and out, r.stdout + r.stderr
    return rid, json.loads(out[-1])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    "case,model,client_id,endpoint",
    CASES,
    ids=[f"{c}-{'native' if (c.startswith('openai')) == (m == 'gpt-test') else 'translated'}"
         for c, m, _, _ in CASES],
)
def test_tool_round_trip(proxy, case, model, client_id, endpoint, stream):
    rid, got = run_case(proxy, case, model, stream)
    first, second = got["first"], got["second"]

    assert len(first["tool_calls"]) == 1, got
    call = first["tool_calls"][0]
    assert call["name"] == "get_weather" and call["id"], got
    assert isinstance(json.loads(call["arguments"]), dict)
    assert second["tool_calls"] == [], got
    assert second["text"] == "This is a fixed answer from the mock upstream, used for benchmarks."
    if case == "openai-chat":
        assert (first["finish"], second["finish"]) == ("tool_calls", "stop")
        assert second["usage"]["completion_tokens"] > 0
    elif case == "openai-responses":
        assert (first["status"], second["status"]) == ("completed", "completed")
        if stream:
            assert first["events"][0] == "response.created"
            assert first["events"][-1] == "response.completed"
            assert second["deltas"] == second["text"]
        assert second["usage"]["output_tokens"] > 0
    else:
        assert (first["finish"], second["finish"]) == ("tool_use", "end_turn")
        if stream:
            assert first["events"][0] == "message_start"
            assert first["events"][-1] == "message_stop"
        assert second["usage"]["output_tokens"] > 0

    for n in (1, 2):
        (row,) = rows_for(proxy, f"{rid}-{n}")
        assert (row["client"], row["endpoint"], row["model"], row["status"]) == (
            client_id,
            endpoint,
            model,
            200,
        ), row
        assert row["stream"] is stream
        assert row["provider"] == ("openai" if model == "gpt-test" else "anthropic")
