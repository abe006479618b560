// cti-server dashboard: sign in with an API key, then a live board over the
// WebSocket stream (the JavaScript client of clients/js, served as client.js).
//
// The key comes from the sign-in form or the URL fragment (#key=...: never sent
// to any server; removed from the address bar once read) and is kept in this
// tab's sessionStorage only. Everything shown is built with textContent: no
// server text is ever parsed as HTML.
import { CtiApi, CtiStream, CtiError } from '/dashboard/client.js';

const KEY_STORAGE = 'cti-dashboard-key';
const MAX_EVENTS = 50;      // the latest events shown
const MAX_LIST = 20;        // missed calls, voicemails
const BACKFILL = 500;       // events read at sign-in (one page): agent status, the lists
const LIVE = new Set(['ringing', 'active', 'on_hold']);

const $ = (id) => document.getElementById(id);

let api = null;
let stream = null;
let session = 0;            // bumps at each sign-in/out: stale answers are dropped
const calls = new Map();    // active calls by id
const agents = new Map();   // agent status by target id
let missed = [];
let everOpen = false;       // a first hello was seen (later hellos are reconnections)
let catchUp = null;         // {from, to, count} while a reconnection replays
let voicemailTimer = null;
let tick = null;

// ---- small helpers ------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  const pad = (n) => String(n).padStart(2, '0');
  const hms = h || d ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  return d ? `${d}d ${hms}` : hms;
}

function fmtTime(iso) {
  if (!iso) return '';
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toLocaleString();
}

function caller(c) {
  const name = c.contact && c.contact.name, num = c.external_number;
  if (name && num && name !== num && !name.includes(num)) return `${name} ${num}`;
  return name || num || 'unknown number';
}

// What a call is grouped by (the CRM user, else the Dialpad user) and the name shown.
function agentKey(c) {
  if (c.crm_user_id) return `crm:${c.crm_user_id}`;
  return c.dialpad_user_id ? `dialpad:${c.dialpad_user_id}` : 'none';
}

function agentOf(c) {
  const name = c.target && c.target.name;
  if (c.crm_user_id) return name ? `${c.crm_user_id} (${name})` : c.crm_user_id;
  return name || (c.dialpad_user_id ? `user ${c.dialpad_user_id}` : 'Unassigned');
}

function setNotice(text, kind = 'info') {
  const n = $('notice');
  n.textContent = text;
  n.dataset.kind = kind;
  n.hidden = !text;
}

function showError(where, err) {
  const p = $(where);
  p.textContent = err ? describe(err) : '';
  p.hidden = !err;
}

function describe(err) {
  if (err instanceof CtiError) return `${err.message} (${err.code}${err.status ? `, HTTP ${err.status}` : ''})`;
  return String(err && err.message ? err.message : err);
}

// ---- active calls -------------------------------------------------------------------

// Keeps the newest copy of a call: the REST snapshot and the stream may answer
// in either order, and a call's updated_at only grows.
function upsertCall(c, { live = false } = {}) {
  if (!c || !c.id) return;
  const have = calls.get(c.id);
  if (have && !live && String(c.updated_at || '') <= String(have.updated_at || '')) return;
  if (LIVE.has(c.status)) calls.set(c.id, c);
  else if (have || live) calls.delete(c.id);
  if (c.outcome === 'missed') addMissed(c);
  renderCalls();
}

function renderCalls() {
  const box = $('active-calls');
  const groups = new Map();
  for (const c of calls.values()) {
    const k = agentKey(c);
    if (!groups.has(k)) groups.set(k, { name: agentOf(c), list: [] });
    groups.get(k).list.push(c);
  }
  $('active-count').textContent = String(calls.size);
  if (!groups.size) {
    box.replaceChildren(el('p', { class: 'empty' }, 'No call in progress.'));
    return;
  }
  const out = [];
  const sorted = [...groups.entries()].sort((a, b) => a[1].name.localeCompare(b[1].name) || a[0].localeCompare(b[0]));
  for (const [key, { name, list }] of sorted) {
    list.sort((x, y) => String(x.started_at).localeCompare(String(y.started_at)));
    out.push(el('div', { class: 'agent-group', data: { agent: key } },
      el('h3', {}, name),
      el('ul', { class: 'calls' }, ...list.map((c) => el('li', {
        class: 'call', data: { callId: c.id, status: c.status, state: c.state },
      },
      el('span', { class: 'state' }, c.state || c.status),
      el('span', { class: 'timer', data: { since: c.connected_at || c.started_at || '' } }, ''),
      el('span', { class: 'who' }, `${c.direction === 'outbound' ? 'to' : 'from'} ${caller(c)}`))))));
  }
  box.replaceChildren(...out);
  updateTimers();
}

