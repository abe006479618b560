// The dashboard (GET /dashboard) in a real browser: Debian's chromium, driven
// by playwright-core, against the real ASan server (started by the JavaScript
// client's test harness: 127.0.0.1, a free port, a temp dir).
//
// It signs in through /dashboard#key=..., checks the fragment leaves the address
// bar and the key never reaches the server's log, plays calls through the
// signed webhook and watches them appear live, drops the stream by restarting
// the server (while the page cannot get a ticket, so that events pile up) and
// reads the "caught up" notice, and presses "Connect Dialpad" on a server with
// no OAuth client (409 not_configured). Every wait is bounded.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  Server, sendHook, callEvent, agentEvent, fixture, freePort, until, USER_A,
} from '../../../clients/js/testing/harness.js';

const WAIT = 15000;       // one thing shown on the page
const RECONNECT = 30000;  // the client's backoff after a few failed attempts (full jitter)

function findChromium() {
  if (process.env.CHROMIUM_BIN) return process.env.CHROMIUM_BIN;
  for (const dir of (process.env.PATH || '').split(delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      try {
        accessSync(join(dir, name), constants.X_OK);
        return join(dir, name);
      } catch { /* next */ }
    }
  }
  throw new Error('chromium not found on PATH (Debian: apt-get install chromium; or set CHROMIUM_BIN)');
}

let srv;
let browser;
let app;

before(async () => {
  // one leg tested per page of a filter without an index (outcome): the
  // dashboard's missed calls must follow next_cursor past short pages
  srv = await new Server({ CALLS_SCAN_MAX: '1' }).start();
  app = await srv.createApp();
  browser = await chromium.launch({
    executablePath: findChromium(),
    // root (CI containers) cannot use chromium's sandbox
    args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
    timeout: 30000,
  });
});

after(async () => {
  if (browser) await browser.close();
  if (srv) await srv.stop();
});

/** Every log the server wrote in this test (one file per start). */
function serverLogs() {
  return readdirSync(srv.dir).filter((f) => f.startsWith('server-'))
    .map((f) => readFileSync(join(srv.dir, f), 'utf8')).join('\n');
}

async function events(since) {
  const r = await fetch(`${srv.base}/api/events?since=${since}&limit=500`, { headers: { 'X-API-Key': app.api_key } });
  assert.equal(r.status, 200);
  return (await r.json()).data;
}

async function newPage() {
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // a refused key and a stopped server show up as failed requests: expected in the tests
    // that cause them; a CSP violation or a script error is never expected
    if (m.type() === 'error' && !/Failed to load resource|ERR_FAILED|ERR_CONNECTION_REFUSED|WebSocket connection/.test(m.text()))
      problems.push(`console: ${m.text()}`);
  });
  return { page, problems };
}

test('a wrong key is refused with a clear message; the form signs in with a good one', async () => {
  const { page, problems } = await newPage();
  try {
    await page.goto(`${srv.base}/dashboard`);
    await page.fill('#key', 'not-a-real-key');
    await page.click('#signin-form button[type=submit]');
    const err = page.locator('#signin-error');
    await err.waitFor({ state: 'visible', timeout: WAIT });
    assert.match(await err.textContent(), /^This API key was refused \(HTTP 401 unauthorized\): \S/);
    assert.equal(await page.locator('#board').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('cti-dashboard-key')), null);

    await page.fill('#key', app.api_key);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#stream-state[data-state="open"]').waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#signin-error').isVisible(), false);
    // the key is kept for this tab only, and sign-out forgets it
    assert.equal(await page.evaluate(() => sessionStorage.getItem('cti-dashboard-key')), app.api_key);
    await page.click('#signout');
    await page.locator('#signin').waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('cti-dashboard-key')), null);
    assert.deepEqual(problems, []);
  } finally {
    await page.close();
  }
});

