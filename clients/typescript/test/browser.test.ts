// Headless Chromium (Debian's, driven by playwright-core) against the real server, started by
// tests/test_typescript_client.py: a web app on a second origin, and the explorer.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/test_typescript_client.py`);
  return value;
};
const SERVER = env('NH_SERVER_URL');
const TOKEN = env('NH_MEMBER_TOKEN');
const PROCEDURES = JSON.parse(env('NH_PROCEDURES')) as string[];

let browser: Browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: env('NH_CHROMIUM'),
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh page that records every request it makes and every console error. */
async function open(url: string) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests: string[] = [];
  const problems: string[] = [];
  page.on('request', (request) => requests.push(request.url()));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(error.message));
  await page.goto(url);
  return { page, requests, problems, close: () => context.close() };
}

describe('a web app on a second origin', () => {
  test('an allowed origin calls the server through the client, and reads X-Request-Id', async () => {
    const { page, problems, close } = await open(env('NH_ALLOWED_PAGE'));
    await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
    const result = await page.evaluate(
      ([url, token]) => (window as unknown as { runClient(u: string, t: string): Promise<any> }).runClient(url!, token!),
      [`${SERVER}/rpc`, TOKEN],
    );
    assert.deepEqual({ ...result, requestId: typeof result.requestId }, { ok: true, role: 'member', providers: 5, requestId: 'string' });
    assert.match(result.requestId, /^[0-9a-f]{32}$/);
    assert.deepEqual(problems, []);
    await close();
  });

  test('another origin is refused by CORS', async () => {
    const { page, close } = await open(env('NH_OTHER_PAGE'));
    await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
    const result = await page.evaluate(
      ([url, token]) => (window as unknown as { runClient(u: string, t: string): Promise<any> }).runClient(url!, token!),
      [`${SERVER}/rpc`, TOKEN],
    );
    assert.equal(result.ok, false);
    assert.equal(result.code, 'NETWORK_ERROR'); // the browser withholds the reply
    await close();
  });
});

describe('the explorer', () => {
  let page: Page;
  let requests: string[];
  let problems: string[];
  let close: () => Promise<void>;

  before(async () => {
    ({ page, requests, problems, close } = await open(`${SERVER}/explorer`));
    await page.waitForSelector('nav button.method');
  });

  after(async () => {
    // Every request the page made went to the server's own origin, and nothing broke (a CSP
    // violation would be a console error).
    const elsewhere = requests.filter((url) => new URL(url).origin !== SERVER);
    assert.deepEqual(elsewhere, []);
    // The 401 and the 400 are the replies the tests asked for; the browser logs them.
    assert.deepEqual(problems.filter((p) => !/status of 40[01] /.test(p)), []);
    await close();
  });

  test('lists every procedure, grouped by namespace, with kind and guard', async () => {
    const listed = await page.$$eval('nav button.method', (buttons) => buttons.map((b) => (b as HTMLElement).dataset.name));
    assert.deepEqual([...listed].sort(), PROCEDURES);
    const groups = await page.$$eval('nav h2', (headings) => headings.map((h) => h.textContent));
    assert.deepEqual(groups, [...new Set(PROCEDURES.map((name) => name.split('.')[0]))].sort());
    const badges = await page.textContent('nav button[data-name="contacts.delete"]');
    assert.match(badges ?? '', /mutation.*admin/);
    // The landing view lists them too, each with its summary (the first line of its description).
    const rows = await page.$$eval('table.overview tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
    assert.equal(rows.length, PROCEDURES.length);
    assert.ok(rows.some((row) => row.startsWith('contacts.getqueryauthed') && row.length > 'contacts.getqueryauthed'.length));
  });

  test('a call with the token succeeds and shows status, body, request id and time', async () => {
    await page.click('nav button[data-name="auth.whoami"]');
    await page.fill('#token', TOKEN);
    await page.click('#send');
    await page.waitForSelector('#reply-status');
    assert.equal(await page.textContent('#reply-status'), 'HTTP 200');
    const body = JSON.parse((await page.textContent('#reply-body')) ?? '{}');
    assert.equal(body.result.role, 'member');
    assert.match((await page.textContent('#reply-request-id')) ?? '', /^[0-9a-f]{32}$/);
    assert.match((await page.textContent('#reply-ms')) ?? '', /^\d+ ms$/);
  });

  test('without the token it shows the 401 and its request id', async () => {
    await page.fill('#token', '');
    await page.click('#send');
    await page.waitForFunction(() => document.querySelector('#reply-status')?.textContent === 'HTTP 401');
    const body = JSON.parse((await page.textContent('#reply-body')) ?? '{}');
    assert.equal(body.error.data.code, 'UNAUTHORIZED');
    assert.equal(await page.textContent('#reply-request-id'), body.error.data.requestId);
  });

  test('the form builds params from the schema; the snippets carry no token', async () => {
    await page.fill('#token', TOKEN);
    await page.click('nav button[data-name="contacts.list"]');
    await page.selectOption('#p-category', ['seller', 'buyer']);
    await page.fill('#p-limit', '5');
    await page.click('#copy-curl');
    const curl = (await page.textContent('#snippet')) ?? '';
    assert.match(curl, /"method":"contacts\.list","params":\{"category":\["seller","buyer"\],"limit":5\}/);
    assert.match(curl, /\$NURTUREHUB_TOKEN/);
    await page.click('#copy-ts');
    const ts = (await page.textContent('#snippet')) ?? '';
    assert.match(ts, /client\.contacts\.list\.query\(/);
    await page.click('#send');
    await page.waitForSelector('#reply-body');
    assert.equal(await page.textContent('#reply-status'), 'HTTP 200');
    // The raw JSON tab starts from the form's params and sends what it holds.
    await page.click('button[data-mode="raw"]');
    assert.deepEqual(JSON.parse(await page.inputValue('#raw')), { category: ['seller', 'buyer'], limit: 5 });
    await page.fill('#raw', '{"limit": 1000}');
    await page.click('#send');
    await page.waitForFunction(() => document.querySelector('#reply-status')?.textContent === 'HTTP 400');
    assert.match((await page.textContent('#reply-body')) ?? '', /"path": "limit"/);
    // The token is held in memory only: not in storage, cookies or the URL.
    const stored = await page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie, location.href]);
    assert.deepEqual(stored.slice(0, 3), [0, 0, '']);
    assert.ok(!String(stored[3]).includes(TOKEN) && !curl.includes(TOKEN) && !ts.includes(TOKEN));
  });
});