function updateTimers() {
  const now = Date.now();
  for (const t of document.querySelectorAll('.call .timer')) {
    const since = Date.parse(t.dataset.since);
    t.textContent = Number.isNaN(since) ? '' : fmtDuration(now - since);
  }
  for (const t of document.querySelectorAll('#agent-rows .since')) {
    const since = Date.parse(t.dataset.since);
    t.textContent = Number.isNaN(since) ? '' : `${fmtDuration(now - since)} ago`;
  }
}

// ---- missed calls, voicemails ----------------------------------------------------

function addMissed(c) {
  missed = [c, ...missed.filter((m) => m.id !== c.id)]
    .sort((x, y) => String(y.started_at).localeCompare(String(x.started_at)))
    .slice(0, MAX_LIST);
  renderMissed();
}

function renderMissed() {
  const ul = $('missed-calls');
  if (!missed.length) return ul.replaceChildren(el('li', { class: 'empty' }, 'No missed call.'));
  ul.replaceChildren(...missed.map((c) => el('li', { data: { callId: c.id } },
    caller(c), ' ', el('span', { class: 'meta' }, `${fmtTime(c.started_at)} · ${agentOf(c)}`))));
}

function renderVoicemails(list) {
  const ul = $('voicemail-list');
  if (!list.length) return ul.replaceChildren(el('li', { class: 'empty' }, 'No voicemail.'));
  ul.replaceChildren(...list.map((v) => el('li', { data: { voicemailId: v.id } },
    v.external_number || 'unknown number', ' ',
    el('span', { class: 'meta' }, `${fmtTime(v.created_at)}${v.duration_ms != null ? ` · ${fmtDuration(v.duration_ms)}` : ''}`),
    el('span', { class: 'transcript' }, v.transcript || '(no transcript yet)'))));
}

async function loadVoicemails(my) {
  try {
    const page = await api.listVoicemails({ limit: MAX_LIST });
    if (my === session) renderVoicemails(page.data);
  } catch (err) {
    if (my === session) console.warn('voicemails:', err);
  }
}

function voicemailsChanged() {
  const my = session;
  clearTimeout(voicemailTimer);
  voicemailTimer = setTimeout(() => loadVoicemails(my), 250);
}

// ---- agents ------------------------------------------------------------------------

function applyAgent(ev) {
  const d = ev.data || {};
  const t = d.target || {};
  const id = String(t.id || 'unknown');
  if ((agents.get(id)?.seq ?? -1) > ev.seq) return; // a backfilled event older than what is shown
  agents.set(id, {
    seq: ev.seq,
    name: t.name || `user ${id}`, availability: d.availability_status ?? '',
    duty: d.on_duty_status ?? '', since: ev.occurred_at,
  });
  const rows = [...agents.entries()].sort((a, b) => a[1].name.localeCompare(b[1].name))
    .map(([aid, a]) => el('tr', { data: { agentId: aid } },
      el('td', {}, a.name), el('td', {}, a.availability), el('td', {}, a.duty),
      el('td', { class: 'since', data: { since: a.since || '' } }, '')));
  $('agent-rows').replaceChildren(...rows);
  $('agents-empty').hidden = rows.length > 0;
  updateTimers();
}

// ---- Dialpad connection ----------------------------------------------------------

async function loadConnection(my) {
  try {
    const c = await api.request('GET', '/api/dialpad/connection');
    if (my !== session) return;
    const s = $('conn-status');
    s.dataset.status = c.status;
    s.textContent = { connected: 'Connected', broken: 'Broken', not_connected: 'Not connected' }[c.status] || c.status;
    const bits = [];
    if (c.environment) bits.push(c.environment);
    if (c.dialpad_user_id) bits.push(`user ${c.dialpad_user_id}`);
    if (c.connected_at) bits.push(`since ${fmtTime(c.connected_at)}`);
    if (c.reason) bits.push(`reason: ${c.reason}`);
    $('conn-detail').textContent = bits.length ? `(${bits.join(', ')})` : '';
    $('connect').textContent = c.status === 'not_connected' ? 'Connect Dialpad' : 'Reconnect Dialpad';
  } catch (err) {
    if (my !== session) return;
    $('conn-status').dataset.status = 'unknown';
    $('conn-status').textContent = 'Unknown';
    $('conn-detail').textContent = describe(err);
  }
}