test('the wallboard: #key= sign-in, live calls, voicemails, agents, resume after a drop, connect button', async () => {
  // before the page opens: a missed call (the REST snapshot must show it)
  for (const e of fixture('inbound-missed')) await sendHook(srv, app, e);
  const missedId = String(fixture('inbound-missed')[0].call_id);
  await until(async () => (await events(0)).length === 3, WAIT, 'the missed call applied');

  const { page, problems } = await newPage();
  try {
    const resp = await page.goto(`${srv.base}/dashboard#key=${encodeURIComponent(app.api_key)}`);
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()['content-security-policy'], /default-src 'self'/);

    await page.locator('#stream-state[data-state="open"]').waitFor({ timeout: WAIT });
    // the fragment is read, then gone from the address bar
    assert.equal(page.url(), `${srv.base}/dashboard`);
    assert.equal(await page.evaluate(() => location.hash), '');
    await page.locator(`#missed-calls li[data-call-id="${missedId}"]`).waitFor({ timeout: WAIT });
    // the sign-in backfill fills the latest events
    await page.locator('#event-list li[data-event="call.missed"]').waitFor({ timeout: WAIT });

    // a live call: ringing, then connected, grouped under its agent, with a timer
    const ringing = callEvent('ringing');
    const callId = ringing.call_id;
    await sendHook(srv, app, ringing);
    const card = page.locator(`.call[data-call-id="${callId}"]`);
    await card.locator('.state', { hasText: 'ringing' }).waitFor({ timeout: WAIT });
    await sendHook(srv, app, callEvent('connected', { callId }));
    await page.locator(`.call[data-call-id="${callId}"][data-status="active"]`).waitFor({ timeout: WAIT });
    assert.equal(await card.locator('.state').textContent(), 'connected');
    assert.match(await card.locator('.timer').textContent(), /^(\d+d )?\d+:\d\d(:\d\d)?$/);
    assert.equal(await card.locator('xpath=ancestor::div[contains(@class,"agent-group")]/h3').textContent(),
      ringing.target.name);
    // the timer runs
    const t0 = await card.locator('.timer').textContent();
    await until(async () => (await card.locator('.timer').textContent()) !== t0, 5000, 'the timer to tick');

    // a call missed while the page is open joins the missed calls
    const miss = callEvent('missed');
    await sendHook(srv, app, miss);
    await page.locator(`#missed-calls li[data-call-id="${miss.call_id}"]`).waitFor({ timeout: WAIT });
    await page.locator(`#event-list li[data-event="call.missed"]`).nth(1).waitFor({ timeout: WAIT });

    // agent status and a voicemail with its transcript, from the stream
    await sendHook(srv, app, agentEvent(USER_A));
    await page.locator(`#agent-rows tr[data-agent-id="${USER_A}"]`).waitFor({ timeout: WAIT });
    for (const e of fixture('inbound-voicemail')) await sendHook(srv, app, e);
    const vm = fixture('inbound-voicemail').find((e) => e.state === 'transcription');
    await page.locator('#voicemail-list .transcript', { hasText: vm.transcription_text }).waitFor({ timeout: WAIT });

    // drop the stream: restart the server while the page cannot get a ticket,
    // and play three events meanwhile; the page must resume after its last seq
    const before = (await events(0)).length;
    await page.route('**/api/ws-ticket', (route) => route.abort());
    await srv.restart();
    await page.locator('#stream-state[data-state="reconnecting"]').waitFor({ timeout: WAIT });
    const second = callEvent('ringing');
    await sendHook(srv, app, second);
    await sendHook(srv, app, callEvent('hangup', { callId }));
    await sendHook(srv, app, agentEvent(USER_A));
    await until(async () => (await events(before)).length === 3, WAIT, 'the three events applied');
    await page.unroute('**/api/ws-ticket');
    const notice = page.locator('#notice', { hasText: 'Reconnected: 3 events caught up.' });
    await notice.waitFor({ timeout: RECONNECT });
    await page.locator(`.call[data-call-id="${second.call_id}"]`).waitFor({ timeout: WAIT });
    await card.waitFor({ state: 'detached', timeout: WAIT }); // ended: off the board
    assert.equal(await page.locator('#stream-state').getAttribute('data-state'), 'open');
    // and live again after the catch-up
    await sendHook(srv, app, callEvent('connected', { callId: second.call_id }));
    await page.locator(`.call[data-call-id="${second.call_id}"][data-status="active"]`).waitFor({ timeout: WAIT });

    // the connect button asks the server for a link; no OAuth client here → 409 not_configured
    assert.equal(await page.locator('#conn-status').getAttribute('data-status'), 'not_connected');
    const [req] = await Promise.all([
      page.waitForRequest((r) => r.url().endsWith('/api/dialpad/connect') && r.method() === 'POST', { timeout: WAIT }),
      page.click('#connect'),
    ]);
    assert.equal((await req.response()).status(), 409);
    await page.locator('#connect-result', { hasText: 'Dialpad is not configured on this server' }).waitFor({ timeout: WAIT });

    // the key revoked: the server closes the stream (4001) and the page asks to sign in again
    const rev = await srv.admin('POST', `/internal/apps/${app.app_id}/api-key/revoke`, {});
    assert.equal(rev.status, 200);
    await page.locator('#signin-error', { hasText: 'The stream stopped' }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#board').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('cti-dashboard-key')), null);

    assert.deepEqual(problems, []);
  } finally {
    await page.close();
  }
  // the key went only in X-API-Key headers: never in a logged URL
  const logs = serverLogs();
  assert.match(logs, /\/dashboard/, 'the access log has the page requests');
  assert.match(logs, /\/ws/, 'the access log has the stream');
  assert.ok(!logs.includes(app.api_key), 'the API key appears in the server log');
});

