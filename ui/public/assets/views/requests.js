// Requests: the filterable, paginated table of recorded model requests
// (GET /v1/usage/requests), and one request's detail (GET /v1/usage/requests/{id}): where
// it went, retries, tool rounds, the memories injected into it and why, what was captured
// from it, and its feedback.

import { api, h, num, usd, ms, when, principal, route, setParams } from '../lib.js';

const PAGE = 50;

function statusCell(r) {
  const bad = r.status >= 400 || r.error_type;
  return h('td', { class: bad ? 'status-err' : 'status-ok' }, String(r.status), r.error_type ? ` ${r.error_type}` : '');
}

export async function requests(view, r) {
  const p = r.params;
  const admin = principal().admin;
  const field = (name, label, attrs = {}) => h('div', { class: 'field' },
    h('label', { for: 'f-' + name }, label),
    h('input', { id: 'f-' + name, name, value: p.get(name) || '', size: 14, ...attrs }));
  const form = h('form', { class: 'toolbar', id: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setParams(Object.fromEntries([...f].filter(([, v]) => v)));
  } },
  field('user_id', 'Client (user id)', { disabled: !admin && !!principal().user_id }),
  field('model', 'Model'),
  admin ? field('key', 'Key (hash or alias)') : null,
  h('div', { class: 'field' }, h('label', { for: 'f-status' }, 'Status'),
    h('select', { id: 'f-status', name: 'status' },
      [['', 'any'], ['ok', 'ok'], ['error', 'errors']].map(([v, l]) => h('option', { value: v, selected: (p.get('status') || '') === v }, l)))),
  h('button', { type: 'submit' }, 'Filter'),
  h('button', { type: 'button', class: 'ghost', onclick: () => setParams({}) }, 'Clear'));
  view.append(h('h1', {}, 'Requests'), form);

  const q = new URLSearchParams({ limit: String(PAGE) });
  for (const k of ['user_id', 'model', 'status', 'cursor']) if (p.get(k)) q.set(k, p.get(k));
  if (admin && p.get('key')) {
    // An alias is looked up among the keys; anything else is passed as a key or hash.
    const key = p.get('key');
    const list = key.length === 64 ? null : await api('/key/list?return_full_object=true').catch(() => null);
    const hit = list && list.keys.find((k) => k.key_alias === key);
    q.set('key', hit ? hit.token : key);
  }
  const data = await api('/v1/usage/requests?' + q);
  const rows = data.data.map((row) => {
    const open = () => { location.hash = '#/requests/' + encodeURIComponent(row.request_id); };
    return h('tr', { class: 'link', tabindex: 0, onclick: open, onkeydown: (e) => { if (e.key === 'Enter') open(); } },
      h('td', {}, when(row.time)),
      h('td', {}, row.user_id),
      h('td', {}, row.model),
      statusCell(row),
      h('td', { class: 'num' }, num(row.tokens_in)),
      h('td', { class: 'num' }, num(row.tokens_out)),
      h('td', { class: 'num' }, row.cost_usd === null ? '–' : usd(row.cost_usd)),
      h('td', { class: 'num' }, ms(row.total_ms)),
      h('td', { class: 'num' }, ms(row.ttft_ms)),
      h('td', { class: 'num' }, String(row.memories_injected)),
      h('td', {}, row.feedback_score !== null && row.feedback_score !== undefined ? `★ ${row.feedback_score}` : ''));
  });
  view.append(h('div', { class: 'table-wrap' }, h('table', { id: 'requests' },
    h('thead', {}, h('tr', {}, ['Time', 'Client', 'Model', 'Status', 'In', 'Out', 'Cost', 'Latency', 'TTFT', 'Memories', 'Feedback']
      .map((c, i) => h('th', { scope: 'col', class: i >= 4 && i <= 9 ? 'num' : '' }, c)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 11, class: 'empty' }, 'No requests match.'))))));

  // Pages go back through the cursors seen so far (kept in the URL as `prev`).
  const prev = (p.get('prev') || '').split(',').filter(Boolean);
  const base = Object.fromEntries([...p].filter(([k]) => k !== 'cursor' && k !== 'prev'));
  view.append(h('div', { class: 'pager' },
    h('button', { type: 'button', class: 'ghost', disabled: !p.get('cursor'),
      onclick: () => setParams({ ...base, cursor: prev.slice(-1)[0] || '', prev: prev.slice(0, -1).join(',') }) }, '← Newer'),
    h('button', { type: 'button', class: 'ghost', id: 'older', disabled: !data.next_cursor,
      onclick: () => setParams({ ...base, cursor: data.next_cursor, prev: [...prev, p.get('cursor') || ''].join(',') }) }, 'Older →'),
    h('span', { class: 'muted' }, `${rows.length} shown`)));
}

