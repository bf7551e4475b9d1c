// The client, written by hand over the generated types: createClient() and the procedure shapes.
import { PAGED, PROCEDURES } from './procedures.gen.js';
import type { EnvelopeErrorCode, NurtureHubClient, Procedures } from './procedures.gen.js';
import { isRpcError, Transport } from './runtime.js';
import type { CallOptions, ClientErrorCode, ClientOptions, RpcError } from './runtime.js';

export * from './models.gen.js';
export { PROCEDURES } from './procedures.gen.js';
export type { EnvelopeErrorCode, NurtureHubClient, Procedures, ServerErrorCode } from './procedures.gen.js';
export { isRpcError, RpcError } from './runtime.js';
export type { CallOptions, ClientErrorCode, ClientOptions, ErrorCode, HeadersHook, Issue } from './runtime.js';

export type ProcedureName = keyof Procedures;
export type Params<N extends ProcedureName> = Procedures[N]['params'];
export type Result<N extends ProcedureName> = Procedures[N]['result'];
/** The codes a call of `N` can fail with: its own, the envelope's and the client's. */
export type ErrorCodeOf<N extends ProcedureName> = Procedures[N]['errors'] | EnvelopeErrorCode | ClientErrorCode;

/** Params are optional when the procedure needs none. */
type Args<N extends ProcedureName> = {} extends Params<N>
  ? [params?: Params<N>, options?: CallOptions]
  : [params: Params<N>, options?: CallOptions];
type PageParams<N extends ProcedureName> = Omit<Params<N>, 'cursor'>;
type PageArgs<N extends ProcedureName> = {} extends PageParams<N>
  ? [params?: PageParams<N>, options?: CallOptions]
  : [params: PageParams<N>, options?: CallOptions];
/** TanStack Query's key: `['contacts', 'list', params]`, so `['contacts']` matches a namespace. */
export type QueryKey = readonly unknown[];

interface Procedure<N extends ProcedureName> {
  /** Narrows `error` to the codes this procedure can fail with: `if (p.isError(e, 'NOT_FOUND'))`. */
  isError<C extends ErrorCodeOf<N>>(error: unknown, code?: C): error is RpcError<C>;
}

export interface QueryProcedure<N extends ProcedureName> extends Procedure<N> {
  query(...args: Args<N>): Promise<Result<N>>;
  queryKey(params?: Params<N>): QueryKey;
  /** `useQuery(client.contacts.get.queryOptions({ id }))`: a plain object, no TanStack import. */
  queryOptions(...args: Args<N>): {
    queryKey: QueryKey;
    queryFn: (context: { signal: AbortSignal }) => Promise<Result<N>>;
  };
}

export interface PagedQueryProcedure<N extends ProcedureName> extends QueryProcedure<N> {
  /** `useInfiniteQuery(...)`: pages follow `nextCursor`. */
  infiniteQueryOptions(...args: PageArgs<N>): {
    queryKey: QueryKey;
    queryFn: (context: { signal: AbortSignal; pageParam: string | null }) => Promise<Result<N>>;
    initialPageParam: string | null;
    getNextPageParam: (lastPage: Result<N>) => string | null;
  };
  /** Every page, fetched as the loop asks for it. */
  pages(...args: PageArgs<N>): AsyncGenerator<Result<N>, void, undefined>;
  /** Every item of every page. */
  items(...args: PageArgs<N>): AsyncGenerator<Procedures[N]['item'], void, undefined>;
}

export interface MutationProcedure<N extends ProcedureName> extends Procedure<N> {
  /** Sent once: the client never retries (not even on TOO_MANY_REQUESTS), and an abort never undoes what the server committed. */
  mutate(...args: Args<N>): Promise<Result<N>>;
  /** `useMutation(client.contacts.create.mutationOptions())`. */
  mutationOptions(options?: CallOptions): {
    mutationKey: QueryKey;
    mutationFn: (params: Params<N>) => Promise<Result<N>>;
  };
}

interface Page {
  nextCursor?: string | null;
  items?: unknown[];
}

/** A client for the procedures: `client.contacts.list.query({ category: ['seller'] })`. */
export function createClient(options: ClientOptions): NurtureHubClient {
  const transport = new Transport(options);
  const root: Record<string, any> = {};
  for (const [name, kind] of Object.entries(PROCEDURES)) {
    const path = name.split('.');
    let node = root;
    for (const part of path.slice(0, -1)) node = node[part] ??= {};
    node[path[path.length - 1]!] = build(transport, name, path, kind, PAGED.includes(name));
  }
  return root as NurtureHubClient;
}

function build(transport: Transport, name: string, path: string[], kind: string, paged: boolean) {
  // Queries are sent again when a rate limit refuses them; mutations never are.
  const call = (params?: any, options?: CallOptions) => transport.call(name, params, options, kind === 'query');
  const key = (params?: unknown) => (params === undefined ? path : [...path, params]);
  const withSignal = (options: CallOptions | undefined, signal: AbortSignal) => ({ ...options, signal });
  const pages = async function* (params?: object, options?: CallOptions) {
    let cursor: string | null | undefined = null;
    do {
      const page = (await call({ ...params, cursor }, options)) as Page;
      yield page;
      cursor = page.nextCursor;
    } while (cursor);
  };
  if (kind === 'mutation') {
    return {
      isError: isRpcError,
      mutate: call,
      mutationOptions: (options?: CallOptions) => ({ mutationKey: path, mutationFn: (params: unknown) => call(params, options) }),
    };
  }
  return {
    isError: isRpcError,
    query: call,
    queryKey: key,
    queryOptions: (params?: unknown, options?: CallOptions) => ({
      queryKey: key(params ?? {}),
      queryFn: ({ signal }: { signal: AbortSignal }) => call(params, withSignal(options, signal)),
    }),
    ...(paged && {
      infiniteQueryOptions: (params?: object, options?: CallOptions) => ({
        queryKey: [...key(params ?? {}), 'infinite'],
        queryFn: ({ signal, pageParam }: { signal: AbortSignal; pageParam: string | null }) =>
          call({ ...params, cursor: pageParam }, withSignal(options, signal)),
        initialPageParam: null,
        getNextPageParam: (last: Page) => last.nextCursor ?? null,
      }),
      pages,
      items: async function* (params?: object, options?: CallOptions) {
        for await (const page of pages(params, options)) yield* page.items ?? [];
      },
    }),
  };
}
