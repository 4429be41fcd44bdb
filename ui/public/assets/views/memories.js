// Memory browser: one user's memories (a key bound to a user sees only that user's):
// search with the proxy's own retrieval and its scores, newest first with paging, view,
// edit, delete, forget everything, export and import JSONL. Every call goes through the
// memory API (/v1/memories…), parameterised in one place (scope()).

import { api, h, when, principal, setParams, confirmDialog } from '../lib.js';

/** The query parameters naming the memory scope (user id; a project joins it later). */
function scope(user) {
  return new URLSearchParams({ user_id: user });
}

async function knownUsers() {
  // Clients seen in the last 30 days, from the usage rollup (master key only).
  try {
    const d = await api('/v1/usage/timeseries?range=30d&group_by=user&top=1');
    return d.groups.map((g) => g.group).filter(Boolean);
  } catch { return []; }
}

function memoryCard(user, m, refresh) {
  const content = h('div', { class: 'content' }, m.content);
  const meta = m.metadata || {};
  const card = h('article', { class: 'mem', dataset: { id: m.id } },
    m.score !== undefined ? h('div', { class: 'meta' }, h('span', { class: 'score' }, `score ${m.score.toFixed(3)}`)) : null,
    content,
    h('div', { class: 'meta' },
      h('span', {}, when(m.created_at)),
      meta.source ? h('span', {}, `source: ${meta.source}`) : null,
      meta.model ? h('span', {}, `model: ${meta.model}`) : null,
      meta.request_id ? h('span', {}, 'from request ', h('a', { href: '#/requests/' + encodeURIComponent(meta.request_id) }, meta.request_id.slice(0, 12) + '…')) : null,
      m.session_id ? h('span', {}, `session: ${m.session_id}`) : null,
      h('span', { class: 'mono' }, m.id)),
  );
  const actions = h('div', { class: 'actions' });
  const edit = h('button', { type: 'button', class: 'ghost', 'aria-label': 'Edit memory', onclick: () => {
    const area = h('textarea', { 'aria-label': 'Memory text' }, m.content);
    const err = h('span', { class: 'error', role: 'alert' });
    const save = h('button', { type: 'button', onclick: async () => {
      try {
        await api(`/v1/memories/${encodeURIComponent(m.id)}?${scope(user)}`, { method: 'PATCH', json: { content: area.value } });
        refresh();
      } catch (e) { err.textContent = e.message; }
    } }, 'Save');
    const cancel = h('button', { type: 'button', class: 'ghost', onclick: refresh }, 'Cancel');
    content.replaceWith(area);
    actions.replaceChildren(save, cancel, err);
    area.focus();
  } }, 'Edit');
  const del = h('button', { type: 'button', class: 'ghost', 'aria-label': 'Delete memory', onclick: async () => {
    if (!(await confirmDialog('Delete this memory? It will no longer be injected into requests.'))) return;
    await api(`/v1/memories/${encodeURIComponent(m.id)}?${scope(user)}`, { method: 'DELETE' });
    card.remove();
  } }, 'Delete');
  actions.append(edit, del);
  card.append(actions);
  return card;
}

