"""Starts the compiled mock upstream and memproxy on free ports for the client tests (the
Python SDKs here, the Node SDKs, Claude Code and Codex CLI), with helpers to read what the
mock received and the proxy's usage rows.

Binaries come from MEMPROXY_BIN / MOCK_UPSTREAM_BIN (default: target/debug/…, under
CARGO_TARGET_DIR when set); the Node
clients from CLIENTS_DIR (default tests/clients, installed by scripts/test.sh). Every
process is ended by PID when the session ends.
"""

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-sdk-test-master"
CLIENTS_DIR = Path(os.environ.get("CLIENTS_DIR") or ROOT / "tests" / "clients")
NODE_BIN = CLIENTS_DIR / "node_modules" / ".bin"


def client_installed(present: bool, what: str):
    """The mark for a client's test module: none when the client is installed; else a skip,
    or a collection failure with CLIENTS_REQUIRED=1 (scripts/test.sh sets it where node
    is available, so an install that went missing cannot pass as skipped)."""
    if present:
        return []
    if os.environ.get("CLIENTS_REQUIRED") == "1":
        pytest.fail(f"{what} is not installed (CLIENTS_REQUIRED=1)", pytrace=False)
    return pytest.mark.skip(reason=f"{what} is not installed")


def _bin(env_name: str, name: str) -> str:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    path = os.environ.get(env_name) or str(target / "debug" / name)
    if not Path(path).exists():
        pytest.exit(f"{path} not found: build it first (cargo build --workspace)", 2)
    return path


class Proc:
    """A child process whose output lines are collected by a reader thread."""

    def __init__(self, args, env=None, stream="stdout"):
        self.p = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log: list[str] = []
        for s in (self.p.stdout, self.p.stderr):
            threading.Thread(target=self._drain, args=(s,), daemon=True).start()

    def _drain(self, s):
        for line in s:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, predicate, timeout=30.0):
        """Returns the first output line for which predicate(line) is truthy."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError("process did not report ready:\n" + "".join(self.log))
            found = predicate(line)
            if found:
                return found

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def _mock_addr(line: str):
    marker = "mock-upstream listening on "
    return line.split(marker, 1)[1].strip() if marker in line else None


def _proxy_addr(line: str):
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    fields = rec.get("fields", rec)
    if fields.get("message") == "memproxy listening":
        return fields.get("address")
    return None


# What the mock answers (fixed mode): this text, after one tool call when the request
# offers tools; Claude Code is asked to run this harmless Bash command.
MOCK_TEXT = "This is a fixed answer from the mock upstream, used for benchmarks."
TOOL_MARKER = "memproxy-tool-ok"
MOCK_TOOL_ARGS = json.dumps({"command": f"echo {TOOL_MARKER}", "description": "Print a marker"})
# A prompt holding this phrase is answered with the text at once: a whole exchange (which
# memory captures) from a client that always offers tools.
TEXT_ONLY = "(answer without tools)"

BASE_MODELS = """
  - model_name: gpt-test
    litellm_params:
      model: openai/gpt-test
      api_base: http://{mock}/v1
      api_key: sk-upstream
  - model_name: gpt-bridged
    litellm_params:
      model: openai/local-model
      api_base: http://{mock}/v1
      api_key: sk-upstream
    model_info:
      supported_endpoints: ["/v1/chat/completions"]
  - model_name: claude-test
    litellm_params:
      model: anthropic/claude-test
      api_base: http://{mock}
      api_key: sk-upstream
  - model_name: offline
    litellm_params:
      model: openai/offline
      mock_response: "Hello from the offline mock."
"""

# Any other claude-* name (Claude Code's default model, its background calls): native.
NATIVE_CLAUDE = """
  - model_name: "claude-*"
    litellm_params:
      model: anthropic/claude-*
      api_base: http://{mock}
      api_key: sk-upstream
"""

# claude-* on an OpenAI-compatible deployment: Claude Code's Anthropic requests translated.
TRANSLATED_CLAUDE = """
  - model_name: "claude-*"
    litellm_params:
      model: openai/claude-*
      api_base: http://{mock}/v1
      api_key: sk-upstream
