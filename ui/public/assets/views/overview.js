// Overview: totals and charts of requests, tokens, cost, errors, latency and TTFT over a
// time range, whole or split by client (user id), model or key; aggregated by the store
// (GET /v1/usage/timeseries), so the page reads a few hundred numbers, not the rows.

import { api, h, num, usd, ms, principal, setParams } from '../lib.js';

const RANGES = ['1h', '6h', '24h', '7d', '30d'];
const PALETTE = ['#2f6fdf', '#e8743b', '#19a979', '#ed4a7b', '#945ecf', '#13a4b4', '#c4a000', '#6b7b8c', '#d64545'];

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** One uPlot chart in `box`: x = bucket starts (s), one line per series. */
function chart(box, title, t, lines, fmt) {
  const body = h('div', { class: 'plot' });
  box.append(h('div', { class: 'chart', role: 'img', 'aria-label': title }, h('h3', {}, title), body));
  if (typeof uPlot === 'undefined') return null;
  const axis = { stroke: css('--muted'), grid: { stroke: css('--line'), width: 1 }, ticks: { stroke: css('--line') } };
  const opts = {
    width: Math.max(240, body.clientWidth || box.clientWidth || 400),
    height: 200,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [axis, { ...axis, size: 76, values: (u, vals) => vals.map((v) => (v === null ? '' : fmt(v))) }],
    series: [{}, ...lines.map((l, i) => ({
      label: l.label, stroke: l.color || PALETTE[i % PALETTE.length], width: 2,
      value: (u, v) => (v === null || v === undefined ? '–' : fmt(v)), spanGaps: false,
      points: { show: t.length < 60 },
    }))],
  };
  const plot = new uPlot(opts, [t, ...lines.map((l) => l.data)], body);
  new ResizeObserver(() => {
    const w = body.clientWidth;
    if (w && Math.abs(w - plot.width) > 4) plot.setSize({ width: w, height: 200 });
  }).observe(body);
  return plot;
}

