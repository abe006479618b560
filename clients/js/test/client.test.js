// The client's own logic against a tiny fake WebSocket and fake fetch: reset
// re-sync through /api/events, 410 during a re-sync, 4003, backoff with jitter,
// 4008, duplicates at a resume seam, filters. (A reset for "since older than the
// retained history" cannot be produced with the real server: nothing is deleted.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CtiStream, CtiError, matchesFilters } from '../index.js';

function fakeWorld({ events = [], eventsStatus = 200 } = {}) {
  const sockets = [];
  const requests = [];
  class FakeWS {
    constructor(url, opts) {
      this.url = url;
      this.opts = opts;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(d) { this.sent.push(JSON.parse(d)); }
    close(code = 1005, reason = '') { this.readyState = 3; this.closedWith = code; this.onclose?.({ code, reason }); }
    // the server's side
    open() { this.readyState = 1; this.onopen?.({}); }
    msg(o) { this.onmessage?.({ data: JSON.stringify(o) }); }
    drop(code = 1006, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
  }
  const fetch = async (url, init) => {
    const u = new URL(url);
    requests.push({ path: u.pathname, params: Object.fromEntries(u.searchParams), init });
    if (u.pathname === '/api/ws-ticket') {
      return new Response(JSON.stringify({ ticket: `t${requests.length}`, expires_at: '2030-01-01T00:00:00.000Z' }), { status: 201 });
    }
    if (u.pathname === '/api/events') {
      if (eventsStatus !== 200) {
        return new Response(JSON.stringify({ error: 'history_unavailable', message: 'gone' }), { status: eventsStatus });
      }
      const since = Number(u.searchParams.get('since'));
      const limit = Number(u.searchParams.get('limit') || 50);
      const data = events.filter((e) => e.seq > since).slice(0, limit);
      return new Response(JSON.stringify({ data, next_since: data.length ? data.at(-1).seq : since }), { status: 200 });
    }
    return new Response('{"error":"not_found","message":"no"}', { status: 404 });
  };
  // timers run only when the test says so
  const timers = [];
  const setTimeout = (fn, ms) => { const t = { fn, ms }; timers.push(t); return t; };
  const clearTimeout = (t) => { const i = timers.indexOf(t); if (i >= 0) timers.splice(i, 1); };
  const runTimers = async () => {
    for (const t of timers.splice(0)) t.fn();
    await flush();
  };
  return { FakeWS, fetch, sockets, requests, timers, setTimeout, clearTimeout, runTimers };
}

const flush = () => new Promise((r) => setImmediate(r));

function ev(seq, event = 'call.ringing', user = '1') {
  return { seq, event, occurred_at: '2026-01-01T00:00:00.000Z', call_id: String(seq), late: false,
    call: { id: String(seq), dialpad_user_id: user, crm_user_id: null }, data: {} };
}

function make(world, opts = {}) {
  const s = new CtiStream({
    baseUrl: 'http://cti.test', apiKey: 'cti_k', WebSocket: world.FakeWS, fetch: world.fetch,
    setTimeout: world.setTimeout, clearTimeout: world.clearTimeout, pingIntervalMs: 0, ...opts,
  });
  const got = { events: [], resets: [], errors: [], closed: [], reconnecting: [] };
  s.on('event', (e) => got.events.push(e));
  s.on('reset', (r) => got.resets.push(r));
  s.on('error', (e) => got.errors.push(e));
  s.on('closed', (c) => got.closed.push(c));
  s.on('reconnecting', (r) => got.reconnecting.push(r));
  return { s, got };
}

test('reset: the gap is re-synced through GET /api/events, filtered, before live events', async () => {
  const all = [];
  for (let i = 1; i <= 12; i++) all.push(ev(i, i % 2 ? 'call.ringing' : 'agent.status'));
  const w = fakeWorld({ events: all });
  const { s, got } = make(w, { auth: 'header', since: 5, filters: { types: 'call.ringing' } });
  s.connect();
  await flush();
  const ws = w.sockets[0];
  assert.match(ws.url, /^ws:\/\/cti\.test\/ws\?since=5&types=call\.ringing$/);
  assert.deepEqual(ws.opts, { headers: { 'X-API-Key': 'cti_k' } });
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 12 });
  ws.msg({ type: 'reset', seq: 12 });
  ws.msg({ type: 'event', ...ev(13) }); // live, while the re-sync runs
  for (let i = 0; i < 20 && !got.resets.length; i++) await flush();
  assert.deepEqual(got.events.map((e) => e.seq), [7, 9, 11, 13]);
  assert.deepEqual(got.resets, [{ seq: 12, from: 5, resynced: true }]);
  assert.equal(s.lastSeq, 13);
  const pages = w.requests.filter((r) => r.path === '/api/events');
  assert.equal(pages[0].params.since, '5');
  assert.equal(pages[0].init.headers['X-API-Key'], 'cti_k');
  // the next connection resumes after the live event
  ws.drop(1006);
  await w.runTimers();
  assert.match(w.sockets[1].url, /since=13/);
});

