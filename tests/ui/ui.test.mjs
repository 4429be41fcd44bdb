// Browser tests of the /ui dashboard: Debian's chromium driven by playwright-core, against
// the compiled memproxy and mock upstream (started here, on free ports, with a fresh data
// dir). Run by scripts/ui-test.sh (MEMPROXY_BIN, MOCK_UPSTREAM_BIN, SHOTS_DIR).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const MASTER = "sk-ui-master";
const SHOTS = process.env.SHOTS_DIR || "target/ui-screenshots";
const procs = [];
let mock, base, browser, dataDir, profileDir;

/** Starts a process and waits (10 s at most) for a stdout/stderr line `pick` accepts. */
function startProc(cmd, args, env, pick) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    procs.push(p);
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start`)), 10000);
    let buf = "";
    const onData = (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const got = pick(line);
        if (got) { clearTimeout(timer); resolve(got); }
      }
    };
    p.stdout.on("data", onData);
    p.stderr.on("data", onData);
    p.on("exit", (code) => reject(new Error(`${cmd} exited with ${code}`)));
  });
}

async function call(method, path, key, body) {
  const r = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "user-agent": "ui-e2e/1.0" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function chat(key, text) {
  const r = await call("POST", "/v1/chat/completions", key, {
    model: "gpt", messages: [{ role: "user", content: text }],
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

/** The body of the last chat request the mock upstream received, as text. */
async function lastUpstream() {
  const all = await (await fetch(mock + "/mock/requests")).json();
  return JSON.stringify(all[all.length - 1].body);
}

/** Waits for `cond` (an async predicate) with a deadline. */
async function until(cond, what, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("timed out waiting for " + what);
}

let keyA, keyB;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), "memproxy-ui-"));
  profileDir = mkdtempSync(join(tmpdir(), "memproxy-ui-chromium-"));
  const mockAddr = await startProc(process.env.MOCK_UPSTREAM_BIN, ["0"],
    { MOCK_RECORD: "1", MOCK_TEXT: "Noted." },
    (l) => l.includes("mock-upstream listening on ") && l.split("mock-upstream listening on ")[1].trim());
  mock = "http://" + mockAddr;
  const cfg = join(dataDir, "config.yaml");
  writeFileSync(cfg, `model_list:
  - model_name: gpt
    litellm_params: {model: openai/gpt-4o-mini, api_base: ${mock}/v1, api_key: sk-up}
