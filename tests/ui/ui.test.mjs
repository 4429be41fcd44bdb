// Browser tests of the /ui dashboard, in Debian's headless Chromium: sign-in, charts fed
// by real requests through the proxy, the requests table and detail, the memory browser
// (search, edit, delete, and the next proxied request's context), keys, and the isolation
// of a virtual key bound to one user. Screenshots of every page at desktop and phone width
// go to tests/ui/screenshots/ (not committed; see docs/ui.md).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { startAll, MASTER, ROOT } from './harness.mjs';

const SHOTS = path.join(ROOT, 'tests/ui/screenshots');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
let env;

async function chat(body, { key = MASTER, user, stream = false } = {}) {
  const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  if (user) headers['x-memory-user-id'] = user;
  const r = await fetch(env.base + '/v1/chat/completions', {
    method: 'POST', headers, body: JSON.stringify({ stream, ...body }),
  });
  const text = await r.text();
  return { status: r.status, text, id: r.headers.get('x-request-id') };
}

async function apiCall(p, { method = 'GET', key = MASTER, json } = {}) {
  const headers = { authorization: `Bearer ${key}` };
  if (json !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(env.base + p, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** A page of a fresh browser context (its own cookies) at `viewport`. */
async function newPage(viewport = DESKTOP) {
  const ctx = await env.browser.newContext({ viewport, colorScheme: 'light' });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => { throw e; });
  return page;
}

async function signIn(page, key) {
  await page.goto(env.base + '/ui/');
  await page.fill('#login-key', key);
  await page.press('#login-key', 'Enter');
  await page.waitForSelector('header.top:not([hidden])');
}

/** Screenshots of the current page at desktop and phone width. */
async function shoot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const vp = page.viewportSize();
  await page.setViewportSize(DESKTOP);
  await page.waitForTimeout(50); // charts follow the new width (ResizeObserver)
  await page.screenshot({ path: path.join(SHOTS, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(50);
  await page.screenshot({ path: path.join(SHOTS, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize(vp);
}

before(async () => {
  env = await startAll();
  // Real traffic through the proxy: two clients, streams (TTFT) and plain answers, and
  // an error (unknown model).
  for (let i = 0; i < 6; i++) {
    const r = await chat({ model: 'gpt-test', messages: [{ role: 'user', content: `Question ${i} about the build` }] },
      { user: i % 3 === 0 ? 'bob' : 'alice', stream: i % 2 === 1 });
    assert.equal(r.status, 200, r.text);
  }
  const bad = await chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }, { user: 'alice' });
  assert.equal(bad.status, 404);
});

after(async () => {
  if (env) await env.stop();
});

test('a wrong key is refused at sign-in, in the page and by the API', async () => {
  const page = await newPage();
  await page.goto(env.base + '/ui/');
  await shoot(page, 'login');
  await page.fill('#login-key', 'sk-not-a-key');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('refused'));
  assert.equal(await page.isHidden('header.top'), true);
  const r = await fetch(env.base + '/ui/login', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: 'sk-wrong' }),
  });
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('set-cookie'), null);
  // Without a session, the APIs answer 401 to the browser.
  const api = await page.evaluate(async () => (await fetch('/v1/usage/timeseries')).status);
  assert.equal(api, 401);
  await page.context().close();
});

test('signed in with the master key, the overview charts the real requests', async () => {
  const page = await newPage();
  await signIn(page, MASTER);
  const cookies = await page.context().cookies();
  const c = cookies.find((x) => x.name === 'memproxy_session');
  assert.ok(c && c.httpOnly && c.sameSite === 'Strict', JSON.stringify(cookies));
  assert.ok(!(await page.evaluate(() => document.cookie)).includes('memproxy_session'), 'the cookie is HttpOnly');
  await page.waitForSelector('#cards');
  const cards = await page.textContent('#cards');
  assert.match(cards, /Requests\s*7/, cards);
  assert.match(cards, /Error rate\s*14/, cards);
  await page.waitForSelector('.chart canvas');
  assert.equal(await page.locator('.chart canvas').count(), 6);
  // Numbers plotted: the requests chart's legend shows a value for the cursor's bucket.
  const t = await page.evaluate(async () => (await (await fetch('/v1/usage/timeseries?range=24h')).json()).all.requests);
  assert.equal(t.reduce((a, b) => a + b, 0), 7);
  await shoot(page, 'overview');

  await page.selectOption('#group-by', 'user');
  await page.waitForSelector('#groups tbody tr');
  const groups = await page.textContent('#groups');
  assert.match(groups, /alice/);
  assert.match(groups, /bob/);
  await shoot(page, 'overview-by-client');
  // A reload keeps the session (the cookie), no key needed.
  await page.reload();
  await page.waitForSelector('#cards');
  await page.context().close();
});

