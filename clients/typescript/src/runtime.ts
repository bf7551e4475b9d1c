// The transport, written by hand: JSON-RPC over fetch, same-tick batching, abort, one error class.
import type { EnvelopeErrorCode, ServerErrorCode } from './procedures.gen.js';

/** Codes the client itself gives: the server could not be reached, or answered with no JSON-RPC. */
export type ClientErrorCode = 'NETWORK_ERROR' | 'BAD_RESPONSE';
export type ErrorCode = ServerErrorCode | ClientErrorCode;

/** An invalid params issue: which field (its wire path, as `category.0`), and what is wrong. */
export interface Issue {
  path: string;
  message: string;
  type: string;
}

/** Every failure of a call: a server error (by its data.code), or the client's own. */
export class RpcError<C extends ErrorCode = ErrorCode> extends Error {
  override name = 'RpcError';
  /** NOT_FOUND, CONFLICT, ... (error.data.code), or NETWORK_ERROR / BAD_RESPONSE. */
  readonly code: C;
  /** The JSON-RPC error code (-32004), 0 when the server gave none. */
  readonly rpcCode: number;
  /** The HTTP status of the reply; 0 when there was none. */
  readonly httpStatus: number;
  /** The server's request id, to quote to support; null when there was no reply. */
  readonly requestId: string | null;
  readonly procedure: string;
  /** For BAD_REQUEST on params: each bad field. Empty otherwise. */
  readonly issues: Issue[];
  /** The whole error.data object (CONFLICT may name `existingContactId`, for one). */
  readonly data: Readonly<Record<string, unknown>>;

  constructor(code: C, message: string, procedure: string, extra: Partial<RpcError> = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.procedure = procedure;
    this.rpcCode = extra.rpcCode ?? 0;
    this.httpStatus = extra.httpStatus ?? 0;
    this.requestId = extra.requestId ?? null;
    this.data = extra.data ?? {};
    this.issues = (this.data.issues as Issue[] | undefined) ?? [];
  }
}

/** True when `error` is an RpcError, with `code` when given; narrows `error.code`. */
export function isRpcError<C extends ErrorCode = ErrorCode>(error: unknown, code?: C): error is RpcError<C> {
  return error instanceof RpcError && (code === undefined || error.code === code);
}

export type HeadersHook = () => Record<string, string> | Promise<Record<string, string>>;

export interface ClientOptions {
  /** The /rpc endpoint: `https://api.example.co.uk/rpc`, or `/rpc` on the same origin. */
  url: string;
  /** Called once per HTTP request: return `{ Authorization: 'Bearer nh_...' }`. */
  headers?: HeadersHook;
  /** Another fetch (tests count requests with one). */
  fetch?: typeof fetch;
  /** The most calls one request carries; the server's NURTUREHUB_MAX_BATCH (50). */
  maxBatch?: number;
  /** false: every call is its own request. */
  batch?: boolean;
  /**
   * Most seconds a query waits in all when the server's rate limit refuses it
   * (TOO_MANY_REQUESTS): it is sent again after the `retryAfter` the server names. Mutations
   * are never sent again. 0: never wait. Default 60.
   */
  rateLimitWait?: number;
}

export interface CallOptions {
  /** Aborting rejects this call with the signal's reason; other calls of its batch go on. */
  signal?: AbortSignal;
  /** false: send this call on its own, not in the same-tick batch. */
  batch?: boolean;
}

interface Call {
  id: number;
  method: string;
  params: unknown;
  /** A query: sent again when a rate limit refuses it, for `waited` seconds at most. */
  retry: boolean;
  waited: number;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  signal: AbortSignal | undefined;
  done: boolean;
  onAbort?: () => void;
}

interface Reply {
  id?: unknown;
  result?: unknown;
  error?: { code?: number; message?: string; data?: Record<string, unknown> };
}

export class Transport {
  private queue: Call[] = [];
  private next = 1;
  private readonly maxBatch: number;

  constructor(private readonly options: ClientOptions) {
    this.maxBatch = Math.max(1, options.maxBatch ?? 50);
  }

