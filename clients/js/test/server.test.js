// The client against the real server (see harness.js): connect, live order,
// resume after abrupt drops in the middle of a burst, tickets, filters, ping,
// revoked keys, REST helpers.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { CtiApi, CtiStream, CtiError, createClient } from '../index.js';
import {
  Server, sendHook, blast, callEvent, agentEvent, fixture, until, sleep, USER_A, USER_B,
} from '../testing/harness.js';

let srv;
before(async () => { srv = await new Server().start(); });
after(async () => { await srv.stop(); });
// a failed assertion must not leave a stream reconnecting (the run would never end)
const streams = [];
afterEach(() => { for (const s of streams.splice(0)) s.close(); });

/** A stream on a fresh app that records what it gets; every socket made is kept. */
async function setup(opts = {}) {
  const app = await srv.createApp('js');
  const sockets = [];
  class Recording extends WebSocket {
    constructor(...a) { super(...a); sockets.push(this); }
  }
  const stream = new CtiStream({
    baseUrl: srv.base, apiKey: app.api_key, WebSocket: Recording,
    backoff: { initialMs: 50, maxMs: 400 }, ...opts,
  });
  streams.push(stream);
  const got = { events: [], hellos: [], errors: [], resets: [], closed: [] };
  stream.on('event', (e) => got.events.push(e));
  stream.on('hello', (h) => got.hellos.push(h));
  stream.on('error', (e) => got.errors.push(e));
  stream.on('reset', (r) => got.resets.push(r));
  stream.on('closed', (c) => got.closed.push(c));
  return { app, stream, got, sockets };
}

const opened = (got, n = 1) => until(() => got.hellos.length >= n, 10000, `hello #${n}`);
const seqs = (evs) => evs.map((e) => e.seq);
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

test('connects with the X-API-Key header: hello, then live events in order', async () => {
  const { app, stream, got } = await setup({ auth: 'header' });
  stream.connect();
  await opened(got);
  assert.equal(got.hellos[0].app_id, app.app_id);
  assert.equal(got.hellos[0].seq, 0);
  assert.equal(stream.state, 'open');
  const cid = '7199000000000001';
  for (const s of ['ringing', 'connected', 'hangup']) await sendHook(srv, app, callEvent(s, { callId: cid }));
  await until(() => got.events.length >= 3, 10000, '3 events');
  assert.deepEqual(seqs(got.events), [1, 2, 3]);
  assert.deepEqual(got.events.map((e) => e.event), ['call.ringing', 'call.connected', 'call.ended']);
  assert.equal(got.events[2].call.id, cid);
  assert.equal(got.events[2].call.status, 'ended');
  assert.ok(!('type' in got.events[0]), 'the wire type is stripped from events');
  stream.close();
  assert.equal(stream.state, 'closed');
  assert.deepEqual(got.errors, []);
});

test('connects with a ticket (POST /api/ws-ticket, ?ticket=) and resumes from since', async () => {
  const { app, stream, got, sockets } = await setup({ auth: 'ticket', since: 1 });
  for (let i = 0; i < 3; i++) await sendHook(srv, app, callEvent());
  stream.connect();
  await until(() => got.events.length >= 2, 10000, 'replay');
  assert.deepEqual(seqs(got.events), [2, 3]);
  assert.match(sockets[0].url, /[?&]ticket=[^&]+/);
  assert.match(sockets[0].url, /[?&]since=1(&|$)/);
  assert.doesNotMatch(sockets[0].url, /api_key|cti_/, 'the key is never in the URL');
  stream.close();
});

test('a drop in the middle of a burst: nothing lost, nothing duplicated, in order', async () => {
  const { app, stream, got, sockets } = await setup({ auth: 'header' });
  const reconnects = [];
  stream.on('reconnecting', (r) => reconnects.push(r));
  stream.connect();
  await opened(got);
  const N = 300;
  let sent = false;
  const sending = blast(srv, app, Array.from({ length: N }, () => agentEvent()), 4).then(() => { sent = true; });
  // kill the TCP connection abruptly (no close frame) three times during the burst
  for (let k = 1; k <= 3; k++) {
    await until(() => got.events.length >= k * 60, 20000, `${k * 60} events`);
    if (k === 1) assert.ok(!sent, 'the first drop is in the middle of the burst');
    sockets[sockets.length - 1].terminate();
    await opened(got, k + 1);
  }
  await sending;
  await until(() => got.events.length >= N, 20000, `${N} events`);
  await sleep(200); // anything duplicated would arrive now
  assert.deepEqual(seqs(got.events), range(1, N));
  assert.ok(reconnects.length >= 3, `reconnected ${reconnects.length} times`);
  assert.ok(sockets.length >= 4);
  // each reconnect resumed with the seq of the last event delivered before it
  for (const s of sockets.slice(1)) assert.match(s.url, /[?&]since=\d+/);
  stream.close();
});

