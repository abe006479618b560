// The client against the real server (see harness.js): connect, live order,
// resume after abrupt drops in the middle of a burst, tickets, filters, ping,
// revoked keys, REST helpers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { CtiApi, CtiStream, CtiError, createClient } from '../index.js';
import {
  Server, sendHook, blast, callEvent, agentEvent, fixture, until, sleep, USER_A, USER_B,
} from '../testing/harness.js';

let srv;
before(async () => { srv = await new Server().start(); });
after(async () => { await srv.stop(); });

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

test('a server restart: resumes from the last seq on the same database', async () => {
  const own = await new Server().start();
  try {
    const app = await own.createApp('restart');
    const got = [];
    const hellos = [];
    const stream = new CtiStream({
      baseUrl: own.base, apiKey: app.api_key, WebSocket, auth: 'header',
      backoff: { initialMs: 100, maxMs: 300 },
    });
    stream.on('event', (e) => got.push(e.seq));
    stream.on('hello', (h) => hellos.push(h));
    stream.connect();
    await until(() => hellos.length === 1, 10000, 'hello');
    await blast(own, app, Array.from({ length: 20 }, () => agentEvent()), 2);
    await until(() => got.length === 20, 10000, '20 events');
    await own.restart();
    await until(() => hellos.length === 2, 15000, 'reconnect after the restart');
    assert.equal(hellos[1].seq, 20);
    await blast(own, app, Array.from({ length: 20 }, () => agentEvent()), 2);
    await until(() => got.length >= 40, 10000, '40 events');
    await sleep(100);
    assert.deepEqual(got, range(1, 40));
    stream.close();
  } finally {
    await own.stop();
  }
});