"""


def _start_proxy(mock_addr: str, models: str, procs: list) -> dict:
    """Starts memproxy with `models` (a model_list body, `{mock}` = the mock's address) and
    a fresh data dir; returns what the tests need to reach it."""
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(
        "model_list:"
        + models.format(mock=mock_addr)
        + f"general_settings:\n  master_key: {MASTER_KEY}\n"
    )
    cfg.close()
    env = dict(os.environ, LOG_LEVEL="info")
    # Memory files go to a temp dir, never into the source tree.
    env["MEMPROXY_DATA_DIR"] = tempfile.mkdtemp(prefix="memproxy-sdk-")
    env.pop("LITELLM_MASTER_KEY", None)
    env.pop("LITELLM_BASE_URL", None)
    proxy = Proc(
        [_bin("MEMPROXY_BIN", "memproxy"), "serve", "--config", cfg.name, "--port", "0"],
        env=env,
    )
    procs.append(proxy)
    addr = proxy.wait_for(_proxy_addr)
    base = f"http://{addr}"
    with urllib.request.urlopen(base + "/health/liveliness", timeout=10) as r:
        assert r.status == 200
    return {"base": base, "key": MASTER_KEY, "mock": f"http://{mock_addr}", "log": proxy.log}


@pytest.fixture(scope="session")
def _procs():
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.fixture(scope="session")
def mock_addr(_procs):
    """The compiled mock upstream in fixed mode, recording what it receives."""
    env = dict(os.environ, MOCK_RECORD="1", MOCK_TEXT=MOCK_TEXT, MOCK_TOOL="Bash",
               MOCK_TOOL_ARGS=MOCK_TOOL_ARGS, MOCK_TEXT_ONLY=TEXT_ONLY)
    mock = Proc([_bin("MOCK_UPSTREAM_BIN", "mock-upstream"), "0"], env=env)
    _procs.append(mock)
    return mock.wait_for(_mock_addr)


@pytest.fixture(scope="session")
def proxy(mock_addr, _procs):
    """memproxy with OpenAI, bridged, Anthropic (`claude-test`, any `claude-*`) and offline
    models on the mock."""
    return _start_proxy(mock_addr, BASE_MODELS + NATIVE_CLAUDE, _procs)


@pytest.fixture(scope="session")
def translated_proxy(mock_addr, _procs):
    """memproxy whose `claude-*` models are OpenAI-compatible deployments on the mock."""
    return _start_proxy(mock_addr, BASE_MODELS + TRANSLATED_CLAUDE, _procs)


def _get(url: str, key: str | None = None):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def mock_requests(proxy: dict) -> list:
    """Every request the mock has received, oldest first: `{path, headers, body}`."""
    return _get(proxy["mock"] + "/mock/requests")


def usage_rows(proxy: dict, **query) -> list:
    """`GET /v1/usage/requests` with these filters (master key), newest first."""
    q = urllib.parse.urlencode(dict(query, limit=1000))
    return _get(f"{proxy['base']}/v1/usage/requests?{q}", proxy["key"])["data"]


def memories(proxy: dict, user_id: str) -> list:
    """A user's stored memories, newest first (memory API, master key)."""
    q = urllib.parse.urlencode({"user_id": user_id, "limit": 1000})
    return _get(f"{proxy['base']}/v1/memories?{q}", proxy["key"])["data"]


def wait_for(fetch, done, timeout=10.0):
    """Calls `fetch` until `done(result)` or the timeout (rows and memories are written
    after the answer, off the request path); returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def rows_for(proxy: dict, request_id: str) -> list:
    """The usage rows of one request id, once written."""
    return wait_for(lambda: usage_rows(proxy, request_id=request_id), bool)


def clean_env(**extra) -> dict:
    """A minimal environment for a client process: nothing of the caller's API keys,
    base URLs or proxies leaks in."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "TERM", "TMPDIR") if k in os.environ}
    env.update(extra)
    return env
