"""Codex CLI (`codex exec`, npm package @openai/codex) through memproxy.

Codex speaks only the Responses API (typed SSE events). The fixed-mode mock first calls
Codex's first tool with empty arguments (Codex reports the bad call back as a
function_call_output), then answers with its fixed text. scripts/test.sh installs the
pinned CLI under tests/sdk/.codex; without it (or CODEX_BIN) the test is skipped.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODEX = os.environ.get("CODEX_BIN") or str(ROOT / "tests/sdk/.codex/node_modules/.bin/codex")

pytestmark = pytest.mark.skipif(not Path(CODEX).exists(), reason="Codex CLI not installed")


@pytest.mark.parametrize("model", ["gpt-bridged", "claude-test", "gpt-test"])
def test_codex_exec_answers(proxy, tmp_path, model):
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "memproxy"\n\n'
        "[model_providers.memproxy]\n"
        'name = "memproxy"\n'
        f'base_url = "{proxy["base"]}/v1"\n'
        'env_key = "MEMPROXY_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = dict(os.environ, MEMPROXY_KEY=proxy["key"], CODEX_HOME=str(home))
    r = subprocess.run(
        [CODEX, "exec", "--skip-git-repo-check", "Say hi"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "fixed answer from the mock upstream" in r.stdout, out
    assert "stream closed before response.completed" not in out
    # Detected as the `codex` client from its user agent.
    assert any('"user_id":"codex"' in line and "/v1/responses" in line for line in proxy["log"])