export async function memories(view, r) {
  const p = r.params;
  const bound = principal().user_id;
  const admin = principal().admin;
  const user = bound || p.get('user') || '';
  view.append(h('h1', {}, 'Memories'));
  if (!admin && !bound) {
    view.append(h('p', { class: 'empty' }, 'This key is not bound to a user, so it has no memories to show.'));
    return;
  }
  const users = admin ? await knownUsers() : [];
  const form = h('form', { class: 'toolbar', id: 'mem-form', onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setParams({ user: bound || f.get('user'), q: f.get('q') });
  } },
  h('div', { class: 'field' }, h('label', { for: 'm-user' }, 'User id'),
    h('input', { id: 'm-user', name: 'user', value: user, list: 'm-users', required: true, disabled: !!bound, size: 16 }),
    h('datalist', { id: 'm-users' }, users.map((u) => h('option', { value: u })))),
  h('div', { class: 'field' }, h('label', { for: 'm-q' }, 'Search'),
    h('input', { id: 'm-q', name: 'q', type: 'search', value: p.get('q') || '', size: 24, placeholder: 'the same retrieval the proxy uses' })),
  h('button', { type: 'submit' }, 'Show'));
  view.append(form);
  if (!user) {
    view.append(h('p', { class: 'muted' }, 'Choose a user id to see what the model remembers about them.'));
    return;
  }
  const refresh = () => window.dispatchEvent(new HashChangeEvent('hashchange'));

  // Export / import / forget everything.
  const importMsg = h('span', { class: 'muted', role: 'status', id: 'import-msg' });
  const file = h('input', { type: 'file', accept: '.jsonl,.ndjson,application/x-ndjson,text/plain', id: 'm-import', class: 'visually-hidden',
    onchange: async (e) => {
      const f = e.target.files[0];
      if (!f) return;
      try {
        const res = await api(`/v1/memories/import?${scope(user)}`, { method: 'POST', body: await f.text() });
        importMsg.textContent = `Imported ${res.imported} memories.`;
        setTimeout(refresh, 600);
      } catch (err) { importMsg.textContent = err.message; }
    } });
  view.append(h('div', { class: 'toolbar' },
    h('a', { class: 'button ghost', href: `/v1/memories/export?${scope(user)}`, download: `memories-${user}.jsonl` }, 'Export JSONL'),
    h('label', { class: 'button ghost', for: 'm-import', tabindex: 0, onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') file.click(); } }, 'Import JSONL…'),
    file,
    h('button', { type: 'button', class: 'danger', id: 'forget-all', onclick: async () => {
      if (!(await confirmDialog(`Forget everything memproxy remembers about ${user}: every memory and session?`, user))) return;
      const res = await api(`/v1/memories?${scope(user)}`, { method: 'DELETE' });
      importMsg.textContent = `Deleted ${res.deleted} memories.`;
      list.replaceChildren(h('p', { class: 'empty' }, 'No memories.'));
    } }, 'Forget all…'),
    importMsg));
  file.hidden = true;

  const list = h('div', { class: 'mem-list', id: 'mem-list' });
  const q = p.get('q');
  const focus = p.get('id');
  if (q) {
    view.append(h('h2', {}, 'Best matches for ', h('q', {}, q)));
    const res = await api(`/v1/memories/search?${scope(user)}&${new URLSearchParams({ q, limit: '20' })}`);
    list.append(...(res.results.length ? res.results.map((m) => memoryCard(user, m, refresh)) : [h('p', { class: 'empty' }, 'No memory matches.')]));
    view.append(list);
    return;
  }
  if (focus) {
    try {
      const m = await api(`/v1/memories/${encodeURIComponent(focus)}?${scope(user)}`);
      view.append(h('h2', {}, 'Memory'), h('div', { class: 'mem-list' }, memoryCard(user, m, refresh)));
    } catch (e) { view.append(h('p', { class: 'muted' }, e.message)); }
  }
  view.append(h('h2', {}, 'Newest first'), list);
  const more = h('button', { type: 'button', class: 'ghost', id: 'more' }, 'Load more');
  let cursor = null;
  async function page() {
    const qs = scope(user);
    qs.set('limit', '50');
    if (cursor) qs.set('cursor', cursor);
    const res = await api('/v1/memories?' + qs);
    if (!cursor && !res.data.length) list.append(h('p', { class: 'empty' }, 'No memories.'));
    list.append(...res.data.map((m) => memoryCard(user, m, refresh)));
    cursor = res.next_cursor;
    more.hidden = !res.has_more;
  }
  more.addEventListener('click', page);
  view.append(h('div', { class: 'pager' }, more));
  await page();
}
