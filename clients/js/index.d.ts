// Types for the cti-server client (index.js). The shapes follow docs/API.md.

/** Dialpad ids are decimal strings (they can exceed 2^53). Times are ISO 8601 UTC with ms. */
export type Id = string;
export type IsoTime = string;

export interface Party {
  id: Id | null;
  type?: string;
  name?: string;
  email?: string;
  phone?: string;
  office_id?: Id;
  [k: string]: unknown;
}

export interface Voicemail {
  url: string | null;
  transcript: string | null;
  duration_ms: number | null;
  recording_id: Id | null;
}

export interface Call {
  id: Id;
  direction: 'inbound' | 'outbound' | string;
  state: string;
  status: 'ringing' | 'active' | 'on_hold' | 'ended';
  outcome: 'answered' | 'voicemail' | 'missed' | 'unanswered' | null;
  external_number: string | null;
  internal_number: string | null;
  contact: Party | null;
  target: Party | null;
  dialpad_user_id: Id | null;
  crm_user_id: string | null;
  master_call_id: Id | null;
  entry_point_call_id: Id | null;
  operator_call_id: Id | null;
  is_transferred: boolean;
  started_at: IsoTime | null;
  connected_at: IsoTime | null;
  ended_at: IsoTime | null;
  duration_ms: number | null;
  total_duration_ms: number | null;
  talk_time_ms: number | null;
  hold_time_ms: number | null;
  recording_urls: string[];
  voicemail: Voicemail | null;
  updated_at: IsoTime;
}

export interface TimelineEntry {
  state: string;
  event_timestamp: IsoTime;
  received_at: IsoTime;
  late: boolean;
}

export interface CallDetail extends Call {
  legs: Call[];
  timeline: TimelineEntry[];
}

export interface Message {
  id: Id;
  direction: 'inbound' | 'outbound' | string;
  from_number: string | null;
  to_numbers: string[];
  text: string | null;
  status: string | null;
  dialpad_user_id: Id | null;
  contact: { id: Id | null; name?: string; phone_number?: string } | null;
  created_at: IsoTime | null;
}

export interface VoicemailRecord {
  id: Id;
  call_id: Id;
  url: string | null;
  recording_id: Id | null;
  transcript: string | null;
  duration_ms: number | null;
  external_number: string | null;
  dialpad_user_id: Id | null;
  created_at: IsoTime | null;
}

export type EventName =
  | 'call.ringing' | 'call.dialing' | 'call.queued' | 'call.connected' | 'call.resumed'
  | 'call.hold' | 'call.ended' | 'call.missed' | 'call.voicemail'
  | 'voicemail.ready' | 'voicemail.transcribed'
  | 'call.recording' | 'call.transcription' | 'call.recap' | 'call.state'
  | 'sms.received' | 'sms.sent' | 'sms.status'
  | 'contact.changed' | 'agent.status';

/** One normalized event: the same object from GET /api/events and the stream. */
export interface CtiEvent {
  /** Per app, from 1, no gaps. */
  seq: number;
  event: EventName | string;
  /** Dialpad's event_timestamp. */
  occurred_at: IsoTime;
  call_id: Id | null;
  /** Older than the newest call-progress event applied. */
  late: boolean;
  /** The call after applying, or null. */
  call: Call | null;
  /** SMS events only. */
  message?: Message;
  /** call.recap: {kind}; call.state: {state}; contact.changed: {action};
   * agent.status: the Dialpad payload (target, availability_status, ...). */
  data: Record<string, unknown>;
}

export interface Page<T> { data: T[]; next_cursor: string | null; }
export interface EventsPage { data: CtiEvent[]; next_since: number; }

export interface ScreenPop {
  number: string;
  contact: Party | null;
  active_calls: Call[];
  recent_calls: Call[];
  last_voicemail: VoicemailRecord | null;
  last_message: Message | null;
  crm_users: { dialpad_user_id: Id; crm_user_id: string; [k: string]: unknown }[];
}

export interface ListParams { limit?: number; cursor?: string; from?: string; to?: string; }
export interface CallFilters extends ListParams {
  status?: Call['status']; state?: string; outcome?: NonNullable<Call['outcome']>;
  direction?: 'inbound' | 'outbound'; dialpad_user_id?: Id | number; crm_user_id?: string;
  number?: string; root_only?: boolean;
}
export interface VoicemailFilters extends ListParams { dialpad_user_id?: Id | number; number?: string; }
export interface MessageFilters extends ListParams {
  direction?: 'inbound' | 'outbound'; dialpad_user_id?: Id | number; number?: string;
}

export declare class CtiError extends Error {
  /** HTTP status (0 when not from an HTTP answer). */
  status: number;
  /** The server's error code (`not_found`, `unauthorized`, `history_unavailable`, ...),
   * or `unauthorized`/`forbidden` for a 4001/4003 close, `server` for a stream
   * error message, `closed`/`timeout` for ping(). */
  code: string;
  requestId: string | null;
  closeCode: number | null;
  /** Set on errors after which the stream stopped for good. */
  fatal?: boolean;
}

