// Test harness: starts the real cti-server (CTI_SERVER_BIN, default
// build/asan/cti-server of the repository) on 127.0.0.1 and a free port in a
// temp dir, creates apps through the admin API, signs Dialpad webhooks (JWT
// HS256, node:crypto) and stops the server with SIGTERM, failing on a non-zero
// exit or a sanitizer report in its log.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.CTI_SERVER_BIN || join(ROOT, 'build/asan/cti-server');
export const ADMIN_SECRET = 'js-client-admin-secret-0123456789-ABCDEFGH';
const SANITIZER_MARKS = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];
const FIXTURES = join(ROOT, 'tests/fixtures');

/** A fixture's events; integers of 16+ digits (Dialpad ids, beyond 2^53) become
 * decimal strings so that no digit is lost (the server takes ids either way). */
export function fixture(name) {
  const text = readFileSync(join(FIXTURES, `${name}.json`), 'utf8');
  return JSON.parse(text.replace(/([:\[,]\s*)(\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
}

/** A free loopback TCP port (bound, then released). */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Server {
  constructor(env = {}) {
    this.extraEnv = env;
    this.starts = 0;
  }

  async start() {
    this.dir ??= mkdtempSync(join(tmpdir(), 'cti-js-'));
    this.port ??= await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    this.logPath = join(this.dir, `server-${++this.starts}.log`);
    const log = openSync(this.logPath, 'a');
    const env = {
      PATH: process.env.PATH || '/usr/bin:/bin',
      PORT: String(this.port),
      LOG_LEVEL: 'info',
      INTERNAL_API_SECRET: ADMIN_SECRET,
      ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0:exitcode=23',
      UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
      ...this.extraEnv,
    };
    this.proc = spawn(BIN, [], { cwd: this.dir, env, stdio: ['ignore', log, log] });
    closeSync(log);
    this.exited = new Promise((res) => this.proc.once('exit', (code, sig) => res({ code, sig })));
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`server exited ${this.proc.exitCode}:\n${this.log()}`);
      try {
        const r = await fetch(this.base + '/health');
        if (r.status === 200 || r.status === 503) return this;
      } catch { /* not up yet */ }
      await sleep(50);
    }
    throw new Error(`server did not answer within 20 s:\n${this.log()}`);
  }

  log() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGTERM, then the same binary again on the same port and directory (database). */
  async restart() {
    await this.stop({ keep: true });
    return this.start();
  }

  /** SIGTERM; asserts exit 0 and a clean sanitizer log. */
  async stop({ keep = false } = {}) {
    if (!this.proc) return;
    const proc = this.proc;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30000);
    const { code, sig } = await this.exited;
    clearTimeout(timer);
    this.proc = null;
    const text = this.log();
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
    for (const m of SANITIZER_MARKS) {
      if (text.includes(m)) throw new Error(`sanitizer report in server log:\n${text}`);
    }
    if (code !== 0) throw new Error(`server exited ${code ?? sig}:\n${text.slice(-4000)}`);
  }

  async admin(method, path, body) {
    const r = await fetch(this.base + path, {
      method,
      headers: { Authorization: `Bearer ${ADMIN_SECRET}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }

  async createApp(name = 'acme') {
    const r = await this.admin('POST', '/internal/apps', { name });
    if (r.status !== 201) throw new Error(`create app: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body; // app_id, api_key, webhook_secret, ...
  }
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

/** A compact HS256 JWT whose payload is the event. */
export function sign(event, secret) {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(event))}`;
  return `${input}.${b64url(createHmac('sha256', secret).update(input).digest())}`;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

/** POSTs one signed webhook (keep-alive); resolves to the parsed 200 body. */
export function sendHook(srv, app, event) {
  const body = Buffer.from(sign(event, app.webhook_secret));
  return new Promise((res, rej) => {
    const req = http.request(`${srv.base}/webhooks/dialpad/${app.app_id}`, {
      method: 'POST', agent,
      headers: { 'Content-Type': 'application/jwt', 'Content-Length': body.length },
    }, (r) => {
      let data = '';
      r.setEncoding('utf8');
      r.on('data', (c) => { data += c; });
      r.on('end', () => (r.statusCode === 200 ? res(JSON.parse(data))
        : rej(new Error(`webhook: ${r.statusCode} ${data}`))));
    });
    req.on('error', rej);
    req.end(body);
  });
}

/** Sends events with `workers` concurrent sequential senders. */
export async function blast(srv, app, events, workers = 4) {
  let i = 0;
  const worker = async () => {
    while (i < events.length) await sendHook(srv, app, events[i++]);
  };
  await Promise.all(Array.from({ length: workers }, worker));
}

// ---- Dialpad events -------------------------------------------------------------------

const CALL = fixture('inbound-answered')[0];
const AGENT = fixture('agent-status')[0];
let ts = 1767628800901;
let callIds = 7100000000000001n;
export const USER_A = '5188674325413888';
export const USER_B = '5188674325413999';

/** A distinct call event (fresh event_timestamp), a fresh call unless callId is given.
 * Ids are sent as decimal strings (the server accepts both; they exceed 2^53). */
export function callEvent(state = 'ringing', { user = USER_A, callId } = {}) {
  const e = structuredClone(CALL);
  e.call_id = String(callId ?? callIds++);
  e.state = state;
  e.event_timestamp = ts++;
  e.target = { ...e.target, id: user };
  if (state === 'hangup' || state === 'missed') e.date_ended = e.event_timestamp;
  return e;
}

export function agentEvent(user = USER_A) {
  const e = structuredClone(AGENT);
  e.event_timestamp = ts++;
  e.target = { ...e.target, id: user };
  return e;
}

/** Waits until pred() is true (polling), or throws after timeoutMs. */
export async function until(pred, timeoutMs = 10000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export { sleep };
