"""Starts the compiled mock upstream and memproxy on free ports for the SDK tests.

Binaries come from MEMPROXY_BIN / MOCK_UPSTREAM_BIN (default: target/debug/…). Both
processes are ended by PID when the session ends.
"""

import json
import os
import queue
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-sdk-test-master"


def _bin(env_name: str, name: str) -> str:
    path = os.environ.get(env_name) or str(ROOT / "target" / "debug" / name)
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


@pytest.fixture(scope="session")
def proxy():
    mock = Proc([_bin("MOCK_UPSTREAM_BIN", "mock-upstream"), "0"])
    procs = [mock]
    try:
        mock_addr = mock.wait_for(_mock_addr)
        cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        cfg.write(
            f"""
model_list:
  - model_name: gpt-test
    litellm_params:
      model: openai/gpt-test
      api_base: http://{mock_addr}/v1
      api_key: sk-upstream
  - model_name: gpt-bridged
    litellm_params:
      model: openai/local-model
      api_base: http://{mock_addr}/v1
      api_key: sk-upstream
    model_info:
      supported_endpoints: ["/v1/chat/completions"]
  - model_name: claude-test
    litellm_params:
      model: anthropic/claude-test
      api_base: http://{mock_addr}
      api_key: sk-upstream
  - model_name: offline
    litellm_params:
      model: openai/offline
      mock_response: "Hello from the offline mock."
general_settings:
  master_key: {MASTER_KEY}
"""
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
        yield {"base": base, "key": MASTER_KEY, "mock": f"http://{mock_addr}", "log": proxy.log}
    finally:
        for p in reversed(procs):
            p.stop()