test('a server restart: resumes from the last seq, with what came while it was away', async () => {
  const own = await new Server().start();
  try {
    const app = await own.createApp('restart');
    const got = [];
    const hellos = [];
    // a fixed ~3 s reconnect delay: the events posted right after the restart
    // come before the client is back, and must be replayed from its since
    const stream = new CtiStream({
      baseUrl: own.base, apiKey: app.api_key, WebSocket, auth: 'header',
      backoff: { initialMs: 3000, maxMs: 3000, factor: 1 }, random: () => 0.999,
    });
    streams.push(stream);
    stream.on('event', (e) => got.push(e.seq));
    stream.on('hello', (h) => hellos.push(h));
    stream.connect();
    await until(() => hellos.length === 1, 10000, 'hello');
    await blast(own, app, Array.from({ length: 20 }, () => agentEvent()), 2);
    await until(() => got.length === 20, 10000, '20 events');
    await own.restart();
    await blast(own, app, Array.from({ length: 20 }, () => agentEvent()), 2);
    assert.equal(hellos.length, 1, 'the events were sent while the client was away');
    await until(() => hellos.length === 2, 15000, 'reconnect after the restart');
    assert.equal(hellos[1].seq, 40);
    await sendHook(own, app, agentEvent());
    await until(() => got.length >= 41, 10000, '41 events');
    await sleep(100);
    assert.deepEqual(got, range(1, 41));
    stream.close();
  } finally {
    await own.stop();
  }
});

test('filters in the URL, then changed mid-stream with subscribe()', async () => {
  const { app, stream, got } = await setup({
    auth: 'header', filters: { types: ['call.ringing', 'call.ended'], dialpad_user_id: USER_B },
  });
  const replies = [];
  stream.on('message', (m) => replies.push(m));
  stream.connect();
  await opened(got);
  const b = '7199000000000101';
  const a = '7199000000000102';
  await sendHook(srv, app, callEvent('ringing', { user: USER_A, callId: a })); // 1: other user
  await sendHook(srv, app, callEvent('ringing', { user: USER_B, callId: b })); // 2
  await sendHook(srv, app, callEvent('connected', { user: USER_B, callId: b })); // 3: other type
  await sendHook(srv, app, agentEvent(USER_B)); // 4: other type
  await sendHook(srv, app, callEvent('hangup', { user: USER_B, callId: b })); // 5
  await until(() => got.events.length >= 2, 10000, 'filtered events');
  await sleep(200);
  assert.deepEqual(seqs(got.events), [2, 5]);
  assert.deepEqual(got.events.map((e) => e.event), ['call.ringing', 'call.ended']);

  stream.subscribe({ types: ['agent.status'], dialpad_user_id: null });
  await until(() => replies.some((m) => m.type === 'subscribed'), 10000, 'subscribed');
  await sendHook(srv, app, callEvent('ringing', { user: USER_B })); // 6: other type now
  await sendHook(srv, app, agentEvent(USER_A)); // 7
  await sendHook(srv, app, agentEvent(USER_B)); // 8
  await until(() => got.events.length >= 4, 10000, 'events after subscribe');
  await sleep(200);
  assert.deepEqual(seqs(got.events), [2, 5, 7, 8]);
  assert.deepEqual(stream.filters, { types: ['agent.status'], dialpad_user_id: null });
  // the new filters are kept for the next connection
  assert.match(stream.url(), /types=agent.status/);
  assert.doesNotMatch(stream.url(), /dialpad_user_id/);
  stream.close();
});

test('ping() resolves with the pong; a dead link (no pong) reconnects', async () => {
  const { stream, got, sockets } = await setup({ auth: 'header' });
  stream.connect();
  await opened(got);
  const pong = await stream.ping();
  assert.equal(pong.type, 'pong');
  stream.close();
  await assert.rejects(stream.ping(), (e) => e instanceof CtiError && e.code === 'closed');

  // automatic pings: a socket that swallows them is declared dead and replaced
  const s2 = await setup({ auth: 'header', pingIntervalMs: 100, pongTimeoutMs: 200 });
  s2.stream.connect();
  await opened(s2.got);
  const first = s2.sockets[0];
  first.send = () => {}; // the ping never leaves: no pong comes back
  await opened(s2.got, 2);
  assert.ok(s2.sockets.length >= 2);
  assert.equal(first.readyState, WebSocket.CLOSED);
  s2.stream.close();
  assert.equal(sockets.length, 1);
});