async function connectDialpad() {
  const my = session;
  const out = $('connect-result');
  out.hidden = false;
  out.className = '';
  out.textContent = 'Asking for a connect link…';
  try {
    const r = await api.request('POST', '/api/dialpad/connect');
    if (my !== session) return;
    // noopener: the Dialpad page gets no handle on this one (window.open then returns null)
    window.open(r.authorize_url, '_blank', 'noopener');
    out.replaceChildren('A Dialpad approval page was opened in a new tab (link good until ',
      fmtTime(r.expires_at), '). If it did not open: ',
      el('a', { href: r.authorize_url, target: '_blank', rel: 'noopener noreferrer' }, 'open it'), '.');
  } catch (err) {
    if (my !== session) return;
    out.className = 'error';
    out.textContent = err instanceof CtiError && err.code === 'not_configured'
      ? `Dialpad is not configured on this server: ${err.message}`
      : `Could not start the connection: ${describe(err)}`;
  }
}

// ---- events ------------------------------------------------------------------------

function summary(ev) {
  const c = ev.call;
  if (c) return `${c.state || ''} · ${caller(c)} · ${agentOf(c)}`;
  if (ev.event === 'agent.status' && ev.data) {
    const t = ev.data.target || {};
    return `${t.name || t.id || ''}: ${ev.data.availability_status || ''} ${ev.data.on_duty_status || ''}`;
  }
  if (ev.message) return `${ev.message.from_number || ''} → ${(ev.message.to_numbers || []).join(', ')}`;
  if (ev.data && ev.data.status) return ev.data.status + (ev.data.reason ? `: ${ev.data.reason}` : '');
  return '';
}

// Newest first, by seq: the sign-in backfill may answer after live events came in.
function addEventRow(ev) {
  const ol = $('event-list');
  const row = el('li', { data: { seq: String(ev.seq), event: ev.event } },
    `#${ev.seq} ${ev.event}${ev.late ? ' (late)' : ''} `,
    el('span', { class: 'meta' }, `${fmtTime(ev.occurred_at)} ${summary(ev)}`));
  const after = [...ol.children].find((li) => Number(li.dataset.seq) < ev.seq);
  ol.insertBefore(row, after || null);
  while (ol.children.length > MAX_EVENTS) ol.lastElementChild.remove();
}

// One event, from the stream (live) or the sign-in backfill (older: it must not
// undo what the REST snapshot already shows).
function applyEvent(ev, { live = true } = {}) {
  addEventRow(ev);
  if (ev.call) upsertCall(ev.call, { live });
  if (ev.event === 'agent.status') applyAgent(ev);
  if (/^(voicemail\.|call\.voicemail)/.test(ev.event)) voicemailsChanged();
  if (ev.event.startsWith('connection.')) loadConnection(session);
}

async function backfill(my, upTo) {
  try {
    const page = await api.events({ since: Math.max(0, upTo - BACKFILL), limit: BACKFILL });
    if (my !== session) return;
    for (const ev of page.data) if (ev.seq <= upTo) applyEvent(ev, { live: false });
  } catch (err) {
    if (my === session) console.warn('backfill:', err);
  }
}

// ---- the stream --------------------------------------------------------------------

function setStreamState(state, text) {
  const p = $('stream-state');
  p.dataset.state = state;
  p.textContent = text;
}

function finishCatchUp() {
  if (!catchUp || (stream.lastSeq ?? 0) < catchUp.to) return;
  const n = catchUp.count;
  catchUp = null;
  setNotice(`Reconnected: ${n} event${n === 1 ? '' : 's'} caught up.`, 'reconnected');
}

