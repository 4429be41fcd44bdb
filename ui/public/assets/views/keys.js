// Keys and limits (master key): create a virtual key (shown once), bind it to a user, set
// its models, rpm/tpm limits, budget and expiry, change them later, revoke it, and see
// its spend (/key/generate, /key/list, /key/update, /key/delete). A virtual key sees its
// own settings and spend (/key/info).

import { api, h, usd, when, principal, confirmDialog } from '../lib.js';

function spendBar(k) {
  if (k.max_budget === null || k.max_budget === undefined) return h('span', {}, usd(k.spend), h('span', { class: 'muted' }, ' / no budget'));
  const share = k.max_budget > 0 ? Math.min(1, k.spend / k.max_budget) : 1;
  return h('div', {}, `${usd(k.spend)} / ${usd(k.max_budget)}`,
    h('div', { class: 'bar' + (share >= 1 ? ' over' : ''), role: 'meter', 'aria-valuenow': String(Math.round(share * 100)), 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-label': 'budget used' },
      h('span', { style: `width:${(share * 100).toFixed(1)}%` })));
}

const field = (name, label, attrs = {}) => h('div', { class: 'field' },
  h('label', { for: 'k-' + name }, label), h('input', { id: 'k-' + name, name, ...attrs }));

/** The key's settings as a form body: empty fields are left out (create) or cleared (update). */
function settings(f, clearEmpty) {
  const out = {};
  const text = (n, to = n) => { const v = (f.get(n) || '').trim(); if (v) out[to] = v; else if (clearEmpty) out[to] = null; };
  const number = (n) => { const v = (f.get(n) || '').trim(); if (v) out[n] = Number(v); else if (clearEmpty) out[n] = null; };
  text('key_alias');
  text('user_id');
  number('max_budget');
  number('rpm_limit');
  number('tpm_limit');
  const models = (f.get('models') || '').split(',').map((m) => m.trim()).filter(Boolean);
  if (models.length || clearEmpty) out.models = models;
  if (!clearEmpty) text('duration');
  return out;
}

function editRow(k, cells, refresh) {
  const err = h('span', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'grid', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api('/key/update', { method: 'POST', json: { key: k.token, ...settings(new FormData(e.target), true) } });
      refresh();
    } catch (x) { err.textContent = x.message; }
  } },
  field('key_alias', 'Alias', { value: k.key_alias || '' }),
  field('user_id', 'Bound to user', { value: k.user_id || '' }),
  field('models', 'Models (comma separated)', { value: (k.models || []).join(', ') }),
  field('max_budget', 'Budget (USD)', { type: 'number', step: 'any', min: 0, value: k.max_budget ?? '' }),
  field('rpm_limit', 'Requests / min', { type: 'number', min: 1, value: k.rpm_limit ?? '' }),
  field('tpm_limit', 'Tokens / min', { type: 'number', min: 1, value: k.tpm_limit ?? '' }),
  h('div', { class: 'field' }, h('button', { type: 'submit' }, 'Save'), h('button', { type: 'button', class: 'ghost', onclick: refresh }, 'Cancel')),
  err);
  const tr = h('tr', {}, h('td', { colspan: cells }, form));
  return tr;
}

export async function keys(view) {
  const me = principal();
  view.append(h('h1', {}, 'Keys and limits'));
  if (!me.admin) {
    const info = (await api('/key/info')).info;
    view.append(h('dl', { class: 'detail', id: 'my-key' },
      ...[['Key', info.key_name], ['Alias', info.key_alias], ['Bound to user', info.user_id || 'none'],
        ['Models', info.models.length ? info.models.join(', ') : 'all'], ['Spend', spendBar(info)],
        ['Requests / min', info.rpm_limit ?? 'no limit'], ['Tokens / min', info.tpm_limit ?? 'no limit'],
        ['Expires', info.expires ? when(info.expires) : 'never'], ['Created', when(info.created_at)]]
        .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h('p', { class: 'muted' }, 'Only the master key creates, changes or revokes keys.'));
    return;
  }
  const refresh = () => window.dispatchEvent(new HashChangeEvent('hashchange'));
  const shown = h('div', { id: 'new-key', 'aria-live': 'polite' });
  const err = h('span', { class: 'error', role: 'alert' });
  view.append(h('h2', {}, 'Create a key'), h('form', { class: 'grid', id: 'create-key', onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = '';
    try {
      const g = await api('/key/generate', { method: 'POST', json: settings(new FormData(e.target), false) });
      e.target.reset();
      const code = h('code', { id: 'new-key-value' }, g.key);
      shown.replaceChildren(h('div', { class: 'newkey' },
        h('p', {}, h('strong', {}, 'Copy this key now: it is shown only once.')), code, ' ',
        h('button', { type: 'button', class: 'ghost', onclick: () => navigator.clipboard && navigator.clipboard.writeText(g.key) }, 'Copy')));
      await table();
    } catch (x) { err.textContent = x.message; }
  } },
  field('key_alias', 'Alias', { placeholder: 'ci-bot' }),
  field('user_id', 'Bind to user', { placeholder: 'optional user id' }),
  field('models', 'Models (comma separated)', { placeholder: 'all' }),
  field('max_budget', 'Budget (USD)', { type: 'number', step: 'any', min: 0 }),
  field('rpm_limit', 'Requests / min', { type: 'number', min: 1 }),
  field('tpm_limit', 'Tokens / min', { type: 'number', min: 1 }),
  field('duration', 'Expires after', { placeholder: '30d, 12h… (never)' }),
  h('div', { class: 'field' }, h('button', { type: 'submit' }, 'Create key')), err), shown);

  const wrap = h('div', { class: 'table-wrap' });
  view.append(h('h2', {}, 'Keys'), wrap);
  const heads = ['Alias', 'Key', 'User', 'Models', 'Spend / budget', 'RPM', 'TPM', 'Expires', 'Created', ''];
  async function table() {
    const list = (await api('/key/list?return_full_object=true')).keys;
    const rows = list.map((k) => {
      const tr = h('tr', { dataset: { token: k.token } },
        h('td', {}, k.key_alias || '–'), h('td', { class: 'mono' }, k.key_name), h('td', {}, k.user_id || '–'),
        h('td', {}, k.models.length ? k.models.join(', ') : 'all'), h('td', {}, spendBar(k)),
        h('td', { class: 'num' }, k.rpm_limit ?? '–'), h('td', { class: 'num' }, k.tpm_limit ?? '–'),
        h('td', {}, k.expires ? when(k.expires) : 'never'), h('td', {}, when(k.created_at)),
        h('td', {},
          h('button', { type: 'button', class: 'ghost', onclick: () => tr.after(editRow(k, heads.length, refresh)) }, 'Edit'), ' ',
          h('button', { type: 'button', class: 'ghost', onclick: async () => {
            if (!(await confirmDialog(`Revoke key ${k.key_alias || k.key_name}? Clients using it are refused at once.`))) return;
            await api('/key/delete', { method: 'POST', json: { keys: [k.token] } });
            await table();
          } }, 'Revoke')));
      return tr;
    });
    wrap.replaceChildren(h('table', { id: 'keys' },
      h('thead', {}, h('tr', {}, heads.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: heads.length, class: 'empty' }, 'No virtual keys yet.')))));
  }
  await table();
}
