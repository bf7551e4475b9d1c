// The generated client against the real server (started by tests/test_typescript_client.py, which
// passes its URL and tokens in the environment). Every procedure is called at least once.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { InfiniteQueryObserver, MutationObserver, QueryClient } from '@tanstack/query-core';
import { createClient, isRpcError, PROCEDURES, RpcError, type ClientOptions } from '../src/index.js';
import { Transport } from '../src/runtime.js';

const URL = required('NH_RPC_URL');
const MEMBER = required('NH_MEMBER_TOKEN');
const ADMIN = required('NH_ADMIN_TOKEN');
const called = new Set<string>();

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/test_typescript_client.py`);
  return value;
}

/** A client with a fetch that counts requests and records what each carried. */
function counted(token: string | null, options: Partial<ClientOptions> = {}) {
  const requests: { calls: string[]; signal: AbortSignal | null | undefined }[] = [];
  let headerCalls = 0;
  const client = createClient({
    url: URL,
    headers: (): Record<string, string> => {
      headerCalls += 1;
      return token ? { Authorization: `Bearer ${token}` } : {};
    },
    fetch: async (input, init) => {
      const body = JSON.parse(String(init?.body)) as { method: string } | { method: string }[];
      const calls = ([] as { method: string }[]).concat(body).map((c) => c.method);
      calls.forEach((name) => called.add(name));
      requests.push({ calls, signal: init?.signal });
      return fetch(input, init);
    },
    ...options,
  });
  return { client, requests, headerCalls: () => headerCalls };
}

const member = counted(MEMBER).client;
const admin = counted(ADMIN).client;
const marker = `ts${randomUUID().slice(0, 8)}`;

async function rejection(promise: Promise<unknown>): Promise<RpcError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RpcError, `not an RpcError: ${String(error)}`);
    return error;
  }
  assert.fail('the call succeeded but should have failed');
}

describe('every procedure', () => {
  test('auth tokens', async () => {
    const created = await admin.auth.createToken.mutate({ email: `${marker}-t@example.co.uk`, role: 'member', name: 'ts' });
    assert.ok(created.token.startsWith('nh_'));
    const listed = await admin.auth.listTokens.query({ userId: created.userId });
    assert.deepEqual(listed.items.map((t) => t.id), [created.id]);
    const mine = await member.auth.myTokens.query();
    assert.equal(mine.items.filter((t) => t.current).length, 1);
    const revoked = await admin.auth.revokeToken.mutate({ id: created.id });
    assert.equal(revoked.id, created.id);
  });

  test('auth and contacts', async () => {
    const me = await member.auth.whoami.query();
    assert.equal(me.role, 'member');
    const providers = await member.contacts.listCrmProviders.query();
    assert.deepEqual(providers.map((p) => p.id).sort(), ['agentos', 'alto', 'loop', 'reapit', 'street']);

    const created = await member.contacts.create.mutate({
      firstName: 'Ada',
      lastName: marker,
      email: `${marker}@example.co.uk`,
      consentStatus: 'granted',
      category: 'seller',
    });
    assert.equal(created.group, 'prospect');
    assert.equal(created.activeAssignment?.category, 'seller');
    const got = await member.contacts.get.query({ id: created.id });
    assert.equal(got.email, `${marker}@example.co.uk`);
    const updated = await member.contacts.update.mutate({ id: created.id, postcode: 'sw1a1aa' });
    assert.equal(updated.postcode, 'SW1A 1AA');
    const assigned = await member.contacts.assignCategory.mutate({ id: created.id, category: 'active_seller' });
    assert.equal(assigned.group, 'existing_client');
    const history = await member.contacts.getCategoryHistory.query({ id: created.id });
    assert.deepEqual(history.map((a) => a.category), ['active_seller', 'seller']);
    assert.equal(history[1]!.supersededAt, history[0]!.assignedAt);

    for (const i of [1, 2, 3]) await member.contacts.create.mutate({ firstName: `P${i}`, lastName: marker });
    const imported = await member.contacts.import.mutate({ rows: [{ firstName: 'P4', lastName: marker }], source: 'manual' });
    assert.equal(imported.created, 1);
    const first = await member.contacts.list.query({ search: marker, limit: 2 });
    assert.equal(first.items.length, 2);
    assert.ok(first.nextCursor);
    const names: string[] = [];
    for await (const contact of member.contacts.list.items({ search: marker, limit: 2 })) names.push(contact.firstName ?? '');
    assert.deepEqual(names.sort(), ['Ada', 'P1', 'P2', 'P3', 'P4']);

    const consent = await member.contacts.getConsent.query({ id: created.id });
    assert.equal(consent.status, 'granted');
    assert.deepEqual(consent.history.map((e) => e.channel), ['overall']);

    const exported = await admin.contacts.export.mutate({ id: created.id });
    assert.equal(exported.formatVersion, 1);
    assert.equal(exported.contact.email, `${marker}@example.co.uk`);

    const erased = await admin.contacts.delete.mutate({ id: created.id });
    assert.equal(erased.removed.contacts, 1);
    assert.deepEqual(erased.suppressed, ['email']);
    const check = await member.contacts.checkSuppression.query({ email: `${marker}@example.co.uk` });
    assert.deepEqual(check.suppressed, ['email']);
    const lifted = await admin.contacts.liftSuppression.mutate({ email: `${marker}@example.co.uk`, reason: 'consented again' });
    assert.deepEqual(lifted.lifted, ['email']);
    const log = await admin.audit.list.query({ action: 'contacts.liftSuppression', limit: 1 });
    assert.deepEqual(log.items.map((e) => e.changedFields), [['email']]);
  });

  test('crm', async () => {
    const connection = await admin.crm.connect.mutate({ providerId: 'reapit', credentials: { customerId: 'SBOX' } });
    assert.equal(connection.status, 'pending');
    assert.ok(!('credentials' in connection));
    const listed = await member.crm.listConnections.query();
    assert.deepEqual(listed.map((c) => c.id), [connection.id]);
    const contact = await member.contacts.create.mutate({ firstName: 'Crm', crmConnectionId: connection.id, externalId: `X-${marker}` });
    const enqueued = await member.crm.enqueueWriteback.mutate({
      contactId: contact.id,
      eventType: 'email_opened',
      payload: { subject: 'Spring valuation', openedAt: '2026-03-20T09:15:00Z' },
    });
    assert.equal(enqueued.entries.length, 1);
    const queue = await admin.crm.listWriteback.query({ contactId: contact.id });
    assert.deepEqual(queue.items.map((e) => e.id), [enqueued.entries[0]!.id]);
    const retry = await rejection(admin.crm.retryWriteback.mutate({ id: enqueued.entries[0]!.id }));
    assert.equal(retry.code, 'CONFLICT'); // only a failed entry can be retried
    const tried = await admin.crm.testConnection.query({ connectionId: connection.id });
    assert.ok(['ok', 'refused', 'failed', 'not_checked'].includes(tried.outcome));
    const status = await member.crm.getSyncStatus.query({ connectionId: connection.id });
    assert.equal(status.syncSupported, true);
    const requested = await admin.crm.syncNow.mutate({ connectionId: connection.id, stream: 'contacts' });
    assert.ok(requested.nextSyncAt);
    assert.deepEqual(await member.crm.listSyncRuns.query({ connectionId: connection.id }), []);
    assert.deepEqual(await admin.crm.listWebhookEvents.query({ connectionId: connection.id }), []);
    const replay = await rejection(admin.crm.replayWebhookEvent.mutate({ id: randomUUID() }));
    assert.equal(replay.code, 'NOT_FOUND');
    const paused = await admin.crm.updateConnection.mutate({ connectionId: connection.id, paused: true });
    assert.equal(paused.status, 'paused');
    const gone = await admin.crm.disconnect.mutate({ connectionId: connection.id });
    assert.equal(gone.cancelledEvents, 1);
  });
});

describe('batching', () => {
  test('ten queries made in one tick go as one request', async () => {
    const { client, requests, headerCalls } = counted(MEMBER);
    const results = await Promise.all(Array.from({ length: 10 }, () => client.auth.whoami.query()));
    assert.equal(results.length, 10);
    assert.ok(results.every((me) => me.role === 'member'));
    assert.equal(requests.length, 1);
    assert.equal(requests[0]!.calls.length, 10);
    assert.equal(headerCalls(), 1); // the headers hook runs per request, not per call
  });

  test('a batch holds at most maxBatch calls', async () => {
    const { client, requests } = counted(MEMBER);
    await Promise.all(Array.from({ length: 120 }, () => client.contacts.listCrmProviders.query()));
    assert.deepEqual(requests.map((r) => r.calls.length), [50, 50, 20]);
  });

  test('calls in one batch succeed and fail on their own', async () => {
    const [me, missing] = await Promise.allSettled([
      member.auth.whoami.query(),
      member.contacts.get.query({ id: randomUUID() }),
    ]);
    assert.equal(me.status, 'fulfilled');
    assert.equal(missing.status, 'rejected');
    assert.ok(isRpcError(missing.reason, 'NOT_FOUND'));
  });

  test('batch: false sends a call on its own', async () => {
    const { client, requests } = counted(MEMBER);
    await Promise.all([client.auth.whoami.query(), client.auth.whoami.query(undefined, { batch: false })]);
    assert.equal(requests.length, 2);
  });
});

describe('aborting', () => {
  test('aborting one call of a sent batch rejects that call only', async () => {
    const { client, requests } = counted(MEMBER);
    const controller = new AbortController();
    const calls = [
      client.auth.whoami.query(),
      client.contacts.listCrmProviders.query(undefined, { signal: controller.signal }),
      client.crm.listConnections.query(),
    ] as const;
    await Promise.resolve(); // the batch is flushed in a microtask
    await Promise.resolve();
    controller.abort();
    const [me, aborted, connections] = await Promise.allSettled(calls);
    assert.equal(me.status, 'fulfilled');
    assert.equal(connections.status, 'fulfilled');
    assert.equal(aborted.status, 'rejected');
    assert.equal((aborted as PromiseRejectedResult).reason.name, 'AbortError');
    assert.equal(requests.length, 1);
    assert.equal(requests[0]!.signal?.aborted, false); // the request itself went on
  });

  test('aborting every call of a request aborts the request', async () => {
    const { client, requests } = counted(MEMBER);
    const controller = new AbortController();
    const calls = [1, 2].map(() => client.auth.whoami.query(undefined, { signal: controller.signal }));
    await Promise.resolve();
    await Promise.resolve();
    controller.abort();
    for (const result of await Promise.allSettled(calls)) assert.equal(result.status, 'rejected');
    assert.equal(requests[0]!.signal?.aborted, true);
  });

  test('a call aborted before it is sent is never sent', async () => {
    const { client, requests } = counted(MEMBER);
    const controller = new AbortController();
    const aborted = client.auth.whoami.query(undefined, { signal: controller.signal });
    const kept = client.contacts.listCrmProviders.query();
    controller.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    await kept;
    assert.deepEqual(requests.map((r) => r.calls), [['contacts.listCrmProviders']]);
  });
});

describe('errors', () => {
  test('UNAUTHORIZED without a token, FORBIDDEN for a member on an admin procedure', async () => {
    const anonymous = counted(null).client;
    const error = await rejection(anonymous.auth.whoami.query());
    assert.equal(error.code, 'UNAUTHORIZED');
    assert.equal(error.httpStatus, 401);
    assert.equal(error.rpcCode, -32001);
    assert.match(error.requestId ?? '', /^[0-9a-f]{32}$/);
    const forbidden = await rejection(member.contacts.delete.mutate({ id: randomUUID() }));
    assert.equal(forbidden.code, 'FORBIDDEN');
    assert.ok(member.contacts.delete.isError(forbidden, 'FORBIDDEN'));
  });

  test('NOT_FOUND and CONFLICT, narrowed by code', async () => {
    const missing = await rejection(member.contacts.get.query({ id: randomUUID() }));
    assert.ok(member.contacts.get.isError(missing, 'NOT_FOUND'));
    assert.equal(missing.procedure, 'contacts.get');
    const email = `dup-${marker}@example.co.uk`;
    const first = await member.contacts.create.mutate({ firstName: 'One', email });
    const conflict = await rejection(member.contacts.create.mutate({ firstName: 'Two', email }));
    assert.ok(isRpcError(conflict, 'CONFLICT'));
    assert.equal(conflict.data.existingContactId, first.id);
  });

  test('BAD_REQUEST names each bad field in issues', async () => {
    const bad = await rejection(
      member.contacts.list.query({ category: ['sellr' as never], limit: 1000 }),
    );
    assert.equal(bad.code, 'BAD_REQUEST');
    assert.equal(bad.rpcCode, -32602);
    assert.deepEqual(bad.issues.map((issue) => issue.path).sort(), ['category.0', 'limit']);
  });

  test('METHOD_NOT_FOUND and PAYLOAD_TOO_LARGE', async () => {
    // The generated client has no unknown procedure to call, so the runtime sends one itself.
    const transport = new Transport({ url: URL, headers: () => ({ Authorization: `Bearer ${MEMBER}` }) });
    const unknown = await rejection(transport.call('contacts.remove', { id: randomUUID() }));
    assert.equal(unknown.code, 'METHOD_NOT_FOUND');
    assert.equal(unknown.rpcCode, -32601);
    const tooMany = counted(MEMBER, { maxBatch: 60 }).client; // more than the server's 50
    const results = await Promise.allSettled(Array.from({ length: 55 }, () => tooMany.auth.whoami.query()));
    for (const result of results) {
      assert.equal(result.status, 'rejected');
      assert.ok(isRpcError((result as PromiseRejectedResult).reason, 'PAYLOAD_TOO_LARGE'));
    }
  });

  test('NETWORK_ERROR when nothing answers; BAD_RESPONSE when the reply is not JSON-RPC', async () => {
    const nowhere = createClient({ url: 'http://127.0.0.1:9/rpc' });
    const down = await rejection(nowhere.auth.whoami.query());
    assert.equal(down.code, 'NETWORK_ERROR');
    assert.equal(down.httpStatus, 0);
    const wrong = createClient({ url: URL.replace(/\/rpc$/, '/healthz') });
    const odd = await rejection(wrong.auth.whoami.query());
    assert.equal(odd.code, 'BAD_RESPONSE');
    assert.equal(odd.httpStatus, 405);
  });

  test('a mutation is sent once, never retried', async () => {
    let attempts = 0;
    const flaky = createClient({
      url: URL,
      fetch: async () => {
        attempts += 1;
        throw new TypeError('fetch failed');
      },
    });
    const error = await rejection(flaky.contacts.create.mutate({ firstName: 'Once' }));
    assert.equal(error.code, 'NETWORK_ERROR');
    assert.equal(attempts, 1);
  });

  /** The server's answer to calls its rate limit refuses (as server/rpc.py builds it), for the
   * first `refusals` requests; the real server's after that. */
  function limited(refusals: number, options: Partial<ClientOptions> = {}) {
    const sent: number[] = [];
    const client = createClient({
      url: URL,
      headers: () => ({ Authorization: `Bearer ${MEMBER}` }),
      fetch: async (input, init) => {
        sent.push(Date.now());
        if (sent.length > refusals) return fetch(input, init);
        const calls = ([] as { id: number }[]).concat(JSON.parse(String(init?.body)));
        const data = { code: 'TOO_MANY_REQUESTS', httpStatus: 429, path: null, requestId: 'r', retryAfter: 0, policy: 'token' };
        const replies = calls.map((c) => ({ jsonrpc: '2.0', id: c.id, error: { code: -32029, message: 'Too many requests', data } }));
        const body = JSON.stringify(calls.length === 1 ? replies[0] : replies);
        return new Response(body, { status: 429, headers: { 'Retry-After': '0', 'Content-Type': 'application/json' } });
      },
      ...options,
    });
    return { client, sent };
  }

  test('a query refused by the rate limit is sent again after retryAfter', async () => {
    const { client, sent } = limited(2);
    const me = await client.auth.whoami.query();
    assert.equal(me.role, 'member');
    assert.equal(sent.length, 3);
  });

  test('a mutation refused by the rate limit is not sent again; nor a query past rateLimitWait', async () => {
    const mutation = limited(1);
    const refused = await rejection(mutation.client.contacts.create.mutate({ firstName: 'Paced' }));
    assert.equal(refused.code, 'TOO_MANY_REQUESTS');
    assert.equal(refused.data.retryAfter, 0);
    assert.equal(mutation.sent.length, 1);
    const impatient = limited(1, { rateLimitWait: 0 });
    assert.equal((await rejection(impatient.client.auth.whoami.query())).code, 'TOO_MANY_REQUESTS');
    assert.equal(impatient.sent.length, 1);
  });
});

describe('TanStack Query', () => {
  test('queryOptions, infiniteQueryOptions and mutationOptions work with query-core as they are', async () => {
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    const mutation = new MutationObserver(queryClient, member.contacts.create.mutationOptions());
    const created = await mutation.mutate({ firstName: 'Tan', lastName: `${marker}tq` });
    const detail = await queryClient.fetchQuery(member.contacts.get.queryOptions({ id: created.id }));
    assert.equal(detail.id, created.id);
    for (const i of [1, 2]) await member.contacts.create.mutate({ firstName: `Tq${i}`, lastName: `${marker}tq` });
    const observer = new InfiniteQueryObserver(queryClient, member.contacts.list.infiniteQueryOptions({ search: `${marker}tq`, limit: 2 }));
    const firstPage = await observer.refetch();
    assert.equal(firstPage.data?.pages[0]?.items.length, 2);
    assert.equal(observer.getCurrentResult().hasNextPage, true);
    const both = await observer.fetchNextPage();
    assert.equal(both.data?.pages.flatMap((p) => p.items).length, 3);
    assert.equal(both.hasNextPage, false);
    assert.deepEqual(member.contacts.list.queryKey({ limit: 2 }), ['contacts', 'list', { limit: 2 }]);
    queryClient.clear();
  });
});

after(() => {
  // Every procedure of the registry went over the wire at least once, through the client.
  const missing = Object.keys(PROCEDURES).filter((name) => !called.has(name));
  assert.deepEqual(missing, [], `procedures never called: ${missing.join(', ')}`);
});
