"""Codex CLI (`codex exec`, npm package @openai/codex) through memproxy.

Codex speaks only the Responses API (typed SSE events): natively to `gpt-test` (an OpenAI
deployment serving /responses), bridged to `gpt-bridged` (chat completions only) and to
`claude-test` (Anthropic Messages). The fixed-mode mock first calls Codex's first tool
with empty arguments (Codex reports the bad call back as a function_call_output), then
answers with its fixed text. Since 0.171 Codex puts an `<environment_context>` block
before the user's text; memory must keep the user's words without it. scripts/test.sh
installs the pinned CLI with `npm ci` into tests/clients; without it (or CODEX_BIN) the
tests are skipped.
"""

import os
import subprocess
from pathlib import Path

import pytest
from conftest import (
    MOCK_TEXT,
    NODE_BIN,
    TEXT_ONLY,
    clean_env,
    client_installed,
    memories,
    mock_requests,
    usage_rows,
    wait_for,
)

CODEX = os.environ.get("CODEX_BIN") or str(NODE_BIN / "codex")

pytestmark = client_installed(Path(CODEX).exists(), f"Codex CLI ({CODEX})")


def run_codex(proxy, tmp_path, model, prompt):
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    # No update check, no plugin sync (it reaches GitHub), no analytics: only memproxy.
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "memproxy"\n'
        "check_for_update_on_startup = false\n\n"
        "[features]\nplugins = false\n\n"
        "[analytics]\nenabled = false\n\n"
        "[model_providers.memproxy]\n"
        'name = "memproxy"\n'
        f'base_url = "{proxy["base"]}/v1"\n'
        'env_key = "MEMPROXY_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = clean_env(MEMPROXY_KEY=proxy["key"], CODEX_HOME=str(home), HOME=str(tmp_path))
    r = subprocess.run(
        [CODEX, "exec", "--skip-git-repo-check", prompt],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "stream closed before response.completed" not in out
    return r.stdout, out


@pytest.mark.parametrize(
    "model,path",
    [
        ("gpt-test", "/v1/responses"),
        ("gpt-bridged", "/v1/chat/completions"),
        ("claude-test", "/v1/messages"),
    ],
    ids=["native", "bridged-chat", "bridged-anthropic"],
)
def test_codex_exec_answers(proxy, tmp_path, model, path):
    before = len(mock_requests(proxy))
    stdout, out = run_codex(proxy, tmp_path, model, "Say hi")
    assert MOCK_TEXT in stdout, out
    got = mock_requests(proxy)[before:]
    # A tool round trip: the call of Codex's first tool, then its output sent back.
    assert [r["path"] for r in got] == [path, path], [r["path"] for r in got]
    rows = wait_for(
        lambda: usage_rows(proxy, client="codex", model=model),
        lambda rows: len(rows) >= 2,
    )
    assert {(r["client"], r["user_id"], r["endpoint"], r["status"]) for r in rows} == {
        ("codex", "codex", "responses", 200)
    }


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"], ids=["native", "bridged"])
def test_memory_keeps_the_users_words_not_the_environment_context(proxy, tmp_path, model):
    words = f"Our release train leaves on Thursdays from branch {model}-train {TEXT_ONLY}"
    before = len(mock_requests(proxy))
    stdout, out = run_codex(proxy, tmp_path, model, words)
    assert MOCK_TEXT in stdout, out
    sent = str(mock_requests(proxy)[before]["body"])
    assert "<environment_context>" in sent, "Codex no longer sends an environment block"

    found = wait_for(
        lambda: memories(proxy, "codex"), lambda ms: any(words in m["content"] for m in ms)
    )
    mine = [m for m in found if words in m["content"]]
    assert mine, found
    assert mine[0]["content"].startswith(f"user: {words}\nassistant: "), mine[0]
    assert all("<environment_context>" not in m["content"] for m in found)