function startStream(my) {
  stream = new CtiStream({ api, auth: 'ticket' });
  stream.on('hello', (msg) => {
    if (my !== session) return;
    setStreamState('open', 'live');
    if (!everOpen) {
      everOpen = true;
      backfill(my, msg.seq);
      return;
    }
    // A reconnection: the server replays what came after our last seq first.
    catchUp = { from: stream.lastSeq ?? 0, to: msg.seq, count: 0 };
    finishCatchUp();
  });
  stream.on('event', (ev) => {
    if (my !== session) return;
    if (catchUp && ev.seq <= catchUp.to) catchUp.count++;
    applyEvent(ev);
    finishCatchUp();
  });
  stream.on('reset', (r) => {
    if (my !== session) return;
    catchUp = null;
    if (r.resynced) {
      setNotice(`Reconnected: the stream no longer had the events after #${r.from}; they were caught up through the REST API (up to #${r.seq}).`, 'reset');
    } else {
      setNotice(`Reconnected after a gap: events after #${r.from} are no longer available; the board was reloaded.`, 'reset');
      loadSnapshot(my).catch((err) => my === session && setNotice(`Could not reload the board: ${describe(err)}`, 'reset'));
    }
  });
  stream.on('reconnecting', (r) => {
    if (my !== session) return;
    setStreamState('reconnecting', `connection lost, reconnecting (attempt ${r.attempt})…`);
    setNotice('');
  });
  stream.on('state', (s) => {
    if (my !== session) return;
    if (s === 'connecting') setStreamState('connecting', 'connecting…');
  });
  stream.on('error', (err) => {
    if (my !== session || !err.fatal) return;
    signOut(`The stream stopped: ${describe(err)}. Sign in again.`);
  });
  stream.connect();
}

// ---- sign in / out ---------------------------------------------------------------

// The first n items of a list, following next_cursor: a page of a filter the
// server has no index for (outcome) may be short, even empty, with more after
// it. At most `pages` requests (each tests at most CALLS_SCAN_MAX calls).
async function firstItems(list, params, n, pages = 20) {
  const out = [];
  let cursor;
  do {
    const page = await list({ ...params, limit: n, cursor });
    out.push(...page.data.slice(0, n - out.length));
    cursor = page.next_cursor;
  } while (cursor && out.length < n && --pages > 0);
  return { data: out };
}

async function loadSnapshot(my) {
  const [active, miss] = await Promise.all([
    api.activeCalls({ limit: 500 }),
    firstItems((p) => api.listCalls(p), { outcome: 'missed' }, MAX_LIST),
  ]);
  if (my !== session) return;
  calls.clear();
  for (const c of active.data) upsertCall(c);
  renderCalls();
  missed = [];
  for (const c of miss.data) addMissed(c);
  renderMissed();
  loadVoicemails(my);
  loadConnection(my);
}

async function signIn(key) {
  const my = ++session;
  api = new CtiApi({ baseUrl: location.origin, apiKey: key });
  showError('signin-error', null);
  try {
    await loadSnapshot(my); // the first REST call says whether the key works
  } catch (err) {
    if (my !== session) return;
    sessionStorage.removeItem(KEY_STORAGE);
    api = null;
    const bad = err instanceof CtiError && (err.status === 401 || err.status === 403);
    showError('signin-error', bad
      ? new Error(`This API key was refused (HTTP ${err.status} ${err.code}): ${err.message}`)
      : new Error(`Could not sign in: ${describe(err)}`));
    return;
  }
  if (my !== session) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $('signin').hidden = true;
  $('board').hidden = false;
  $('signout').hidden = false;
  everOpen = false;
  catchUp = null;
  startStream(my);
  tick = setInterval(updateTimers, 1000);
}

function signOut(why) {
  session++;
  if (stream) stream.close();
  stream = null;
  api = null;
  clearInterval(tick);
  clearTimeout(voicemailTimer);
  sessionStorage.removeItem(KEY_STORAGE);
  calls.clear();
  agents.clear();
  missed = [];
  $('event-list').replaceChildren();
  $('agent-rows').replaceChildren();
  $('board').hidden = true;
  $('signout').hidden = true;
  $('signin').hidden = false;
  setStreamState('idle', 'signed out');
  setNotice('');
  showError('signin-error', why ? new Error(why) : null);
}

// The fragment never reaches a server; take it out of the address bar (and the
// history entry) before doing anything else with it.
function keyFromFragment() {
  if (!location.hash) return null;
  const key = new URLSearchParams(location.hash.slice(1)).get('key');
  history.replaceState(null, '', location.pathname + location.search);
  return key;
}

function main() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('key').value.trim();
    $('key').value = '';
    if (key) signIn(key);
  });
  $('signout').addEventListener('click', () => signOut(null));
  $('connect').addEventListener('click', connectDialpad);
  const key = keyFromFragment() || sessionStorage.getItem(KEY_STORAGE);
  if (key) signIn(key);
}

main();