test('a revoked key closes the socket with 4001: the client stops and says why', async () => {
  const { app, stream, got, sockets } = await setup({ auth: 'header' });
  stream.connect();
  await opened(got);
  const r = await srv.admin('POST', `/internal/apps/${app.app_id}/api-key/revoke`);
  assert.equal(r.status, 200);
  await until(() => got.closed.length === 1, 10000, 'closed');
  assert.equal(got.closed[0].code, 4001);
  assert.equal(got.errors.length, 1);
  assert.ok(got.errors[0].fatal);
  assert.equal(got.errors[0].closeCode, 4001);
  assert.equal(got.errors[0].code, 'unauthorized');
  assert.equal(stream.state, 'closed');
  await sleep(600); // several backoff periods: no new connection is tried
  assert.equal(sockets.length, 1);
});

test('a refused key: no reconnect loop, with the header or with tickets', async () => {
  for (const auth of ['header', 'ticket']) {
    const { stream, got, sockets } = await setup({ auth });
    stream.api.apiKey = 'cti_0000000000000000_not-a-key';
    stream.connect();
    await until(() => got.closed.length === 1, 10000, `closed (${auth})`);
    assert.equal(got.errors.length, 1);
    assert.equal(got.errors[0].status, 401);
    assert.equal(got.errors[0].code, 'unauthorized');
    assert.ok(got.errors[0].fatal);
    await sleep(300);
    assert.equal(sockets.length, auth === 'header' ? 1 : 0);
  }
});

test('REST helpers: calls, screen pop, events, voicemails, messages, ws-ticket, errors', async () => {
  const app = await srv.createApp('rest');
  const { api, stream } = createClient({ baseUrl: srv.base + '/', apiKey: app.api_key, WebSocket });
  const sent = [...fixture('inbound-voicemail'), ...fixture('sms-inbound')];
  for (const e of sent) await sendHook(srv, app, e);
  await until(async () => (await api.events({ since: 0 })).data.length === sent.length, 10000, 'applied');

  assert.equal((await api.health()).status, 'healthy');
  const calls = await api.listCalls({ outcome: 'voicemail', limit: 10 });
  assert.deepEqual(calls.data.map((c) => c.id), ['4789163520458752']);
  assert.equal(calls.next_cursor, null);
  const call = await api.getCall('4789163520458752');
  assert.equal(call.status, 'ended');
  assert.equal(call.timeline.length, 5);
  assert.deepEqual((await api.activeCalls()).data, []);

  const pop = await api.screenPop('(718) 555-0164');
  assert.equal(pop.number, '+17185550164');
  assert.equal(pop.recent_calls[0].id, '4789163520458752');
  assert.equal(pop.last_voicemail.call_id, '4789163520458752');

  const page = await api.events({ since: 1, limit: 2 });
  assert.deepEqual(seqs(page.data), [2, 3]);
  assert.equal(page.next_since, 3);
  const all = [];
  for await (const e of api.eventsSince(0, { limit: 2 })) all.push(e.seq);
  assert.deepEqual(all, range(1, sent.length));
  const upTo = [];
  for await (const e of api.eventsSince(1, { limit: 2, until: 4 })) upTo.push(e.seq);
  assert.deepEqual(upTo, [2, 3, 4]);

  const vms = await api.listVoicemails({ number: '+17185550164' });
  assert.equal(vms.data.length, 1);
  const vm = await api.getVoicemail(vms.data[0].id);
  assert.equal(vm.recording_id, vms.data[0].recording_id);
  assert.ok(vm.transcript);

  const msgs = await api.listMessages({ direction: 'inbound' });
  assert.deepEqual(msgs.data.map((m) => m.id), ['9034417702368769']);
  assert.equal((await api.getMessage('9034417702368769')).from_number, '+13475550193');

  const ids = [];
  for await (const c of api.paginate((p) => api.listCalls(p), { limit: 1 })) ids.push(c.id);
  assert.deepEqual(ids, ['4789163520458752']);

  const t = await api.wsTicket();
  assert.equal(typeof t.ticket, 'string');
  assert.ok(t.ticket.length > 20);
  assert.ok(Date.parse(t.expires_at) > Date.now());

  await assert.rejects(api.getCall('1'), (e) => e instanceof CtiError && e.status === 404 &&
    e.code === 'not_found' && typeof e.requestId === 'string' && e.requestId.length > 0);
  await assert.rejects(api.listCalls({ limit: 0 }), (e) => e.status === 400 && e.code === 'invalid_request');
  const bad = new CtiApi({ baseUrl: srv.base, apiKey: 'cti_0000000000000000_nope' });
  await assert.rejects(bad.listCalls(), (e) => e.status === 401 && e.code === 'unauthorized');
  assert.equal(stream.api, api);
});
