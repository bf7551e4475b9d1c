// Type tests, checked by `tsc --noEmit` (tests/test_typescript_client.py): each @ts-expect-error
// line must be an error, and TypeScript reports the directive itself when it stops being one.
import {
  CATEGORIES,
  createClient,
  isRpcError,
  type Category,
  type Contact,
  type ContactDetail,
  type ContactPage,
  type ErrorCodeOf,
  type Params,
  type Result,
} from '../src/index.js';
import type { QueryClient } from '@tanstack/query-core';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T | void {}

const client = createClient({ url: '/rpc', headers: () => ({ Authorization: 'Bearer nh_x' }) });
const id = '7f9c2b1e-5d0a-4c1e-9a8b-0c1d2e3f4a5b';

export async function calls(): Promise<void> {
  // Right calls compile, and their results are the declared types.
  const page = await client.contacts.list.query({ category: ['seller', 'active_buyer'], limit: 10 });
  expectType<Equal<typeof page, ContactPage>>();
  expectType<Equal<typeof page.items, Contact[]>>();
  expectType<Equal<typeof page.nextCursor, string | null>>();
  const detail = await client.contacts.get.query({ id }, { signal: AbortSignal.timeout(1000) });
  expectType<Equal<typeof detail, ContactDetail>>();
  expectType<Equal<Result<'contacts.get'>, ContactDetail>>();
  expectType<Equal<typeof detail.category, Category | null>>();
  const me = await client.auth.whoami.query(); // no params needed
  expectType<Equal<typeof me.role, 'owner' | 'admin' | 'member'>>();
  await client.contacts.assignCategory.mutate({ id, category: 'active_seller', reason: null });
  const providers = await client.contacts.listCrmProviders.query();
  expectType<Equal<(typeof providers)[number]['authType'], 'api_key' | 'oauth2'>>();
  expectType<Equal<(typeof CATEGORIES)[number], Category>>();
  expectType<Equal<typeof CATEGORIES.length, 12>>();

  // A wrong category.
  // @ts-expect-error 'sellr' is not a Category
  await client.contacts.assignCategory.mutate({ id, category: 'sellr' });
  // @ts-expect-error 'sellr' is not a Category, in a list filter either
  await client.contacts.list.query({ category: ['sellr'] });
  // A missing id.
  // @ts-expect-error id is required
  await client.contacts.get.query({});
  // @ts-expect-error params with a required field cannot be left out
  await client.contacts.delete.mutate();
  // An unknown procedure.
  // @ts-expect-error there is no contacts.remove
  await client.contacts.remove.mutate({ id });
  // @ts-expect-error Params<N> only takes procedure names
  expectType<Equal<Params<'contacts.remove'>, never>>();
  // mutate on a query, query on a mutation.
  // @ts-expect-error contacts.list is a query
  await client.contacts.list.mutate({});
  // @ts-expect-error contacts.create is a mutation
  await client.contacts.create.query({ firstName: 'Ada' });
  // A wrong result field.
  // @ts-expect-error a Contact has no fullName
  void detail.fullName;
  // @ts-expect-error the page's field is nextCursor, not cursor
  void page.cursor;
  // An unknown param (camelCase on the wire).
  // @ts-expect-error first_name is not a param: firstName is
  await client.contacts.create.mutate({ first_name: 'Ada' });
  // A wrong param type: limits are numbers.
  // @ts-expect-error '10' is a string
  await client.contacts.list.query({ limit: '10' });
  // Paging helpers exist on paged queries only.
  // @ts-expect-error contacts.get does not page
  client.contacts.get.items({ id });
}

export function errors(error: unknown): void {
  if (client.contacts.get.isError(error, 'NOT_FOUND')) {
    expectType<Equal<typeof error.code, 'NOT_FOUND'>>();
    const requestId: string | null = error.requestId;
    void requestId;
  }
  if (isRpcError(error, 'BAD_REQUEST')) {
    const paths: string[] = error.issues.map((issue) => issue.path);
    void paths;
  }
  // @ts-expect-error contacts.list never answers NOT_FOUND
  client.contacts.list.isError(error, 'NOT_FOUND');
  // @ts-expect-error auth.whoami (authed) never answers FORBIDDEN
  client.auth.whoami.isError(error, 'FORBIDDEN');
  client.contacts.delete.isError(error, 'FORBIDDEN'); // an admin procedure does
  expectType<Equal<Extract<ErrorCodeOf<'contacts.create'>, 'CONFLICT' | 'NOT_FOUND'>, 'CONFLICT'>>();
  // @ts-expect-error not a code at all
  isRpcError(error, 'NOT_FOUNDD');
}

// TanStack Query takes the option objects as they are, with no dependency of the client on it.
export async function tanstack(queryClient: QueryClient): Promise<void> {
  const detail = await queryClient.fetchQuery(client.contacts.get.queryOptions({ id }));
  expectType<Equal<typeof detail, ContactDetail>>();
  const pages = await queryClient.fetchInfiniteQuery(client.contacts.list.infiniteQueryOptions({ limit: 2 }));
  expectType<Equal<(typeof pages.pages)[number], ContactPage>>();
  await queryClient.invalidateQueries({ queryKey: client.contacts.list.queryKey() });
  const options = client.contacts.create.mutationOptions();
  const created = await options.mutationFn({ firstName: 'Ada' });
  expectType<Equal<typeof created, ContactDetail>>();
  // @ts-expect-error infinite options take no cursor: the pages carry it
  client.contacts.list.infiniteQueryOptions({ cursor: 'x' });
}