function card(label, value, title) {
  return h('div', { class: 'card', title }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
}

function rate(errors, requests) {
  return requests ? (100 * errors) / requests : null;
}
const pct = (v) => (v === null ? '–' : v.toFixed(v < 10 ? 1 : 0) + ' %');

export async function overview(view, r) {
  const range = RANGES.includes(r.params.get('range')) ? r.params.get('range') : '24h';
  const admin = principal().admin;
  const dims = admin ? ['none', 'user', 'model', 'key'] : ['none', 'model'];
  const group = dims.includes(r.params.get('group')) ? r.params.get('group') : 'none';
  const dimName = { none: 'Everything', user: 'Client (user id)', model: 'Model', key: 'Key' };

  const rangeSeg = h('div', { class: 'seg', role: 'group', 'aria-label': 'Time range' },
    RANGES.map((x) => h('button', { type: 'button', 'aria-pressed': String(x === range),
      onclick: () => setParams({ range: x, group }) }, x)));
  const groupSel = h('select', { id: 'group-by', onchange: (e) => setParams({ range, group: e.target.value }) },
    dims.map((d) => h('option', { value: d, selected: d === group }, dimName[d])));
  view.append(
    h('h1', {}, 'Overview'),
    h('div', { class: 'toolbar' },
      h('div', { class: 'field' }, h('span', { class: 'muted' }, 'Range'), rangeSeg),
      h('div', { class: 'field' }, h('label', { for: 'group-by' }, 'Split by'), groupSel)),
  );
  const q = new URLSearchParams({ range, group_by: group });
  const started = performance.now();
  const d = await api('/v1/usage/timeseries?' + q);
  const tot = d.totals;
  view.append(h('div', { class: 'cards', id: 'cards' },
    card('Requests', num(tot.requests)),
    card('Tokens in / out', `${num(tot.tokens_in)} / ${num(tot.tokens_out)}`),
    card('Cost', usd(tot.cost_usd)),
    card('Error rate', pct(rate(tot.errors, tot.requests)), `${tot.errors} errors`),
    card('Latency p50 / p95', `${ms(tot.latency_p50_ms)} / ${ms(tot.latency_p95_ms)}`),
    card('TTFT p50 / p95', `${ms(tot.ttft_p50_ms)} / ${ms(tot.ttft_p95_ms)}`, 'time to first token, streams'),
  ));

  const charts = h('div', { class: 'charts', id: 'charts' });
  view.append(charts);
  const a = d.all;
  const split = group !== 'none' && d.series.length > 0;
  const name = (s) => (s.key_alias ? `${s.key_alias}` : s.group);
  const per = (field, f = (s) => s[field]) => d.series.map((s, i) => ({ label: name(s), data: f(s), color: PALETTE[i % PALETTE.length] }));
  const errRate = (s) => s.requests.map((n, i) => rate(s.errors[i], n));
  const sum = (x, y) => x.map((v, i) => v + y[i]);
  chart(charts, 'Requests', d.t, split ? per('requests') : [{ label: 'requests', data: a.requests }, { label: 'errors', data: a.errors, color: css('--danger') }], num);
  chart(charts, 'Tokens', d.t, split ? per('tokens', (s) => sum(s.tokens_in, s.tokens_out)) : [{ label: 'in', data: a.tokens_in }, { label: 'out', data: a.tokens_out }], num);
  chart(charts, 'Cost (USD)', d.t, split ? per('cost_usd') : [{ label: 'cost', data: a.cost_usd }], usd);
  chart(charts, 'Error rate', d.t, split ? per('errors', errRate) : [{ label: 'errors', data: errRate(a), color: css('--danger') }], pct);
  chart(charts, 'Latency', d.t, split ? per('latency_p95_ms').map((l) => ({ ...l, label: l.label + ' p95' })) : [{ label: 'p50', data: a.latency_p50_ms }, { label: 'p95', data: a.latency_p95_ms }], ms);
  chart(charts, 'Time to first token', d.t, split ? per('ttft_p95_ms').map((l) => ({ ...l, label: l.label + ' p95' })) : [{ label: 'p50', data: a.ttft_p50_ms }, { label: 'p95', data: a.ttft_p95_ms }], ms);

  if (group !== 'none') {
    view.append(h('h2', {}, `By ${dimName[group].toLowerCase()}`));
    const rows = d.groups.map((g) => h('tr', {},
      h('td', {}, g.key_alias ? `${g.key_alias} ` : '', h('span', { class: g.key_alias ? 'muted mono' : '' }, g.group.length > 20 ? g.group.slice(0, 12) + '…' : g.group)),
      h('td', { class: 'num' }, num(g.requests)),
      h('td', { class: 'num' }, num(g.tokens_in)),
      h('td', { class: 'num' }, num(g.tokens_out)),
      h('td', { class: 'num' }, usd(g.cost_usd)),
      h('td', { class: 'num' }, pct(rate(g.errors, g.requests))),
      h('td', { class: 'num' }, ms(g.latency_p50_ms)),
      h('td', { class: 'num' }, ms(g.latency_p95_ms)),
      h('td', { class: 'num' }, ms(g.ttft_p95_ms))));
    view.append(h('div', { class: 'table-wrap' }, h('table', { id: 'groups' },
      h('thead', {}, h('tr', {}, ['', 'Requests', 'Tokens in', 'Tokens out', 'Cost', 'Errors', 'p50', 'p95', 'TTFT p95']
        .map((c, i) => h('th', { class: i ? 'num' : '', scope: 'col' }, c || dimName[group])))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 9, class: 'empty' }, 'No requests in this range.'))))));
  }
  view.append(h('p', { class: 'muted', id: 'timing' },
    `${d.t.length} buckets of ${d.bucket_seconds >= 3600 ? d.bucket_seconds / 3600 + ' h' : d.bucket_seconds / 60 + ' min'} from the ${d.source === 'rollup' ? 'hourly rollup' : 'request rows'}; `
    + `loaded in ${Math.round(performance.now() - started)} ms. Percentiles are within ±3 %.`));
}
