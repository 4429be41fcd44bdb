// Shared by the dashboard's views: the API helper, DOM building, formatting, routing.

export const session = { principal: null, csrf: null };

/** The signed-in principal ({kind, admin, user_id?, key_alias?, token?}). */
export function principal() { return session.principal; }

/** An API error with the server's message. */
export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/**
 * Calls the proxy's API with the session cookie; changes carry the CSRF token.
 * opts: {method, json, body, text}.
 */
export async function api(path, opts = {}) {
  const method = opts.method || 'GET';
  const headers = {};
  let body = opts.body;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  if (method !== 'GET' && session.csrf) headers['x-csrf-token'] = session.csrf;
  const r = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
  if (r.status === 401 && !path.startsWith('/ui/')) {
    window.dispatchEvent(new CustomEvent('memproxy:signedout'));
    throw new ApiError(401, 'signed out');
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const msg = (data && data.error && data.error.message) || text || r.statusText;
    throw new ApiError(r.status, msg);
  }
  return opts.text ? text : data;
}

/** Builds a DOM element: h('a', {href, onclick}, 'text', child...). Text is never parsed as HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
/** 1234 → "1.2k". */
export function num(n) {
  if (n === null || n === undefined) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return nf.format(n / 1e9) + 'G';
  if (a >= 1e6) return nf.format(n / 1e6) + 'M';
  if (a >= 1e4) return nf.format(n / 1e3) + 'k';
  return nf.format(n);
}
/** USD with enough decimals for small sums. */
export function usd(n) {
  if (n === null || n === undefined) return '–';
  const d = n !== 0 && Math.abs(n) < 0.01 ? 5 : 2;
  return '$' + n.toFixed(d);
}
/** Milliseconds, readable. */
export function ms(n) {
  if (n === null || n === undefined) return '–';
  if (n >= 10000) return (n / 1000).toFixed(1) + ' s';
  if (n >= 100) return Math.round(n) + ' ms';
  return n.toFixed(n >= 10 ? 1 : 2) + ' ms';
}
/** A time (ISO string or Unix seconds) in the local zone. */
export function when(t) {
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

/** Asks for confirmation in a dialog; with `typed`, the user must type that word. */
export function confirmDialog(text, typed) {
  const dlg = document.getElementById('confirm');
  const input = document.getElementById('confirm-input');
  const ok = document.getElementById('confirm-ok');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-typed').hidden = !typed;
  document.getElementById('confirm-word').textContent = typed || '';
  input.value = '';
  ok.disabled = !!typed;
  input.oninput = () => { ok.disabled = input.value !== typed; };
  return new Promise((resolve) => {
    dlg.onclose = () => resolve(dlg.returnValue === 'ok');
    dlg.returnValue = '';
    dlg.showModal();
    (typed ? input : ok).focus();
  });
}

/** The current route: {page, id, params}. */
export function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const [page, ...rest] = path.split('/');
  return { page: page || 'overview', id: rest.length ? decodeURIComponent(rest.join('/')) : null,
    params: new URLSearchParams(query || '') };
}

/** Changes the route's query (and so the view) without a new history entry per keystroke. */
export function setParams(params, push = true) {
  const r = route();
  const q = new URLSearchParams(params);
  for (const [k, v] of [...q]) if (!v) q.delete(k);
  const hash = '#/' + r.page + (r.id ? '/' + encodeURIComponent(r.id) : '') + (q.toString() ? '?' + q : '');
  if (push) location.hash = hash; else history.replaceState(null, '', hash);
}

