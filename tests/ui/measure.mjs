// Measures dashboard page loads against a data dir (not part of the test suite; see
// docs/ui.md "Measured"): node measure.mjs DATA_DIR [runs]. Each load is a fresh
// navigation (HTML, scripts, styles, the API call, the charts drawn), timed from
// page.goto until the page's last element is in place; the median of the runs is printed.

import { startAll, MASTER } from './harness.mjs';

const [dataDir, runsArg] = process.argv.slice(2);
if (!dataDir) {
  console.error('usage: node measure.mjs DATA_DIR [runs]');
  process.exit(2);
}
const runs = Number(runsArg || 7);
const env = await startAll({ dataDir });
try {
const fold = env.proxyLog.find((l) => l.includes('usage rollup brought up to date'));
if (fold) console.log('start-up:', fold.trim());
const ctx = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await ctx.newPage();
await page.goto(env.base + '/ui/');
await page.fill('#login-key', MASTER);
await page.press('#login-key', 'Enter');
await page.waitForSelector('#cards');

const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function load(hash, selector) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    await page.goto('about:blank');
    const t = Date.now();
    await page.goto(env.base + '/ui/' + hash);
    await page.waitForSelector(selector);
    times.push(Date.now() - t);
  }
  return median(times);
}
async function apiTime(q) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = await fetch(env.base + '/v1/usage/timeseries?' + q, { headers: { authorization: `Bearer ${MASTER}` } });
    await r.text();
    times.push(performance.now() - t);
  }
  return median(times).toFixed(1);
}
const total = await (await fetch(env.base + '/v1/usage/timeseries?range=30d', { headers: { authorization: `Bearer ${MASTER}` } })).json();
console.log(`rows in the last 30 days: ${total.totals.requests}`);
console.log('page | median load ms | API alone ms');
for (const range of ['1h', '24h', '7d', '30d']) {
  for (const group of ['none', 'model', 'user']) {
    const ms = await load(`#/overview?range=${range}&group=${group}`, '#timing');
    console.log(`overview range=${range} group=${group} | ${ms} | ${await apiTime(`range=${range}&group_by=${group}`)}`);
  }
}
console.log(`requests (first page of 50) | ${await load('#/requests', '#requests tbody tr')} |`);
if (process.env.UI_SHOT) {
  // The README's picture: 30 days of the seeded data, split by model.
  await page.goto(env.base + '/ui/#/overview?range=30d&group=model');
  await page.waitForSelector('#timing');
  await page.screenshot({ path: process.env.UI_SHOT, fullPage: false });
}
} finally {
  await env.stop();
}