test('reset whose gap is gone (410): surfaced on the reset, then live events go on', async () => {
  const w = fakeWorld({ eventsStatus: 410 });
  const { s, got } = make(w, { auth: 'header', since: 3 });
  s.connect();
  await flush();
  const ws = w.sockets[0];
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 50 });
  ws.msg({ type: 'reset', seq: 50 });
  ws.msg({ type: 'event', ...ev(51) });
  for (let i = 0; i < 20 && !got.resets.length; i++) await flush();
  assert.equal(got.resets.length, 1);
  assert.equal(got.resets[0].resynced, false);
  assert.equal(got.resets[0].from, 3);
  assert.ok(got.resets[0].error instanceof CtiError);
  assert.equal(got.resets[0].error.code, 'history_unavailable');
  assert.deepEqual(got.events.map((e) => e.seq), [51]);
  assert.equal(s.state, 'open');
});

test('reset without REST credentials (tickets from the app backend): reported, not re-synced', async () => {
  const w = fakeWorld();
  const { s, got } = make(w, { apiKey: undefined, getTicket: async () => 'tk', since: 2 });
  s.connect();
  await flush();
  const ws = w.sockets[0];
  assert.match(ws.url, /since=2&ticket=tk$/);
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 9 });
  ws.msg({ type: 'reset', seq: 9 });
  assert.deepEqual(got.resets, [{ seq: 9, from: 2, resynced: false }]);
  assert.equal(s.lastSeq, 9);
  assert.equal(w.requests.length, 0);
});

test('drops: backoff with full jitter, capped, reset by a hello; duplicates at the seam are dropped', async () => {
  const w = fakeWorld();
  const { s, got } = make(w, { auth: 'ticket', backoff: { initialMs: 100, maxMs: 1000 }, random: () => 0.999 });
  s.connect();
  await flush();
  let ws = w.sockets[0];
  assert.match(ws.url, /^ws:\/\/cti\.test\/ws\?ticket=t1$/, 'a fresh start has no since');
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 4 });
  ws.msg({ type: 'event', ...ev(5) });
  for (let k = 0; k < 6; k++) {
    w.sockets.at(-1).drop(1006);
    await w.runTimers();
  }
  assert.deepEqual(got.reconnecting.map((r) => r.delayMs), [99, 199, 399, 799, 999, 999]);
  assert.equal(w.sockets.length, 7);
  for (const x of w.sockets.slice(1)) assert.match(x.url, /since=5&ticket=t\d+$/);
  ws = w.sockets.at(-1);
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 7 });
  ws.msg({ type: 'event', ...ev(5) }); // already delivered
  ws.msg({ type: 'event', ...ev(6) });
  ws.msg({ type: 'event', ...ev(7) });
  assert.deepEqual(got.events.map((e) => e.seq), [5, 6, 7]);
  ws.drop(1001);
  assert.equal(got.reconnecting.at(-1).delayMs, 99, 'the hello reset the backoff');
  // jitter: the delay is random in [0, cap]
  const { s: s2 } = make(fakeWorld(), { random: () => 0 });
  assert.equal(s2.nextDelay(1006), 0);
  assert.equal(got.errors.length, 0);
});