test('the requests table filters and pages, and a request shows its details', async () => {
  const page = await newPage();
  await signIn(page, MASTER);
  await page.goto(env.base + '/ui/#/requests');
  await page.waitForSelector('#requests tbody tr.link');
  assert.equal(await page.locator('#requests tbody tr.link').count(), 7);
  await page.fill('#f-user_id', 'bob');
  await page.press('#f-user_id', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#requests tbody tr.link').length === 2);
  await page.selectOption('#f-status', 'error');
  await page.fill('#f-user_id', '');
  await page.click('#filters button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#requests tbody tr.link').length === 1);
  await page.click('#filters button.ghost');
  await page.waitForFunction(() => document.querySelectorAll('#requests tbody tr.link').length === 7);
  await shoot(page, 'requests');
  await page.locator('#requests tbody tr.link').first().focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector('dl.detail');
  const detail = await page.textContent('dl.detail');
  assert.match(detail, /Upstream/);
  await page.context().close();
});

test('a memory is searched, edited and deleted, and the next proxied request sees the change', async () => {
  const added = await apiCall('/v1/memories', {
    method: 'POST', json: { user_id: 'alice', content: 'Alice indents Python with tabs, never spaces.' },
  });
  assert.equal(added.status, 201);
  const page = await newPage();
  await signIn(page, MASTER);
  await page.goto(env.base + '/ui/#/memories?user=alice');
  await page.waitForSelector('#mem-list');
  await page.fill('#m-q', 'indentation tabs');
  await page.press('#m-q', 'Enter');
  await page.waitForSelector('#mem-list .mem .score');
  const first = page.locator('#mem-list .mem').first();
  assert.match(await first.textContent(), /tabs, never spaces/);
  assert.match(await first.locator('.score').textContent(), /score \d/);
  await shoot(page, 'memories-search');

  // Edit: the new text is what the next request gets.
  await first.getByRole('button', { name: 'Edit memory' }).click();
  await page.fill('#mem-list textarea', 'Alice indents Python with four spaces, never tabs.');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.waitForFunction(() => document.querySelector('#mem-list')?.textContent.includes('four spaces'));
  const ask = () => chat({ model: 'recorded', messages: [{ role: 'user', content: 'How should I indent Python, tabs?' }] }, { user: 'alice' });
  const r1 = await ask();
  assert.equal(r1.status, 200, r1.text);
  const sent1 = JSON.stringify(env.recorded.at(-1).messages);
  assert.match(sent1, /four spaces, never tabs/);
  assert.doesNotMatch(sent1, /tabs, never spaces/);

  // "Why was this injected": the request's detail names the memory, its score and terms.
  await page.goto(env.base + '/ui/#/requests/' + encodeURIComponent(r1.id));
  await page.waitForSelector('#injected');
  const why = await page.textContent('#injected');
  assert.match(why, /four spaces/);
  assert.match(why, /score \d/);
  assert.match(why, /shared terms/);
  assert.match(await page.textContent('#memory-query'), /How should I indent Python/);
  await shoot(page, 'request-detail');

  // Delete it in the browser: the next proxied request carries it no more.
  await page.goto(env.base + '/ui/#/memories?user=alice&q=indent%20python');
  await page.waitForSelector('#mem-list .mem');
  const card = page.locator('#mem-list .mem', { hasText: 'four spaces' });
  await card.getByRole('button', { name: 'Delete memory' }).click();
  await page.click('#confirm-ok');
  await page.waitForFunction(() => document.querySelector('#mem-list') && !document.querySelector('#mem-list').textContent.includes('four spaces'));
  const r2 = await ask();
  assert.equal(r2.status, 200);
  assert.doesNotMatch(JSON.stringify(env.recorded.at(-1).messages), /four spaces/);
  await page.goto(env.base + '/ui/#/memories?user=alice');
  await page.waitForSelector('#mem-list .mem');
  assert.doesNotMatch(await page.textContent('#mem-list'), /four spaces/);
  await shoot(page, 'memories');
  await page.context().close();
});