export interface ApiOptions {
  baseUrl: string;
  /** Sent as X-API-Key. A browser should rather get tickets from its own backend. */
  apiKey?: string;
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

export declare class CtiApi {
  constructor(opts: ApiOptions);
  readonly baseUrl: string;
  apiKey: string | null;
  readonly hasCredentials: boolean;
  request<T = unknown>(method: string, path: string,
    opts?: { params?: Record<string, unknown>; body?: unknown; signal?: AbortSignal }): Promise<T>;
  health(): Promise<Record<string, unknown>>;
  listCalls(params?: CallFilters): Promise<Page<Call>>;
  activeCalls(params?: CallFilters): Promise<Page<Call>>;
  getCall(callId: Id): Promise<CallDetail>;
  screenPop(number: string): Promise<ScreenPop>;
  events(opts?: { since?: number; limit?: number }): Promise<EventsPage>;
  /** Every event after `since` (up to `until`), page by page. */
  eventsSince(since?: number, opts?: { limit?: number; until?: number }): AsyncGenerator<CtiEvent>;
  listVoicemails(params?: VoicemailFilters): Promise<Page<VoicemailRecord>>;
  getVoicemail(id: Id): Promise<VoicemailRecord>;
  listMessages(params?: MessageFilters): Promise<Page<Message>>;
  getMessage(id: Id): Promise<Message>;
  wsTicket(): Promise<{ ticket: string; expires_at: IsoTime }>;
  /** Every item of a paged list: `for await (const c of api.paginate((p) => api.listCalls(p), {status: 'ended'}))`. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  paginate<T>(list: (p: any) => Promise<Page<T>>, params?: Record<string, unknown>): AsyncGenerator<T>;
}

export interface StreamFilters {
  types?: (EventName | string)[] | string | null;
  dialpad_user_id?: Id | number | null;
  crm_user_id?: string | null;
}

/** Anything shaped like the WebSocket of browsers (the `ws` package qualifies). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string, opts?: unknown) => WebSocketLike;

export interface StreamOptions extends ApiOptions {
  /** Share a CtiApi (its credentials are used for tickets and re-syncs). */
  api?: CtiApi;
  /** Defaults to globalThis.WebSocket (browsers, Node >= 22); in Node 18/20 pass `ws`. */
  WebSocket?: WebSocketConstructor;
  /** 'ticket' (default; POST /api/ws-ticket, then ?ticket=) or 'header' (X-API-Key on
   * the upgrade: Node with the ws package). */
  auth?: 'ticket' | 'header';
  /** Where tickets come from (e.g. your backend); default: api.wsTicket(). */
  getTicket?: () => Promise<string>;
  /** Start after this seq (replayed first); default: live from now. */
  since?: number;
  filters?: StreamFilters;
  /** Reconnect delay: random in [0, min(maxMs, initialMs * factor^attempt)].
   * Defaults 500 ms, 30 s, 2. */
  backoff?: { initialMs?: number; maxMs?: number; factor?: number };
  /** Client pings (0: none); default 25 s. */
  pingIntervalMs?: number;
  /** No pong within this: the link is dead, reconnect; default 10 s. */
  pongTimeoutMs?: number;
  /** Fill a reset's gap through GET /api/events (needs REST credentials); default true. */
  resync?: boolean;
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (t: unknown) => void;
}

export type StreamState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ResetInfo {
  /** The newest seq when the server sent the reset. */
  seq: number;
  /** The last seq delivered before it. */
  from: number;
  /** True when every event in between was delivered (from GET /api/events). */
  resynced: boolean;
  /** Why it could not be re-synced (e.g. 410 history_unavailable). */
  error?: CtiError;
}

export interface StreamEvents {
  event: CtiEvent;
  hello: { type: 'hello'; app_id: string; seq: number };
  reset: ResetInfo;
  state: StreamState;
  reconnecting: { attempt: number; delayMs: number; code: number; reason: string };
  error: CtiError | Error;
  closed: { code: number; reason: string; error?: CtiError };
  message: { type: string; [k: string]: unknown };
}

export declare const FATAL_CLOSE_CODES: readonly number[];

export declare class CtiStream {
  constructor(opts: StreamOptions);
  readonly api: CtiApi;
  readonly state: StreamState;
  /** The seq of the last event delivered; resumes from it. */
  lastSeq: number | null;
  filters: StreamFilters;
  on<K extends keyof StreamEvents>(name: K, fn: (arg: StreamEvents[K]) => void): () => void;
  connect(): this;
  close(code?: number, reason?: string): void;
  ping(): Promise<{ type: 'pong' }>;
  subscribe(filters: StreamFilters): void;
  url(ticket?: string): string;
  nextDelay(code: number): number;
}

export declare function matchesFilters(ev: CtiEvent, filters?: StreamFilters): boolean;
export declare function createClient(opts: StreamOptions): { api: CtiApi; stream: CtiStream };