test('the missed calls follow next_cursor past a short page (CALLS_SCAN_MAX=1 here)', async () => {
  const app4 = await srv.createApp('short-pages');
  for (const e of fixture('inbound-missed')) await sendHook(srv, app4, e);
  const missedId = String(fixture('inbound-missed')[0].call_id);
  // a newer call that was not missed: the first page of missed calls is empty, with a cursor
  for (const e of fixture('outbound-recorded')) await sendHook(srv, app4, e);
  const listed = async (q) => (await (await fetch(`${srv.base}/api/calls?${q}`,
    { headers: { 'X-API-Key': app4.api_key } })).json());
  await until(async () => (await listed('')).data.length === 2, WAIT, 'both calls applied');
  const first = await listed('outcome=missed&limit=20');
  assert.equal(first.data.length, 0);
  assert.ok(first.next_cursor);
  const { page, problems } = await newPage();
  try {
    // no backfill of events: the missed call can come only from the REST list
    await page.route((url) => url.pathname === '/api/events', (route) => route.fulfill({
      status: 200, contentType: 'application/json', body: '{"data":[],"next_cursor":null}' }));
    await page.goto(`${srv.base}/dashboard#key=${encodeURIComponent(app4.api_key)}`);
    await page.locator('#stream-state[data-state="open"]').waitFor({ timeout: WAIT });
    await page.locator(`#missed-calls li[data-call-id="${missedId}"]`).waitFor({ timeout: WAIT });
    assert.deepEqual(problems, []);
  } finally {
    await page.close();
  }
});