test('4008 (too slow) reconnects at once with since; 4003 stops for good', async () => {
  const w = fakeWorld();
  const { s, got } = make(w, { auth: 'header', random: () => 0.5 });
  s.connect();
  await flush();
  let ws = w.sockets[0];
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 0 });
  ws.msg({ type: 'event', ...ev(1) });
  ws.drop(4008, 'too slow; reconnect with since=1');
  assert.equal(got.reconnecting[0].delayMs, 0);
  await w.runTimers();
  ws = w.sockets[1];
  assert.match(ws.url, /since=1$/);
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 1 });
  ws.drop(4003, 'app deactivated');
  await w.runTimers();
  assert.equal(w.sockets.length, 2);
  assert.equal(s.state, 'closed');
  assert.equal(got.errors.length, 1);
  assert.equal(got.errors[0].code, 'forbidden');
  assert.equal(got.errors[0].closeCode, 4003);
  assert.ok(got.errors[0].fatal);
  assert.deepEqual(got.closed.map((c) => c.code), [4003]);
});

test('a server error message (1011 replay failure) is surfaced, then it reconnects', async () => {
  const w = fakeWorld();
  const { s, got } = make(w, { auth: 'header', since: 10 });
  s.connect();
  await flush();
  const ws = w.sockets[0];
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 20 });
  ws.msg({ type: 'error', message: 'replay failed: reconnect with since=10' });
  ws.drop(1011);
  await w.runTimers();
  assert.equal(got.errors.length, 1);
  assert.equal(got.errors[0].code, 'server');
  assert.ok(!got.errors[0].fatal);
  assert.equal(w.sockets.length, 2);
  assert.match(w.sockets[1].url, /since=10$/);
});

test('close() stops: no reconnect, pending timers cleared', async () => {
  const w = fakeWorld();
  const { s, got } = make(w, { auth: 'header' });
  s.connect();
  await flush();
  w.sockets[0].drop(1006);
  await flush();
  assert.equal(w.timers.length, 1);
  s.close();
  assert.equal(w.timers.length, 0);
  assert.equal(s.state, 'closed');
  assert.equal(got.closed.length, 1);
});

test('matchesFilters follows the server: types, the call/message/agent user, crm user', () => {
  const call = ev(1, 'call.ringing', '42');
  call.call.crm_user_id = 'crm-1';
  const sms = { seq: 2, event: 'sms.received', call: null, message: { dialpad_user_id: '42', crm_user_id: null }, data: {} };
  const agent = { seq: 3, event: 'agent.status', call: null, data: { target: { id: '42' } } };
  assert.ok(matchesFilters(call, {}));
  assert.ok(matchesFilters(call, { types: ['call.ringing', 'call.ended'] }));
  assert.ok(!matchesFilters(call, { types: 'call.ended' }));
  for (const e of [call, sms, agent]) {
    assert.ok(matchesFilters(e, { dialpad_user_id: 42 }));
    assert.ok(!matchesFilters(e, { dialpad_user_id: '43' }));
  }
  assert.ok(matchesFilters(call, { crm_user_id: 'crm-1' }));
  assert.ok(!matchesFilters(sms, { crm_user_id: 'crm-1' }));
  assert.ok(!matchesFilters(agent, { crm_user_id: 'crm-1' }));
});

test('automatic pings: a pong keeps the socket, a missing pong replaces it, stale timers do nothing', async () => {
  const w = fakeWorld();
  const { s, got } = make(w, { auth: 'header', pingIntervalMs: 1000, pongTimeoutMs: 500 });
  s.connect();
  await flush();
  const ws = w.sockets[0];
  ws.open();
  ws.msg({ type: 'hello', app_id: 'a', seq: 0 });
  assert.deepEqual(w.timers.map((t) => t.ms), [1000]);
  await w.runTimers(); // the ping goes out, a pong timeout is armed
  assert.deepEqual(ws.sent, [{ type: 'ping' }]);
  assert.deepEqual(w.timers.map((t) => t.ms), [500]);
  ws.msg({ type: 'pong' });
  await flush();
  assert.deepEqual(w.timers.map((t) => t.ms), [1000], 'the pong cleared its timeout, the next ping is armed');
  await w.runTimers();
  assert.equal(ws.sent.length, 2);
  await w.runTimers(); // no pong in time: the socket is given up
  assert.equal(ws.closedWith, 4000);
  assert.equal(got.reconnecting.length, 1);
  await w.runTimers(); // the reconnect
  const ws2 = w.sockets[1];
  ws2.open();
  ws2.msg({ type: 'hello', app_id: 'a', seq: 0 });
  assert.equal(s.state, 'open');
  assert.equal(ws2.readyState, 1);
  s.close();
});