test('keys are created (shown once), limited and revoked; a key bound to bob sees only bob', async () => {
  const page = await newPage();
  await signIn(page, MASTER);
  await page.goto(env.base + '/ui/#/keys');
  await page.fill('#create-key #k-key_alias', 'bob-laptop');
  await page.fill('#create-key #k-user_id', 'bob');
  await page.fill('#create-key #k-max_budget', '5');
  await page.click('#create-key button[type=submit]');
  const key = (await (await page.waitForSelector('#new-key-value')).textContent()).trim();
  assert.match(key, /^sk-/);
  const row = page.locator('#keys tbody tr', { hasText: 'bob-laptop' });
  await row.getByRole('button', { name: 'Edit' }).click();
  await page.fill('#keys #k-rpm_limit', '120');
  await page.click('#keys button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#keys')?.textContent.includes('120'));
  await shoot(page, 'keys');
  const info = await apiCall('/key/info?key=' + encodeURIComponent(key));
  assert.equal(info.body.info.rpm_limit, 120);
  assert.equal(info.body.info.user_id, 'bob');

  // Traffic made with bob's key, and a memory of each user.
  for (let i = 0; i < 2; i++) {
    const r = await chat({ model: 'gpt-test', messages: [{ role: 'user', content: `bob's question ${i}` }] }, { key });
    assert.equal(r.status, 200);
  }
  await apiCall('/v1/memories', { method: 'POST', json: { user_id: 'bob', content: 'Bob deploys on Fridays.' } });
  await apiCall('/v1/memories', { method: 'POST', json: { user_id: 'alice', content: 'Alice secret: prefers vim.' } });

  const bob = await newPage(PHONE);
  await signIn(bob, key);
  await bob.waitForSelector('#cards');
  assert.match(await bob.textContent('#cards'), /Requests\s*2/);
  assert.equal(await bob.locator('#group-by option[value=user]').count(), 0);
  await shoot(bob, 'overview-virtual-key');
  await bob.goto(env.base + '/ui/#/memories?user=alice');
  await bob.waitForSelector('#mem-list .mem');
  const mems = await bob.textContent('#mem-list');
  assert.match(mems, /Fridays/);
  assert.doesNotMatch(mems, /vim/);
  assert.equal(await bob.inputValue('#m-user'), 'bob');
  await shoot(bob, 'memories-virtual-key');
  await bob.goto(env.base + '/ui/#/requests');
  await bob.waitForSelector('#requests tbody tr.link');
  assert.equal(await bob.locator('#requests tbody tr.link').count(), 2);
  // Through the API with its session: alice's memories and usage are refused.
  const statuses = await bob.evaluate(async () => Promise.all([
    '/v1/memories?user_id=alice', '/v1/memories/search?user_id=alice&q=vim',
    '/v1/usage/requests?user_id=alice', '/v1/usage/timeseries?user_id=alice', '/key/list',
  ].map(async (u) => (await fetch(u)).status)));
  assert.deepEqual(statuses, [403, 403, 403, 403, 403]);
  // And with the key itself.
  assert.equal((await apiCall('/v1/memories?user_id=alice', { key })).status, 403);
  const own = await apiCall('/v1/usage/timeseries?range=1h', { key });
  assert.equal(own.body.totals.requests, 2);
  await bob.goto(env.base + '/ui/#/keys');
  await bob.waitForSelector('#my-key');
  await shoot(bob, 'keys-virtual-key');

  // A change without the CSRF token, or from another origin, is refused.
  const csrf = await bob.evaluate(async () => (await fetch('/v1/memories?user_id=bob', { method: 'DELETE' })).status);
  assert.equal(csrf, 403);
  assert.match(await bob.textContent('#view'), /./);

  // Revoked in the admin's page: bob's session ends.
  await page.reload();
  const bobRow = page.locator('#keys tbody tr', { hasText: 'bob-laptop' });
  await bobRow.getByRole('button', { name: 'Revoke' }).click();
  await page.click('#confirm-ok');
  await page.waitForFunction(() => document.querySelector('#keys') && !document.querySelector('#keys').textContent.includes('bob-laptop'));
  const after = await bob.evaluate(async () => (await fetch('/v1/memories?user_id=bob')).status);
  assert.equal(after, 401);
  await bob.context().close();
  await page.context().close();
});

test('dark theme, keyboard navigation and sign-out', async () => {
  const page = await newPage();
  await signIn(page, MASTER);
  await page.waitForSelector('#cards');
  await page.click('#theme');
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
  await page.waitForSelector('.chart canvas');
  await shoot(page, 'overview-dark');
  // Tab reaches the navigation links; Enter follows them.
  await page.focus('nav a[data-page=memories]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#mem-form');
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  const s = await page.evaluate(async () => (await fetch('/ui/session')).status);
  assert.equal(s, 401);
  await page.context().close();
});