general_settings: {master_key: ${MASTER}}
context_retrieval: {enabled: true, query_strategy: last_user, injection_strategy: system, max_results: 5}
`);
  const addr = await startProc(process.env.MEMPROXY_BIN, ["serve", "--config", cfg, "--port", "0"],
    { MEMPROXY_DATA_DIR: join(dataDir, "data"), LOG_LEVEL: "info" },
    (l) => {
      try {
        const rec = JSON.parse(l);
        const f = rec.fields || rec;
        return f.message === "memproxy listening" && f.address;
      } catch (_) { return null; }
    });
  base = "http://" + addr;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    // playwright gives each launch a fresh --user-data-dir of its own (it refuses one in
    // args); TMPDIR points it at a directory this test removes afterwards.
    env: { ...process.env, TMPDIR: profileDir },
  });

  // Two users' keys, their memories, and real traffic through the proxy.
  keyA = (await call("POST", "/key/generate", MASTER, { user_id: "alice", key_alias: "alice-laptop" })).body.key;
  keyB = (await call("POST", "/key/generate", MASTER, { user_id: "bob", key_alias: "bob-phone" })).body.key;
  assert.equal((await call("POST", "/v1/memories", MASTER, { user_id: "alice", content: "Alice's favourite gemstone is turquoise" })).status, 201);
  assert.equal((await call("POST", "/v1/memories", MASTER, { user_id: "bob", content: "Bob's secret codename is walrus" })).status, 201);
  for (let i = 0; i < 4; i++) await chat(keyA, `hello number ${i}`);
  for (let i = 0; i < 2; i++) await chat(keyB, `hi there ${i}`);
  await chat(keyA, "which gemstone do I like?");
  assert.match(await lastUpstream(), /turquoise/, "the memory is injected before the test edits it");
});

after(async () => {
  if (browser) await browser.close();
  for (const p of procs.reverse()) p.kill("SIGTERM");
  for (const d of [dataDir, profileDir]) if (d) rmSync(d, { recursive: true, force: true });
});

async function page(width) {
  const ctx = await browser.newContext({ viewport: { width, height: width < 600 ? 800 : 900 } });
  return ctx.newPage();
}

async function signIn(p, key) {
  await p.goto(base + "/ui");
  await p.fill("#signin-key", key);
  await p.press("#signin-key", "Enter");
}

async function shoot(p, name) {
  await p.screenshot({ path: join(SHOTS, name + ".png"), fullPage: true });
}

test("a wrong key is refused at sign-in", async () => {
  const p = await page(1280);
  await signIn(p, "sk-not-a-key");
  await p.waitForSelector("#signin-error:has-text('Sign-in refused')");
  assert.equal(await p.isVisible("#top"), false);
  await shoot(p, "signin-desktop");
  await p.context().close();
});

test("the master key sees charts, requests and keys, at desktop and phone width", async () => {
  for (const [width, tag] of [[1280, "desktop"], [390, "phone"]]) {
    const p = await page(width);
    await signIn(p, MASTER);
    await p.waitForSelector("#page-overview:not([hidden])");
    await p.selectOption("#ov-range", "1h");
    // Charts drawn from the real requests above (aggregated by the store).
    await p.waitForFunction(() => Number(document.querySelector("#ch-requests").dataset.points || 0) > 0);
    const total = await p.textContent("#ov-totals .card b");
    assert.equal(total, "7");
    assert.ok(await p.locator("#ch-latency path.line").count() >= 2);
    assert.equal(await p.locator("#ov-groups tbody tr").count() > 0, true);
    await shoot(p, `overview-${tag}`);

    await p.click("a[data-page=requests]");
    await p.waitForSelector("#rq-table tbody tr");
    assert.equal(await p.locator("#rq-table tbody tr").count(), 7);
    await p.locator("#rq-table tbody tr").first().focus();
    await p.keyboard.press("Enter");
    await p.waitForSelector("#rq-detail:not([hidden])");
    assert.match(await p.textContent("#rq-detail"), /Memories injected/);
    // The newest request asked about gemstones: the memory injected into it, and why.
    const injected = p.locator("#rq-detail .injected li");
    await injected.first().waitFor();
    assert.equal(await injected.count(), 1);
    assert.match(await injected.first().textContent(), /turquoise/);
    assert.match(await injected.first().locator(".why").textContent(), /Placed 1 of 1: .*the best match/);
    await shoot(p, `requests-${tag}`);

    await p.click("a[data-page=keys]");
    await p.waitForSelector("#key-table tbody tr");
    assert.equal(await p.locator("#key-table tbody tr").count(), 2);
    await shoot(p, `keys-${tag}`);

    await p.click("a[data-page=memory]");
    await p.fill("#mem-user-id", "alice");
    await p.press("#mem-user-id", "Enter");
    await p.waitForSelector("#mem-list li");
    await shoot(p, `memory-${tag}`);
    await p.context().close();
  }
});

test("search, edit and delete a memory; the next proxied request no longer carries it", async () => {
  const p = await page(1280);
  await signIn(p, MASTER);
  await p.waitForSelector("#top:not([hidden])");
  await p.click("a[data-page=memory]");
  await p.fill("#mem-user-id", "alice");
  await p.press("#mem-user-id", "Enter");
  await p.fill("#mem-q", "gemstone turquoise");
  await p.press("#mem-q", "Enter");
  // The search's answer, not the list the user id's Enter loaded just before.
  await p.waitForFunction(() => document.querySelector("#mem-status").textContent.includes("best first"));
  const hit = p.locator("#mem-list li", { hasText: "turquoise" });
  await hit.waitFor();
  assert.match(await hit.locator(".meta").textContent(), /score \d/);

  await hit.locator("button.edit").click();
  await p.fill("#mem-list li textarea", "Alice's favourite gemstone is sapphire");
  await p.click("#mem-list li button.save");
  const edited = p.locator("#mem-list li", { hasText: "sapphire" });
  await edited.waitFor();
  const editedId = await edited.getAttribute("data-id");
  await chat(keyA, "which gemstone do I like?");
  const afterEdit = await lastUpstream();
  assert.match(afterEdit, /sapphire/);
  assert.doesNotMatch(afterEdit, /turquoise/);

  p.once("dialog", (d) => d.accept());
  await edited.locator("button.delete").click();
  await until(async () => (await p.locator("#mem-list li", { hasText: "sapphire" }).count()) === 0, "the row to go");
  await chat(keyA, "which gemstone do I like?");
  assert.doesNotMatch(await lastUpstream(), /sapphire|turquoise/, "a deleted memory is not injected");

  // The request that carried the edited memory now shows it as deleted.
  let carried;
  await until(async () => {
    const rows = (await call("GET", "/v1/usage/requests?limit=5", MASTER)).body.data;
    const row = rows.find((r) => (r.injected || []).some((m) => m.id === editedId));
    carried = row && row.request_id;
    return Boolean(carried);
  }, "the row of the request that carried the edited memory");
  await p.click("a[data-page=requests]");
  await p.fill("#rq-filter [name=request_id]", carried);
  await p.press("#rq-filter [name=request_id]", "Enter");
  // The filtered page (one row), not the unfiltered one the page opened with.
  await until(async () => (await p.locator("#rq-table tbody tr").count()) === 1, "the filtered request");
  await p.locator("#rq-table tbody tr").first().click();
  const gone = p.locator(`#rq-detail .injected li.deleted[data-id="${editedId}"]`);
  await gone.waitFor();
  assert.match(await gone.textContent(), /deleted or edited since/);
  await p.context().close();
});

