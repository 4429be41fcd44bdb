// Starts what the browser tests need: target/debug/mock-upstream, a small recording
// upstream (to read the context memproxy sent), target/debug/memproxy on free ports with a
// temporary data dir, and Debian's headless Chromium through playwright-core.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MASTER = 'sk-ui-test-master';

function bin(env, name) {
  const p = process.env[env] || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', name);
  if (!existsSync(p)) throw new Error(`${p} not found: build it first (cargo build --workspace --bins)`);
  return p;
}

// Children still running when this process exits (a failed start, a crashed test) are ended.
const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGTERM'); });

/** Starts a process and resolves with the first value `ready(line)` returns from its output. */
function startProc(cmd, args, env, ready) {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const log = [];
  const found = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start:\n${log.join('')}`)), Number(process.env.UI_START_TIMEOUT_MS || 30000));
    for (const s of [child.stdout, child.stderr]) {
      let buf = '';
      s.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          log.push(line + '\n');
          const v = ready(line);
          if (v) { clearTimeout(timer); resolve(v); }
        }
      });
    }
    child.on('exit', (code) => reject(new Error(`${cmd} exited with ${code}:\n${log.join('')}`)));
  });
  return { child, log, found };
}

/** An OpenAI-compatible upstream that records each request body and answers "ok". */
function recorder() {
  const bodies = [];
  const server = createServer((req, res) => {
    let data = '';
    req.on('data', (d) => { data += d; });
    req.on('end', () => {
      let body = {};
      try { body = JSON.parse(data); } catch { /* recorded as {} */ }
      bodies.push(body);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({
        id: 'chatcmpl-rec', object: 'chat.completion', created: 1700000000, model: body.model || 'recorded',
        choices: [{ index: 0, message: { role: 'assistant', content: 'Noted.' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 20, completion_tokens: 2, total_tokens: 22 },
      }));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, bodies, port: server.address().port })));
}

/** Starts everything; `dataDir` reuses a data dir (kept afterwards) instead of a new one. */
export async function startAll({ dataDir } = {}) {
  const mock = startProc(bin('MOCK_UPSTREAM_BIN', 'mock-upstream'), ['0'], process.env,
    (l) => (l.includes('mock-upstream listening on ') ? l.split('listening on ')[1].trim() : null));
  const mockAddr = await mock.found;
  const rec = await recorder();
  const dir = mkdtempSync(path.join(tmpdir(), 'memproxy-ui-'));
  const cfg = path.join(dir, 'config.yaml');
  writeFileSync(cfg, `
model_list:
  - model_name: gpt-test
    litellm_params:
      model: openai/gpt-test
      api_base: http://${mockAddr}/v1
      api_key: sk-upstream
    model_info: {input_cost_per_token: 0.000002, output_cost_per_token: 0.000008}
  - model_name: recorded
    litellm_params:
      model: openai/recorded
      api_base: http://127.0.0.1:${rec.port}/v1
      api_key: sk-upstream
    model_info: {input_cost_per_token: 0.000001, output_cost_per_token: 0.000004}
general_settings:
  master_key: ${MASTER}
context_retrieval:
  enabled: true
  injection_strategy: system
  max_results: 5
`);
  const env = { ...process.env, LOG_LEVEL: 'info', MEMPROXY_DATA_DIR: dataDir || path.join(dir, 'data') };
  delete env.LITELLM_MASTER_KEY;
  delete env.LITELLM_BASE_URL;
  const proxy = startProc(bin('MEMPROXY_BIN', 'memproxy'), ['serve', '--config', cfg, '--port', '0'], env, (l) => {
    try {
      const rec = JSON.parse(l);
      const f = rec.fields || rec;
      return f.message === 'memproxy listening' ? f.address : null;
    } catch { return null; }
  });
  const addr = await proxy.found;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    // playwright starts each launch with a fresh temporary profile (--user-data-dir).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  return {
    base: `http://${addr}`,
    browser,
    recorded: rec.bodies,
    proxyLog: proxy.log,
    async stop() {
      await browser.close().catch(() => {});
      for (const p of [proxy.child, mock.child]) if (p.exitCode === null) p.kill('SIGTERM');
      rec.server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