  call(method: string, params: unknown, options: CallOptions = {}, retry = false): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const { signal } = options;
      if (signal?.aborted) return reject(signal.reason);
      const call: Call = { id: this.next++, method, params, retry, waited: 0, resolve, reject, signal, done: false };
      if (signal) {
        call.onAbort = () => settle(call, undefined, signal.reason);
        signal.addEventListener('abort', call.onAbort, { once: true });
      }
      if (options.batch === false || this.options.batch === false) return void this.send([call]);
      if (this.queue.push(call) === 1) queueMicrotask(() => this.flush());
    });
  }

  /** Whether a query refused by a rate limit is sent again, after the server's `retryAfter`. */
  private retryLater(call: Call, error: NonNullable<Reply['error']>): boolean {
    const after = error.data?.retryAfter;
    if (!call.retry || error.data?.code !== 'TOO_MANY_REQUESTS' || typeof after !== 'number') return false;
    // Up to a second more than asked, so clients refused together do not return in one instant.
    const wait = after + Math.random();
    if (call.waited + wait > (this.options.rateLimitWait ?? 60)) return false;
    call.waited += wait;
    setTimeout(() => {
      if (!call.done) void this.send([call]);
    }, wait * 1000);
    return true;
  }

  private flush(): void {
    const calls = this.queue.filter((call) => !call.done);
    this.queue = [];
    for (let i = 0; i < calls.length; i += this.maxBatch) void this.send(calls.slice(i, i + this.maxBatch));
  }

  private async send(calls: Call[]): Promise<void> {
    // The request is aborted only when every call in it is: one abort never drops the others.
    const controller = new AbortController();
    for (const call of calls) {
      const abort = call.onAbort;
      if (!abort) continue;
      call.onAbort = () => {
        abort();
        if (calls.every((c) => c.done)) controller.abort();
      };
      call.signal?.removeEventListener('abort', abort);
      call.signal?.addEventListener('abort', call.onAbort, { once: true });
    }
    const envelope = (call: Call) => ({ jsonrpc: '2.0', id: call.id, method: call.method, params: call.params ?? {} });
    let status = 0;
    let requestId: string | null = null;
    try {
      const headers = { ...(await this.options.headers?.()), 'Content-Type': 'application/json' };
      const body = JSON.stringify(calls.length === 1 ? envelope(calls[0]!) : calls.map(envelope));
      const doFetch = this.options.fetch ?? fetch;
      const response = await doFetch(this.options.url, { method: 'POST', headers, body, signal: controller.signal });
      status = response.status;
      requestId = response.headers.get('X-Request-Id');
      const text = await response.text();
      const replies = ([] as Reply[]).concat(text ? (JSON.parse(text) as Reply | Reply[]) : []);
      const byId = new Map(replies.map((reply) => [reply.id, reply]));
      const whole = replies.length === 1 && replies[0]!.id == null ? replies[0] : undefined;
      for (const call of calls) {
        const reply = byId.get(call.id) ?? whole;
        if (reply?.error && this.retryLater(call, reply.error)) continue;
        if (reply?.error) settle(call, undefined, toError(call.method, reply.error, status, requestId));
        else if (reply && 'result' in reply) settle(call, reply.result);
        else settle(call, undefined, new RpcError('BAD_RESPONSE', `No reply for ${call.method} (HTTP ${status})`, call.method, { httpStatus: status, requestId }));
      }
    } catch (cause) {
      for (const call of calls) {
        const code = status ? 'BAD_RESPONSE' : 'NETWORK_ERROR';
        const message = status ? `The reply is not JSON-RPC (HTTP ${status})` : `Cannot reach ${this.options.url}`;
        settle(call, undefined, new RpcError(code, message, call.method, { httpStatus: status, requestId, cause }));
      }
    }
  }
}

function settle(call: Call, value: unknown, error?: unknown): void {
  if (call.done) return;
  call.done = true;
  if (call.onAbort) call.signal?.removeEventListener('abort', call.onAbort);
  if (error === undefined) call.resolve(value);
  else call.reject(error);
}

function toError(method: string, error: NonNullable<Reply['error']>, status: number, requestId: string | null): RpcError {
  const data = error.data ?? {};
  const code = (typeof data.code === 'string' ? data.code : 'BAD_RESPONSE') as ServerErrorCode | EnvelopeErrorCode;
  return new RpcError(code, error.message ?? code, method, {
    rpcCode: error.code ?? 0,
    httpStatus: typeof data.httpStatus === 'number' ? data.httpStatus : status,
    requestId: typeof data.requestId === 'string' ? data.requestId : requestId,
    data,
  });
}
