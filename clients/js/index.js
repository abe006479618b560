// cti-server client: the resumable WebSocket event stream and thin REST helpers.
//
// An ES module with no dependencies. Works in browsers and in Node >= 18 (global
// fetch; Node 22's global WebSocket, or pass the `ws` package's constructor as
// `WebSocket`). Types: index.d.ts. The contract it follows is docs/API.md of the
// cti-server repository ("Events" and "WebSocket stream").

/** Close codes after which reconnecting cannot help: the credentials were revoked
 * or expired (4001) or the app was deactivated (4003). */
export const FATAL_CLOSE_CODES = Object.freeze([4001, 4003]);

/** An error answered by the server (`{"error": code, "message": text}`), or a
 * fatal stream condition (code `unauthorized`, `forbidden`, `closed`). */
export class CtiError extends Error {
  constructor(message, { status = 0, code = 'error', requestId = null, closeCode = null } = {}) {
    super(message);
    this.name = 'CtiError';
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.closeCode = closeCode;
  }
}

function trimBase(url) {
  return String(url).replace(/\/+$/, '');
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, Array.isArray(v) ? v.join(',') : String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Thin helpers for the tenant REST API. Every method returns the parsed JSON body
 * or throws a CtiError carrying the server's status, error code and X-Request-Id.
 */
export class CtiApi {
  /**
   * @param {object} opts
   * @param {string} opts.baseUrl   e.g. "https://cti.example.com"
   * @param {string} [opts.apiKey]  sent as X-API-Key (omit in a browser that gets
   *                                tickets from its own backend)
   * @param {Record<string,string>} [opts.headers]  extra headers on every request
   * @param {typeof fetch} [opts.fetch]
   */
  constructor({ baseUrl, apiKey, headers, fetch: f } = {}) {
    if (!baseUrl) throw new TypeError('baseUrl is required');
    this.baseUrl = trimBase(baseUrl);
    this.apiKey = apiKey || null;
    this.headers = { ...(headers || {}) };
    this._fetch = f || globalThis.fetch?.bind(globalThis);
    if (!this._fetch) throw new TypeError('no fetch: pass opts.fetch');
  }

  /** True when requests carry credentials (an API key or an extra header). */
  get hasCredentials() {
    return Boolean(this.apiKey) || Object.keys(this.headers).length > 0;
  }

  /** Any request; `body` is sent as JSON. */
  async request(method, path, { params, body, signal } = {}) {
    const headers = { Accept: 'application/json', ...this.headers };
    if (this.apiKey) headers['X-API-Key'] = this.apiKey;
    const init = { method, headers, signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await this._fetch(this.baseUrl + path + query(params), init);
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) {
      const code = (json && json.error) || `http_${res.status}`;
      const msg = (json && json.message) || `${method} ${path}: HTTP ${res.status}`;
      throw new CtiError(msg, { status: res.status, code, requestId: res.headers.get('x-request-id') });
    }
    return json;
  }

  health() { return this.request('GET', '/health'); }

  /** GET /api/calls: filters status, state, outcome, direction, dialpad_user_id,
   * crm_user_id, number, from, to, root_only, limit, cursor. */
  listCalls(params) { return this.request('GET', '/api/calls', { params }); }
  activeCalls(params) { return this.request('GET', '/api/calls/active', { params }); }
  getCall(callId) { return this.request('GET', `/api/calls/${encodeURIComponent(callId)}`); }

  /** GET /api/screen-pop?number= */
  screenPop(number) { return this.request('GET', '/api/screen-pop', { params: { number } }); }

  /** GET /api/events?since=&limit= → {data, next_since}. */
  events({ since = 0, limit } = {}) {
    return this.request('GET', '/api/events', { params: { since, limit } });
  }

  /** Every event after `since` up to now, page by page (an async iterator of events). */
  async *eventsSince(since = 0, { limit = 500, until = Infinity } = {}) {
    let cur = since;
    for (;;) {
      const page = await this.events({ since: cur, limit });
      for (const ev of page.data) {
        if (ev.seq > until) return;
        yield ev;
      }
      if (!page.data.length || page.next_since <= cur || page.next_since >= until) return;
      cur = page.next_since;
    }
  }

  listVoicemails(params) { return this.request('GET', '/api/voicemails', { params }); }
  getVoicemail(id) { return this.request('GET', `/api/voicemails/${encodeURIComponent(id)}`); }
  listMessages(params) { return this.request('GET', '/api/messages', { params }); }
  getMessage(id) { return this.request('GET', `/api/messages/${encodeURIComponent(id)}`); }

  /** POST /api/ws-ticket → {ticket, expires_at}: one connection within 60 s. */
  wsTicket() { return this.request('POST', '/api/ws-ticket'); }

  /** Every item of a paged list: `api.paginate(p => api.listCalls(p), {status: 'ended'})`. */
  async *paginate(list, params = {}) {
    let cursor;
    do {
      const page = await list({ ...params, cursor });
      yield* page.data;
      cursor = page.next_cursor;
    } while (cursor);
  }
}

/** Does `ev` pass the stream filters (as the server applies them)? */
export function matchesFilters(ev, filters) {
  if (!filters) return true;
  const types = normTypes(filters.types);
  if (types && types.length && !types.includes(ev.event)) return false;
  const who = (ev.call && typeof ev.call === 'object') ? ev.call : ev.message;
  if (filters.dialpad_user_id != null && filters.dialpad_user_id !== '') {
    const uid = (who && who.dialpad_user_id) || (ev.data && ev.data.target && ev.data.target.id);
    if (String(uid) !== String(filters.dialpad_user_id)) return false;
  }
  if (filters.crm_user_id != null && filters.crm_user_id !== '') {
    if (!who || who.crm_user_id !== filters.crm_user_id) return false;
  }
  return true;
}

function normTypes(t) {
  if (t == null) return null;
  return Array.isArray(t) ? t : String(t).split(',').filter(Boolean);
}

const WS_OPEN = 1;

/**
 * The event stream: connects (API key header or ticket), resumes with the last
 * seq after any drop (exponential backoff with full jitter), re-syncs through
 * GET /api/events after a `reset`, pings, and never delivers an event twice or
 * out of order. Stops (and emits `error`, then `closed`) on 4001/4003 or when
 * the credentials are refused.
 *
 * Events (client.on(name, fn) returns an unsubscribe function):
 *   event       (ev)               every event, once, in seq order
 *   hello       (msg)              each connection's hello
 *   reset       ({seq, from, resynced, error?})
 *   state       (state)            'connecting' | 'open' | 'reconnecting' | 'closed'
 *   reconnecting({attempt, delayMs, code, reason})
 *   error       (err)              CtiError; fatal when err.fatal
 *   closed      ({code, reason, error?})   the client stopped for good
 *   message     (msg)              any other server message (pong, subscribed, error)
 */
export class CtiStream {
  constructor(opts = {}) {
    const {
      baseUrl, apiKey, headers, fetch: f, api,
      WebSocket: WS, auth, getTicket, since, filters,
      backoff = {}, pingIntervalMs = 25000, pongTimeoutMs = 10000,
      resync = true, random = Math.random, setTimeout: st, clearTimeout: ct,
    } = opts;
    this.api = api || new CtiApi({ baseUrl, apiKey, headers, fetch: f });
    this.baseUrl = this.api.baseUrl;
    this.WebSocket = WS || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError('no WebSocket: pass opts.WebSocket (e.g. the ws package)');
    // 'header': X-API-Key on the upgrade (Node, with the ws package); 'ticket':
    // POST /api/ws-ticket then ?ticket= (browsers: they cannot set headers).
    this.auth = auth || 'ticket';
    if (this.auth !== 'header' && this.auth !== 'ticket') throw new TypeError("auth must be 'header' or 'ticket'");
    if (this.auth === 'header' && !this.api.apiKey) throw new TypeError("auth 'header' needs apiKey");
    if (this.auth === 'ticket' && !getTicket && !this.api.hasCredentials)
      throw new TypeError('ticket auth needs apiKey (or headers) or getTicket()');
    this.getTicket = getTicket || (async () => (await this.api.wsTicket()).ticket);
    /** The seq of the last event delivered (or the hello's seq on a fresh start). */
    this.lastSeq = since == null ? null : Number(since);
    this.filters = { ...(filters || {}) };
    this.backoff = { initialMs: 500, maxMs: 30000, factor: 2, ...backoff };
    this.pingIntervalMs = pingIntervalMs;
    this.pongTimeoutMs = pongTimeoutMs;
    this.resync = resync;
    this.random = random;
    this._setTimeout = st || globalThis.setTimeout.bind(globalThis);
    this._clearTimeout = ct || globalThis.clearTimeout.bind(globalThis);
    this.state = 'idle';
    this.attempt = 0;
    this.ws = null;
    this._listeners = new Map();
    this._stopped = false;
    this._timer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._pongWaiters = [];
    this._syncing = null; // {buffer: []} while a reset re-sync runs
    this._gen = 0;
  }

  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }

  _emit(name, arg) {
    const set = this._listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (e) {
        if (name !== 'error') this._emit('error', e);
      }
    }
  }

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('state', s);
  }

  /** Starts (or restarts after close()) the stream. */
  connect() {
    this._stopped = false;
    this._open();
    return this;
  }

  /** Stops for good (no reconnect). */
  close(code = 1000, reason = 'client closing') {
    this._stop({ code, reason });
  }

  /** Sends {"type":"ping"}; resolves on the pong (rejects after pongTimeoutMs). */
  ping() {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WS_OPEN) return reject(new CtiError('not connected', { code: 'closed' }));
      const w = { resolve, reject, timer: null };
      w.timer = this._setTimeout(() => {
        this._pongWaiters = this._pongWaiters.filter((x) => x !== w);
        reject(new CtiError('no pong', { code: 'timeout' }));
      }, this.pongTimeoutMs);
      this._pongWaiters.push(w);
      this.ws.send(JSON.stringify({ type: 'ping' }));
    });
  }

  /** Changes the filters (types, dialpad_user_id, crm_user_id); kept across reconnects.
   * A key set to null or '' clears that filter. */
  subscribe(filters) {
    this.filters = { ...this.filters, ...filters };
    if (this.ws && this.ws.readyState === WS_OPEN) {
      const msg = { type: 'subscribe' };
      for (const k of ['types', 'dialpad_user_id', 'crm_user_id']) {
        if (k in filters) msg[k] = k === 'types' ? (normTypes(filters[k]) || []) : (filters[k] ?? '');
      }
      if ('dialpad_user_id' in filters && !filters.dialpad_user_id) msg.dialpad_user_id = 0;
      this.ws.send(JSON.stringify(msg));
    }
  }

  /** The URL of the next connection (with since and filters). */
  url(ticket) {
    const u = new URL(this.baseUrl + '/ws');
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.lastSeq != null) u.searchParams.set('since', String(this.lastSeq));
    const types = normTypes(this.filters.types);
    if (types && types.length) u.searchParams.set('types', types.join(','));
    if (this.filters.dialpad_user_id) u.searchParams.set('dialpad_user_id', String(this.filters.dialpad_user_id));
    if (this.filters.crm_user_id) u.searchParams.set('crm_user_id', String(this.filters.crm_user_id));
    if (ticket) u.searchParams.set('ticket', ticket);
    return u.toString();
  }

  async _open() {
    const gen = ++this._gen;
    this._setState(this.attempt ? 'reconnecting' : 'connecting');
    let ws;
    try {
      let ticket = null;
      if (this.auth === 'ticket') ticket = await this.getTicket();
      if (this._stopped || gen !== this._gen) return;
      const url = this.url(ticket);
      ws = this.auth === 'header'
        ? new this.WebSocket(url, { headers: { 'X-API-Key': this.api.apiKey } })
        : new this.WebSocket(url);
    } catch (err) {
      if (this._stopped || gen !== this._gen) return;
      if (err instanceof CtiError && (err.status === 401 || err.status === 403)) {
        return this._fatal(err);
      }
      this._emit('error', err);
      return this._scheduleReconnect({ code: 0, reason: String(err && err.message) });
    }
    this.ws = ws;
    this._connSince = this.lastSeq;
    this._gotHello = false;
    ws.onmessage = (m) => gen === this._gen && this._onMessage(m.data);
    ws.onerror = () => {}; // the close that follows decides
    ws.onclose = (e) => gen === this._gen && this._onClose(e.code, e.reason || '');
    ws.onopen = () => gen === this._gen && this._startPing();
  }

  _startPing() {
    this._stopPing();
    if (!this.pingIntervalMs) return;
    const ws = this.ws; // a ping chain never outlives its socket
    this._pingTimer = this._setTimeout(() => {
      if (this.ws !== ws) return;
      this.ping().then(() => this.ws === ws && this._startPing(), () => {
        // no answer: the connection is dead even if the socket does not know yet
        if (this.ws === ws) this._abort(ws);
      });
    }, this.pingIntervalMs);
  }

  _stopPing() {
    if (this._pingTimer) this._clearTimeout(this._pingTimer);
    this._pingTimer = null;
  }

  _abort(ws) {
    try {
      if (typeof ws.terminate === 'function') ws.terminate();
      else ws.close(4000, 'no pong');
    } catch { /* already closing */ }
    // a browser socket may take long to report close on a dead link
    this._onClose(1006, 'no pong');
  }

  _onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch {
      return this._emit('error', new CtiError('a message that is not JSON', { code: 'protocol' }));
    }
    switch (msg.type) {
      case 'hello':
        this._gotHello = true;
        this.attempt = 0;
        if (this._connSince == null && this.lastSeq == null) this.lastSeq = msg.seq;
        this._setState('open');
        this._emit('hello', msg);
        return;
      case 'event':
        if (this._syncing) {
          this._syncing.buffer.push(msg);
          return;
        }
        return this._deliver(msg);
      case 'reset':
        return this._onReset(msg);
      case 'pong': {
        const w = this._pongWaiters.shift();
        if (w) {
          this._clearTimeout(w.timer);
          w.resolve(msg);
        }
        this._emit('message', msg);
        return;
      }
      case 'error':
        this._emit('message', msg);
        this._emit('error', new CtiError(msg.message || 'server error', { code: 'server' }));
        return;
      default:
        this._emit('message', msg);
    }
  }

  _deliver(msg) {
    if (this.lastSeq != null && msg.seq <= this.lastSeq) return; // already delivered
    const { type, ...ev } = msg;
    this.lastSeq = msg.seq;
    this._emit('event', ev);
  }

  async _onReset(msg) {
    const from = this.lastSeq == null ? 0 : this.lastSeq;
    const canSync = this.resync && this.api.hasCredentials && this.lastSeq != null && msg.seq > from;
    if (!canSync) {
      this.lastSeq = Math.max(from, msg.seq);
      this._emit('reset', { seq: msg.seq, from, resynced: false });
      return;
    }
    const sync = { buffer: [] };
    this._syncing = sync;
    let error = null;
    try {
      for await (const ev of this.api.eventsSince(from, { until: msg.seq })) {
        if (this._syncing !== sync) return;
        if (matchesFilters(ev, this.filters)) this._deliver({ type: 'event', ...ev });
        else this.lastSeq = Math.max(this.lastSeq, ev.seq);
      }
    } catch (err) {
      error = err; // 410 history_unavailable, or the REST API is away: a real gap
    }
    if (this._syncing !== sync) return;
    this._syncing = null;
    this.lastSeq = Math.max(this.lastSeq ?? 0, msg.seq);
    this._emit('reset', { seq: msg.seq, from, resynced: !error, ...(error ? { error } : {}) });
    for (const m of sync.buffer) this._deliver(m);
  }

  _onClose(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this._gen++;
    this._stopPing();
    this._syncing = null;
    for (const w of this._pongWaiters.splice(0)) {
      this._clearTimeout(w.timer);
      w.reject(new CtiError('connection closed', { code: 'closed' }));
    }
    if (this._stopped) return;
    if (FATAL_CLOSE_CODES.includes(code)) {
      const what = code === 4001 ? 'the API key or ticket stopped working' : 'the app was deactivated';
      return this._fatal(new CtiError(`${what} (close ${code}${reason ? `: ${reason}` : ''})`,
        { code: code === 4001 ? 'unauthorized' : 'forbidden', closeCode: code }));
    }
    if (!this._gotHello && this.auth === 'header') {
      // The handshake failed: a browser-style WebSocket does not say why, so ask
      // the REST API whether the key still works before trying again.
      this.api.events({ since: '9223372036854775807', limit: 1 }).then(
        () => this._scheduleReconnect({ code, reason }),
        (err) => (err instanceof CtiError && (err.status === 401 || err.status === 403))
          ? this._fatal(err) : this._scheduleReconnect({ code, reason }));
      return;
    }
    this._scheduleReconnect({ code, reason });
  }

  /** Full jitter: a random delay in [0, min(max, initial * factor^attempt)];
   * 4008 (too slow: the server names the seq to resume from) reconnects at once. */
  nextDelay(code) {
    if (code === 4008 && this.attempt === 0) return 0;
    const cap = Math.min(this.backoff.maxMs, this.backoff.initialMs * this.backoff.factor ** this.attempt);
    return Math.floor(this.random() * cap);
  }

  _scheduleReconnect({ code, reason }) {
    if (this._stopped) return;
    const delayMs = this.nextDelay(code);
    this.attempt++;
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: this.attempt, delayMs, code, reason });
    this._timer = this._setTimeout(() => {
      this._timer = null;
      if (!this._stopped) this._open();
    }, delayMs);
  }

  _fatal(err) {
    err.fatal = true;
    this._emit('error', err);
    this._stop({ code: err.closeCode ?? 0, reason: err.message, error: err });
  }

  _stop(info) {
    const already = this._stopped && this.state === 'closed';
    this._stopped = true;
    this._gen++;
    if (this._timer) this._clearTimeout(this._timer);
    this._timer = null;
    this._stopPing();
    this._syncing = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(info.code >= 3000 || info.code === 1000 ? info.code : 1000, 'client closing');
      } catch { /* closing already */ }
    }
    for (const w of this._pongWaiters.splice(0)) {
      this._clearTimeout(w.timer);
      w.reject(new CtiError('client closed', { code: 'closed' }));
    }
    if (already) return;
    this._setState('closed');
    this._emit('closed', info);
  }
}

/** Both in one: `const cti = createClient({baseUrl, apiKey, WebSocket})`;
 * `cti.api.screenPop(n)`; `cti.stream.on('event', fn); cti.stream.connect()`. */
export function createClient(opts) {
  const api = new CtiApi(opts);
  const stream = new CtiStream({ ...opts, api });
  return { api, stream };
}