test("a key bound to alice sees neither bob's memories nor bob's usage", async () => {
  const p = await page(1280);
  await signIn(p, keyA);
  await p.waitForSelector("#page-overview:not([hidden])");
  assert.equal(await p.isVisible("a[data-page=keys]"), false);
  await p.selectOption("#ov-range", "1h");
  await p.waitForFunction(() => Number(document.querySelector("#ch-requests").dataset.points || 0) > 0);
  // Alice made 7 requests by now (4 + 3 about gemstones); bob's 2 are not counted.
  await until(async () => (await p.textContent("#ov-totals .card b")) === "7", "alice's total");
  await shoot(p, "overview-virtual-key");

  await p.click("a[data-page=memory]");
  assert.equal(await p.inputValue("#mem-user-id"), "alice");
  assert.equal(await p.getAttribute("#mem-user-id", "readonly"), "");
  await p.click("#mem-recent");
  await p.waitForSelector("#mem-list li");
  assert.equal(await p.locator("#mem-list li", { hasText: "walrus" }).count(), 0);

  // The API with the same session: bob is out of reach.
  const fromPage = await p.evaluate(async () => {
    const get = async (u) => (await fetch(u, { credentials: "same-origin" })).status;
    const rows = await (await fetch("/v1/usage/requests")).json();
    return {
      usage: await get("/v1/usage/requests?user_id=bob"),
      timeseries: await get("/v1/usage/timeseries?range=1h&user_id=bob"),
      memories: await get("/v1/memories?user_id=bob"),
      search: await get("/v1/memories/search?user_id=bob&q=walrus"),
      keys: await get("/key/list"),
      users: [...new Set(rows.data.map((r) => r.user_id))],
    };
  });
  assert.deepEqual(fromPage, { usage: 403, timeseries: 403, memories: 403, search: 403, keys: 403, users: ["alice"] });
  // And a mutation without the CSRF token is refused even with the cookie.
  const forged = await p.evaluate(async () =>
    (await fetch("/v1/memories?user_id=alice", { method: "DELETE" })).status);
  assert.equal(forged, 403);
  await p.context().close();
});

test("usage and memory per project: split the overview by project, browse a project's memory", async () => {
  const r = await fetch(base + "/p/web/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${MASTER}`, "content-type": "application/json", "x-memory-user-id": "alice" },
    body: JSON.stringify({ model: "gpt", messages: [{ role: "user", content: "The web project deploys to the neptune cluster" }] }),
  });
  assert.equal(r.status, 200);
  await r.text();
  const p = await page(1280);
  await signIn(p, MASTER);
  await p.waitForSelector("#page-overview:not([hidden])");
  await p.selectOption("#ov-range", "1h");
  await p.selectOption("#ov-group", "project");
  await until(async () => (await p.locator("#ov-groups tbody tr", { hasText: "web" }).count()) === 1, "the web project's row", 15000);
  await p.click("a[data-page=memory]");
  await p.fill("#mem-user-id", "alice");
  await p.fill("#mem-project", "web");
  // Capture is written in the background: wait until the API has it, then list it.
  await until(async () => JSON.stringify((await call("GET", "/v1/memories?user_id=alice&project=web", MASTER)).body).includes("neptune"),
    "the captured memory in project web");
  await p.click("#mem-recent");
  await p.locator("#mem-list li", { hasText: "neptune" }).waitFor();
  await shoot(p, "memory-project-desktop");
  await p.fill("#mem-project", "");
  await p.click("#mem-recent");
  await until(async () => (await p.locator("#mem-list li", { hasText: "neptune" }).count()) === 0, "the project's memory to stay out of the user-level list");
  await p.context().close();
});