function dl(pairs) {
  return h('dl', { class: 'detail' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function memoryLink(user, id, text) {
  return h('a', { href: `#/memories?user=${encodeURIComponent(user)}&id=${encodeURIComponent(id)}` }, text);
}

export async function requestDetail(view, r) {
  const d = await api('/v1/usage/requests/' + encodeURIComponent(r.id));
  const q = d.request;
  view.append(
    h('p', {}, h('a', { href: '#/requests' }, '← Requests')),
    h('h1', {}, 'Request ', h('code', {}, q.request_id)),
    dl([
      ['Time', when(q.time)],
      ['Client (user id)', q.user_id],
      ['Key', q.key_alias || (q.key_id ? q.key_id.slice(0, 12) + '…' : 'master key')],
      ['API', q.endpoint + (q.stream ? ' (stream)' : '')],
      ['Model asked', q.model],
      ['Upstream', q.deployment ? `${q.deployment} → ${q.provider}/${q.upstream_model}` : '–'],
      ['Attempts', q.attempts > 1 ? `${q.attempts} (${q.attempts - 1} retr${q.attempts === 2 ? 'y' : 'ies'} or fallbacks)` : String(q.attempts)],
      ['Tool rounds', String(q.tool_rounds)],
      ['Status', `${q.status}${q.error_type ? ' · ' + q.error_type : ''}`],
      ['Tokens', `${q.tokens_in} in (${q.tokens_cached} cached) · ${q.tokens_out} out (${q.tokens_reasoning} reasoning)`],
      ['Cost', q.cost_usd === null ? 'unknown price' : usd(q.cost_usd)],
      ['Latency', `${ms(q.total_ms)} total · ${ms(q.upstream_ms)} upstream · ${ms(q.overhead_ms)} memproxy`],
      ['TTFT', q.ttft_ms === null ? '–' : ms(q.ttft_ms)],
    ]));

  view.append(h('h2', { id: 'why' }, `Memories injected (${q.memories_injected})`));
  if (q.memory_query) {
    view.append(h('p', {}, 'Searched with: ', h('q', { class: 'mono', id: 'memory-query' }, q.memory_query), ' ',
      h('a', { href: `#/memories?user=${encodeURIComponent(q.user_id)}&q=${encodeURIComponent(q.memory_query)}` }, 'search again now')));
  }
  if (!d.injected.length) {
    view.append(h('p', { class: 'muted' }, q.memory_query ? 'Nothing relevant was found.' : 'No memory search ran for this request.'));
  } else {
    view.append(h('div', { class: 'mem-list', id: 'injected' }, d.injected.map((m) => h('div', { class: 'mem' },
      h('div', { class: 'meta' },
        h('span', {}, `#${m.rank}`), h('span', { class: 'score' }, `score ${m.score.toFixed(3)}`),
        m.matched_terms.length ? h('span', {}, 'shared terms: ', m.matched_terms.map((t) => h('span', { class: 'pill' }, t))) : null),
      m.memory
        ? h('div', { class: 'content' }, m.memory.content)
        : h('div', { class: 'muted' }, 'This memory has been deleted or edited since.'),
      h('div', { class: 'meta' }, m.memory ? memoryLink(q.user_id, m.id, m.id) : h('span', { class: 'mono' }, m.id))))));
    view.append(h('p', { class: 'muted' }, 'Why: memories are ranked by BM25 over shared terms (stemmed, stop words removed), '
      + 'fused with vector similarity when an embedding model is configured; the best ones are injected.'));
  }

  view.append(h('h2', {}, 'Captured from this request'));
  view.append(d.captured.length
    ? h('div', { class: 'mem-list', id: 'captured' }, d.captured.map((m) => h('div', { class: 'mem' },
      h('div', { class: 'content' }, m.content), h('div', { class: 'meta' }, memoryLink(q.user_id, m.id, m.id)))))
    : h('p', { class: 'muted' }, 'Nothing (capture off, an incomplete answer, or the same content was already known).'));

  view.append(h('h2', {}, 'Feedback'));
  if (q.feedback_score !== null || q.feedback_comment) {
    view.append(h('p', { id: 'feedback' }, q.feedback_score !== null ? `Score ${q.feedback_score}. ` : '', q.feedback_comment || ''));
  }
  const msg = h('span', { class: 'muted', role: 'status' });
  view.append(h('form', { class: 'toolbar', onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { request_id: q.request_id };
    if (f.get('score') !== '') body.score = Number(f.get('score'));
    if (f.get('comment')) body.comment = f.get('comment');
    try {
      await api('/v1/feedback', { method: 'POST', json: body });
      const again = route();
      location.hash = '#/requests/' + encodeURIComponent(again.id);
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (err) { msg.textContent = err.message; }
  } },
  h('div', { class: 'field' }, h('label', { for: 'fb-score' }, 'Score'), h('input', { id: 'fb-score', name: 'score', type: 'number', step: 'any', size: 5 })),
  h('div', { class: 'field' }, h('label', { for: 'fb-comment' }, 'Comment'), h('input', { id: 'fb-comment', name: 'comment', size: 30 })),
  h('button', { type: 'submit' }, 'Save feedback'), msg));
}
