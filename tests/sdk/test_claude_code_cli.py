"""Claude Code (`claude -p`, npm package @anthropic-ai/claude-code) through memproxy.

Claude Code runs non-interactively with ANTHROPIC_BASE_URL at memproxy and the master key
as ANTHROPIC_API_KEY, in its own HOME and config dir, every update, telemetry and
error-report call switched off, and no model named: whatever `claude-*` model it picks
is served by the proxy's `claude-*` entry. Natively that is an Anthropic deployment on
the mock (Claude Code's body reaches it as sent: the `system`-role message it puts in
`messages`, its beta headers, its tools); translated, an OpenAI-compatible one.

The fixed-mode mock asks Claude Code to run `echo memproxy-tool-ok` with its Bash tool,
then answers with its fixed text, so each run is a real tool round trip: the second
request carries the command's output. scripts/test.sh installs the pinned CLI with
`npm ci` into tests/clients; without it (or CLAUDE_BIN) the tests are skipped.
"""

import json
import os
import subprocess
from pathlib import Path

from conftest import (
    MOCK_TEXT,
    NODE_BIN,
    TOOL_MARKER,
    clean_env,
    client_installed,
    memories,
    mock_requests,
    usage_rows,
    wait_for,
)

CLAUDE = os.environ.get("CLAUDE_BIN") or str(NODE_BIN / "claude")

pytestmark = client_installed(Path(CLAUDE).exists(), f"Claude Code ({CLAUDE})")


def run_claude(proxy, tmp_path, prompt, *args):
    """Runs `claude -p prompt --output-format json` against `proxy`; returns its result."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    env = clean_env(
        HOME=str(home),
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        ANTHROPIC_BASE_URL=proxy["base"],
        ANTHROPIC_API_KEY=proxy["key"],
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_BUG_COMMAND="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_DISABLE_TERMINAL_TITLE="1",
    )
    r = subprocess.run(
        [CLAUDE, "-p", prompt, "--output-format", "json", "--no-session-persistence",
         "--strict-mcp-config", *args],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    result = json.loads(r.stdout)
    assert result["is_error"] is False, out
    assert "empty or malformed response" not in out
    return result


def claude_rows(proxy, model):
    """This model's usage rows, once Claude Code's two calls have been written."""
    return wait_for(lambda: usage_rows(proxy, model=model), lambda rows: len(rows) >= 2)


def text_of(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(json.dumps(p) if p.get("type") != "text" else p["text"] for p in content)


def test_native_tool_round_trip_reaches_anthropic_as_sent(proxy, tmp_path):
    before = len(mock_requests(proxy))
    result = run_claude(proxy, tmp_path, "Say hi", "--allowedTools", f"Bash(echo {TOOL_MARKER})")
    assert result["result"] == MOCK_TEXT
    assert result["num_turns"] == 2

    calls = [r for r in mock_requests(proxy)[before:] if r["path"] == "/v1/messages"]
    assert len(calls) == 2, [r["path"] for r in mock_requests(proxy)[before:]]
    first, second = calls
    body = first["body"]
    model = body["model"]
    assert model.startswith("claude-")
    # Claude Code's own shape, untouched: the environment as a system-role message
    # inside `messages` (2.1.197+), its fields, tools and beta headers.
    roles = [m["role"] for m in body["messages"]]
    assert "system" in roles[1:], roles
    assert "Say hi" in text_of(body["messages"][0]["content"])
    for field in ("system", "tools", "thinking", "metadata", "max_tokens", "stream"):
        assert field in body, field
    assert body["stream"] is True
    assert "Bash" in [t.get("name") for t in body["tools"]]
    assert "claude-code-20250219" in first["headers"].get("anthropic-beta", "")
    assert first["headers"]["x-api-key"] == "sk-upstream"
    # The tool ran, and its output went back as a tool_result.
    last = second["body"]["messages"][-1]
    assert last["role"] == "user"
    results = [b for b in last["content"] if b.get("type") == "tool_result"]
    assert results and results[0]["tool_use_id"] == "call_fixed_1"
    assert TOOL_MARKER in text_of(results[0]["content"])

    rows = claude_rows(proxy, model)
    assert {(r["client"], r["user_id"], r["endpoint"], r["provider"], r["status"])
            for r in rows} == {("claude-code", "claude-code", "messages", "anthropic", 200)}


def test_translated_tool_round_trip(translated_proxy, tmp_path):
    proxy = translated_proxy
    before = len(mock_requests(proxy))
    result = run_claude(proxy, tmp_path, "Say hi", "--allowedTools", f"Bash(echo {TOOL_MARKER})")
    assert result["result"] == MOCK_TEXT

    calls = [r for r in mock_requests(proxy)[before:] if r["path"] == "/v1/chat/completions"]
    assert len(calls) == 2, [r["path"] for r in mock_requests(proxy)[before:]]
    first, second = calls
    model = first["body"]["model"]
    roles = [m["role"] for m in first["body"]["messages"]]
    # The system blocks first, then the turn, with Claude Code's system-role message kept
    # in place after the user's message.
    assert roles[0] == "system" and "user" in roles and "system" in roles[roles.index("user"):]
    assert "Bash" in [t["function"]["name"] for t in first["body"]["tools"]]
    tool = second["body"]["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_fixed_1"
    assert TOOL_MARKER in text_of(tool["content"])

    rows = claude_rows(proxy, model)
    assert {(r["client"], r["endpoint"], r["provider"], r["status"]) for r in rows} == {
        ("claude-code", "messages", "openai", 200)
    }


def test_memory_keeps_the_users_words_not_claude_codes_reminders(proxy, tmp_path):
    words = "Remember that the staging database is restored every Tuesday"
    # No tools: the mock answers with text at once, a complete exchange to capture.
    result = run_claude(proxy, tmp_path, words, "--tools", "")
    assert result["result"] == MOCK_TEXT

    found = wait_for(
        lambda: memories(proxy, "claude-code"), lambda ms: any(words in m["content"] for m in ms)
    )
    mine = [m for m in found if words in m["content"]]
    assert mine, found
    assert mine[0]["content"] == f"user: {words}\nassistant: {MOCK_TEXT}"
    assert all("<system-reminder>" not in m["content"] for m in found)
