// The NurtureHub API explorer: reads /openrpc.json, builds a form per procedure, calls POST /rpc.
// No dependencies. The token lives in the token input and this module's memory only: it is never
// written to storage, a cookie or a URL, and the copied snippets name $NURTUREHUB_TOKEN instead.

const $ = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...children.flat().filter((c) => c != null));
  return el;
};

let doc = null;
let current = null; // {method, fields, mode}

const resolve = (schema) => {
  let s = schema || {};
  while (s.$ref) s = doc.components.schemas[s.$ref.split('/').pop()] || {};
  return s;
};

// The non-null part of a schema, and whether null is allowed.
const unwrap = (schema) => {
  const s = resolve(schema);
  if (s.anyOf) {
    const rest = s.anyOf.filter((a) => resolve(a).type !== 'null');
    const nullable = rest.length < s.anyOf.length;
    if (rest.length === 1) return { ...unwrap(rest[0]), nullable, default: s.default };
    // "One X or a list of X" (contacts.list's category): the list form says both.
    const list = rest.find((a) => a.type === 'array');
    const one = rest.find((a) => a !== list);
    if (rest.length === 2 && list && JSON.stringify(list.items) === JSON.stringify(one)) {
      return { schema: list, nullable, default: s.default };
    }
    return { schema: s, nullable, default: s.default };
  }
  return { schema: s, nullable: false, default: s.default };
};

const typeLabel = (schema) => {
  const { schema: s, nullable } = unwrap(schema);
  const raw = schema.$ref || (schema.anyOf || []).map((a) => a.$ref || (a.items && a.items.$ref)).find(Boolean);
  let t = raw ? raw.split('/').pop() : s.type || 'any';
  if (s.type === 'array') t = `${(s.items && s.items.$ref ? s.items.$ref.split('/').pop() : resolve(s.items).type) || 'any'}[]`;
  if (s.format) t += ` (${s.format})`;
  return nullable ? `${t} | null` : t;
};

function fieldInput(param) {
  const { schema: s, nullable } = unwrap(param.schema);
  const id = `p-${param.name}`;
  let input;
  let read;
  if (s.enum || (s.type === 'array' && resolve(s.items).enum)) {
    const multiple = s.type === 'array';
    const values = multiple ? resolve(s.items).enum : s.enum;
    input = $('select', { id, multiple }, multiple ? [] : $('option', { value: '' }, '(not given)'), values.map((v) => $('option', { value: v }, v)));
    read = () => (multiple ? [...input.selectedOptions].map((o) => o.value) : input.value);
  } else if (s.type === 'boolean') {
    input = $('select', { id }, $('option', { value: '' }, '(not given)'), $('option', { value: 'true' }, 'true'), $('option', { value: 'false' }, 'false'));
    read = () => (input.value === '' ? '' : input.value === 'true');
  } else if (s.type === 'integer' || s.type === 'number') {
    input = $('input', { id, type: 'number', min: s.minimum, max: s.maximum, placeholder: s.default ?? '' });
    read = () => (input.value === '' ? '' : Number(input.value));
  } else if (s.type === 'object' || s.type === 'array' || !s.type) {
    input = $('textarea', { id, placeholder: 'JSON' });
    read = () => (input.value.trim() === '' ? '' : JSON.parse(input.value));
  } else {
    input = $('input', { id, type: 'text', placeholder: s.format || '', maxlength: s.maxLength });
    read = () => input.value;
  }
  const isNull = nullable ? $('input', { type: 'checkbox', title: 'send null' }) : null;
  const value = () => {
    if (isNull && isNull.checked) return null;
    const v = read();
    return v === '' || (Array.isArray(v) && v.length === 0) ? undefined : v;
  };
  const row = $('div', { class: 'field' },
    $('label', { for: id }, param.name, param.required ? $('span', { class: 'req', title: 'required' }, ' *') : null, $('small', {}, typeLabel(param.schema))),
    $('div', {}, input, isNull ? $('label', { class: 'muted null' }, isNull, 'send null') : null, param.schema.description ? $('small', {}, param.schema.description) : null));
  return { name: param.name, row, value };
}

function formParams() {
  const params = {};
  for (const f of current.fields) {
    const v = f.value();
    if (v !== undefined) params[f.name] = v;
  }
  return params;
}

function currentParams() {
  if (current.mode === 'raw') {
    const text = document.getElementById('raw').value.trim();
    return text === '' ? {} : JSON.parse(text);
  }
  return formParams();
}

function snippetCurl(name, params) {
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: name, params });
  const auth = current.method['x-guard'] === 'public' ? '' : ` \\\n  -H "Authorization: Bearer $NURTUREHUB_TOKEN"`;
  return `curl -s ${location.origin}/rpc${auth} \\\n  -H 'Content-Type: application/json' \\\n  -d '${body.replace(/'/g, "'\\''")}'`;
}

function snippetTs(name, params) {
  const call = current.method['x-kind'] === 'mutation' ? 'mutate' : 'query';
  return `import { createClient } from '@nurturehub/client';\n\n` +
    `const client = createClient({\n  url: '${location.origin}/rpc',\n  headers: () => ({ Authorization: \`Bearer \${token}\` }),\n});\n` +
    `const result = await client.${name}.${call}(${JSON.stringify(params, null, 2)});\n`;
}

async function copy(kind) {
  const out = document.getElementById('snippet');
  let params;
  try { params = currentParams(); } catch (e) { out.textContent = `Params are not valid JSON: ${e.message}`; return; }
  const text = kind === 'curl' ? snippetCurl(current.method.name, params) : snippetTs(current.method.name, params);
  out.textContent = text;
  out.hidden = false;
  try { await navigator.clipboard.writeText(text); out.dataset.copied = kind; } catch { /* shown above to copy by hand */ }
}