test('a sign-in backfill that answers after live events neither reorders the events nor undoes newer state', async () => {
  const app3 = await srv.createApp('late-backfill');
  const ring = callEvent('ringing');
  await sendHook(srv, app3, ring);
  await sendHook(srv, app3, agentEvent(USER_A)); // availability "open" (the fixture's)
  const { page, problems } = await newPage();
  let release;
  const held = new Promise((r) => { release = r; });
  try {
    // hold GET /api/events (the backfill) until live events have been shown
    await page.route((url) => url.pathname === '/api/events', async (route) => {
      await held;
      await route.continue();
    });
    await page.goto(`${srv.base}/dashboard#key=${encodeURIComponent(app3.api_key)}`);
    await page.locator('#stream-state[data-state="open"]').waitFor({ timeout: WAIT });
    await sendHook(srv, app3, callEvent('connected', { callId: ring.call_id }));
    const closed = agentEvent(USER_A);
    closed.availability_status = 'closed';
    await sendHook(srv, app3, closed);
    const agentRow = page.locator(`#agent-rows tr[data-agent-id="${USER_A}"]`);
    await agentRow.locator('td', { hasText: 'closed' }).waitFor({ timeout: WAIT });
    await page.locator(`.call[data-call-id="${ring.call_id}"][data-status="active"]`).waitFor({ timeout: WAIT });
    release();
    await until(async () => (await page.locator('#event-list li').count()) === 4, WAIT, 'the backfilled events');
    const seqs = await page.locator('#event-list li').evaluateAll((lis) => lis.map((li) => Number(li.dataset.seq)));
    assert.deepEqual(seqs, [4, 3, 2, 1]);
    assert.equal(await agentRow.locator('td').nth(1).textContent(), 'closed');
    assert.equal(await page.locator(`.call[data-call-id="${ring.call_id}"] .state`).textContent(), 'connected');
    assert.deepEqual(problems, []);
  } finally {
    release();
    await page.close();
  }
});

test('with an OAuth client configured, "Connect Dialpad" opens the one-use link in a new tab', async () => {
  // Dialpad itself is not needed: the link is the server's own /authorize, which
  // redirects to DIALPAD_BASE_URL (nothing listens there: the tab just fails to load it)
  const port = await freePort();
  const dead = await freePort();
  const srv2 = new Server({
    DIALPAD_BASE_URL: `http://127.0.0.1:${dead}`,
    DIALPAD_SANDBOX_CLIENT_ID: 'dashboard-test-client',
    DIALPAD_SANDBOX_CLIENT_SECRET: 'dashboard-test-client-secret-0123456789',
    PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
  });
  srv2.port = port;
  await srv2.start();
  const page = await browser.newPage();
  try {
    const app2 = await srv2.createApp('wallboard');
    await page.goto(`${srv2.base}/dashboard#key=${encodeURIComponent(app2.api_key)}`);
    await page.locator('#conn-status[data-status="not_connected"]').waitFor({ timeout: WAIT });
    const [opened] = await Promise.all([
      page.context().waitForEvent('request', { predicate: (r) => r.url().startsWith(`${srv2.base}/authorize?`), timeout: WAIT }),
      page.click('#connect'),
    ]);
    const u = new URL(opened.url());
    assert.equal(u.searchParams.get('app_id'), app2.app_id);
    assert.match(u.searchParams.get('token'), /\S{16,}/);
    // a navigation in another tab: the board stays where it is
    assert.ok(opened.isNavigationRequest());
    await until(() => page.context().pages().length === 2, WAIT, 'a second tab');
    assert.equal(page.url(), `${srv2.base}/dashboard`);
    const redirect = await opened.response();
    assert.equal(redirect.status(), 302);
    assert.ok(redirect.headers().location.startsWith(`http://127.0.0.1:${dead}/oauth2/authorize?`));
    await page.locator('#connect-result', { hasText: 'A Dialpad approval page was opened in a new tab' })
      .waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#connect-result a').getAttribute('href'), opened.url());
    // the link's one-use token is redacted from the access log
    const log = readFileSync(join(srv2.dir, 'server-1.log'), 'utf8');
    assert.match(log, /\/authorize/);
    assert.ok(!log.includes(u.searchParams.get('token')), 'the connect token appears in the server log');
  } finally {
    await page.close();
    await srv2.stop();
  }
});
