// memproxy dashboard: sign-in, sign-out, the theme and the hash router; views are in
// views/*.js, shared helpers in lib.js. Every figure comes from the proxy's JSON APIs.

import { overview } from './views/overview.js';
import { requests, requestDetail } from './views/requests.js';
import { memories } from './views/memories.js';
import { keys } from './views/keys.js';
import { api, ApiError, h, route, session } from './lib.js';

const views = { overview, requests, memories, keys };

async function render() {
  if (!session.principal) return;
  const r = route();
  const view = document.getElementById('view');
  for (const a of document.querySelectorAll('.top nav a')) {
    if (a.dataset.page === r.page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const fn = r.page === 'requests' && r.id ? requestDetail : views[r.page];
  view.replaceChildren();
  if (!fn) { view.append(h('p', { class: 'empty' }, 'No such page.')); return; }
  try {
    await fn(view, r);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      view.append(h('p', { class: 'error', role: 'alert' }, e.message));
    }
  }
}

function showLogin(message) {
  session.principal = null;
  session.csrf = null;
  document.querySelector('.top').hidden = true;
  document.getElementById('view').replaceChildren();
  document.getElementById('login').hidden = false;
  document.getElementById('login-error').textContent = message || '';
  document.getElementById('login-key').focus();
}

function signedIn(s) {
  session.principal = s.principal;
  session.csrf = s.csrf_token;
  const p = s.principal;
  document.getElementById('login').hidden = true;
  document.querySelector('.top').hidden = false;
  document.getElementById('who').textContent = p.kind === 'virtual_key'
    ? `key ${p.key_alias || p.key_name}${p.user_id ? ' · user ' + p.user_id : ''}`
    : p.kind === 'master' ? 'master key' : 'open proxy';
  render();
}

async function login(ev) {
  ev.preventDefault();
  const input = document.getElementById('login-key');
  const err = document.getElementById('login-error');
  err.textContent = '';
  try {
    const s = await api('/ui/login', { method: 'POST', json: { key: input.value } });
    input.value = '';
    signedIn(s);
  } catch (e) {
    err.textContent = e.status === 401 ? 'Sign-in refused: that key is not valid.' : e.message;
  }
}

async function logout() {
  try { await api('/ui/logout', { method: 'POST' }); } catch { /* signed out anyway */ }
  showLogin('Signed out.');
}

function applyTheme(t) {
  if (t) document.documentElement.dataset.theme = t;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === 'dark'
    : matchMedia('(prefers-color-scheme: dark)').matches;
  const next = dark ? 'light' : 'dark';
  localStorage.setItem('memproxy-theme', next);
  applyTheme(next);
  window.dispatchEvent(new Event('themechange'));
}

async function start() {
  applyTheme(localStorage.getItem('memproxy-theme'));
  document.getElementById('login-form').addEventListener('submit', login);
  document.getElementById('logout').addEventListener('click', logout);
  document.getElementById('theme').addEventListener('click', toggleTheme);
  window.addEventListener('hashchange', render);
  window.addEventListener('themechange', render);
  window.addEventListener('memproxy:signedout', () => showLogin('Your session ended; sign in again.'));
  try {
    signedIn(await api('/ui/session'));
  } catch {
    showLogin('');
  }
}

start();