async function send() {
  const out = document.getElementById('reply');
  let params;
  try { params = currentParams(); } catch (e) { out.replaceChildren($('p', { class: 'status bad' }, `Params are not valid JSON: ${e.message}`)); return; }
  const headers = { 'Content-Type': 'application/json' };
  const token = document.getElementById('token').value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  const started = performance.now();
  out.replaceChildren($('p', { class: 'muted' }, 'Sending…'));
  try {
    const response = await fetch('/rpc', { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: current.method.name, params }), credentials: 'omit', cache: 'no-store' });
    const ms = Math.round(performance.now() - started);
    const text = await response.text();
    let body = text;
    try { body = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: show as is */ }
    out.replaceChildren(
      $('div', { class: 'meta' },
        $('span', { id: 'reply-status', class: `status ${response.ok ? 'ok' : 'bad'}` }, `HTTP ${response.status}`),
        $('span', {}, 'request id ', $('span', { id: 'reply-request-id' }, response.headers.get('X-Request-Id') || '-')),
        $('span', { id: 'reply-ms' }, `${ms} ms`)),
      $('pre', { id: 'reply-body' }, body));
  } catch (e) {
    out.replaceChildren($('p', { id: 'reply-status', class: 'status bad' }, `Network error: ${e.message}`));
  }
}

function setMode(mode) {
  if (mode === 'raw' && current.mode !== 'raw') {
    try { document.getElementById('raw').value = JSON.stringify(formParams(), null, 2); } catch { /* keep */ }
  }
  current.mode = mode;
  document.getElementById('form').hidden = mode !== 'form';
  document.getElementById('raw').hidden = mode !== 'raw';
  for (const b of document.querySelectorAll('.tabs button')) b.setAttribute('aria-selected', String(b.dataset.mode === mode));
}

function show(method) {
  const fields = method.params.map(fieldInput);
  current = { method, fields, mode: 'form' };
  for (const b of document.querySelectorAll('nav button')) b.setAttribute('aria-current', String(b.dataset.name === method.name));
  const errors = (method.errors || []).map((e) => e.data.code).join(', ');
  document.getElementById('detail').replaceChildren(
    $('h2', { class: 'name' }, method.name, badges(method)),
    $('p', { class: 'desc' }, method.description),
    $('p', { class: 'muted' }, `Errors: ${errors || 'none declared'}. Result: ${typeLabel(method.result.schema)}.`),
    $('div', { class: 'tabs', role: 'tablist' },
      $('button', { role: 'tab', 'data-mode': 'form', onclick: () => setMode('form') }, 'Form'),
      $('button', { role: 'tab', 'data-mode': 'raw', onclick: () => setMode('raw') }, 'Raw JSON')),
    $('div', { id: 'form' }, fields.length ? fields.map((f) => f.row) : $('p', { class: 'muted' }, 'No params.')),
    $('textarea', { id: 'raw', hidden: true, spellcheck: 'false', 'aria-label': 'params as JSON' }),
    $('div', { class: 'actions' },
      $('button', { id: 'send', class: 'primary', onclick: send }, 'Send'),
      $('button', { id: 'copy-curl', onclick: () => copy('curl') }, 'Copy as curl'),
      $('button', { id: 'copy-ts', onclick: () => copy('ts') }, 'Copy as TypeScript')),
    $('pre', { id: 'snippet', hidden: true }),
    $('section', { id: 'reply', 'aria-live': 'polite' }));
  setMode('form');
}

function badges(m) {
  return [$('span', { class: `badge ${m['x-kind']}` }, m['x-kind']), $('span', { class: `badge ${m['x-guard']}` }, m['x-guard'])];
}

async function main() {
  const nav = document.getElementById('procedures');
  try {
    const response = await fetch('/openrpc.json', { credentials: 'omit' });
    doc = await response.json();
  } catch (e) {
    nav.replaceChildren($('p', { class: 'status bad' }, `Cannot load /openrpc.json: ${e.message}`));
    return;
  }
  const groups = new Map();
  for (const m of doc.methods) {
    const ns = m.name.split('.')[0];
    if (!groups.has(ns)) groups.set(ns, []);
    groups.get(ns).push(m);
  }
  nav.replaceChildren(...[...groups.entries()].sort().flatMap(([ns, methods]) => [
    $('h2', {}, ns),
    ...methods.map((m) => $('button', { class: 'method', 'data-name': m.name, title: m.summary, onclick: () => show(m) },
      $('span', {}, m.name.slice(ns.length + 1)), $('span', {}, badges(m)))),
  ]));
  const wanted = doc.methods.find((m) => m.name === decodeURIComponent(location.hash.slice(1)));
  if (wanted) show(wanted);
  else overview(groups);
}

// The landing view: every procedure, by namespace, with its kind, guard and summary.
function overview(groups) {
  document.getElementById('detail').replaceChildren(
    $('h2', {}, `${doc.info.title} ${doc.info.version}: ${doc.methods.length} procedures`),
    ...[...groups.entries()].sort().map(([ns, methods]) => $('table', { class: 'overview' },
      $('caption', {}, ns),
      methods.map((m) => $('tr', {},
        $('td', {}, $('a', { href: `#${m.name}`, onclick: () => show(m) }, m.name)),
        $('td', {}, badges(m)),
        $('td', {}, m.summary))))));
}

main();
