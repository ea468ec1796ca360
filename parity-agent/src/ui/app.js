// parity web view: hash-routed pages over the JSON API (/api/*). No dependencies, no build step.
//
// Routes: #/ (overview), #/pair/P/endpoint/E[?path=..&kind=..&before=..] (one endpoint),
// #/record/ID (one record side by side), #/records[?pair=..&endpoint=..&kind=..&path=..]
// (all records), #/store (the store and its runs). Every value shown comes from the API, which
// serves masked data; text is always inserted as text, never as HTML.
'use strict';

(function () {
  const TOKEN_KEY = 'parity-api-token';
  const ALIGN_MAX_CELLS = 2000000;
  const app = document.getElementById('app');
  let generation = 0;

  // ---------------------------------------------------------------- DOM and formatting helpers

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else if (k === 'dataset') Object.assign(el.dataset, v);
        else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return el;
  }

  function fmtInt(n) {
    return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
  }

  function fmtRate(r) {
    if (r === null || r === undefined) return '–';
    if (r === 0) return '0.0%';
    if (r < 0.001) return (r * 100).toFixed(2) + '%';
    return (r * 100).toFixed(1) + '%';
  }

  function rateClass(r) {
    if (r === null || r === undefined) return '';
    if (r === 0) return 'rate-0';
    return r < 0.01 ? 'rate-low' : 'rate-high';
  }

  function fmtSecs(s) {
    if (s === null || s === undefined) return '–';
    if (s < 0.01) return (s * 1e3).toFixed(2) + ' ms';
    if (s < 1) return (s * 1e3).toFixed(1) + ' ms';
    return s.toFixed(2) + ' s';
  }

  function fmtTime(secs) {
    if (secs === null || secs === undefined) return '–';
    const d = new Date(secs * 1000);
    if (isNaN(d.getTime())) return '–';
    return d.toISOString().replace('T', ' ').replace('Z', ' UTC');
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v : v.toFixed(1)) + ' ' + u[i];
  }

  function kindTag(k) {
    return h('span', { class: 'kind ' + k, text: k });
  }

  function rateCell(r) {
    const pct = r ? Math.max(2, Math.min(100, r * 100)) : 0;
    return h('td', { class: 'rate num ' + rateClass(r) },
      h('span', { class: 'bar' }, h('i', { style: 'width:' + pct + '%' })),
      fmtRate(r));
  }

  // ---------------------------------------------------------------- routing

  function href(parts, params) {
    let s = '#/' + parts.map((p) => encodeURIComponent(p)).join('/');
    if (params) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) {
        if (v !== null && v !== undefined && v !== '') q.set(k, v);
      }
      const t = q.toString();
      if (t) s += '?' + t;
    }
    return s;
  }

  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const qi = raw.indexOf('?');
    const path = qi < 0 ? raw : raw.slice(0, qi);
    const params = new URLSearchParams(qi < 0 ? '' : raw.slice(qi + 1));
    const parts = path.split('/').filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch (_) { return p; }
    });
    return { parts, params };
  }

  function go(parts, params) {
    location.hash = href(parts, params);
  }

  // ---------------------------------------------------------------- API

  class AuthError extends Error {}
  class NotFound extends Error {}

  async function api(path) {
    const headers = { Accept: 'application/json' };
    let token = null;
    try { token = sessionStorage.getItem(TOKEN_KEY); } catch (_) { token = null; }
    if (token) headers.Authorization = 'Bearer ' + token;
    const r = await fetch(path, { headers, cache: 'no-store' });
    if (r.status === 401) throw new AuthError(token ? 'refused' : 'missing');
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (r.status === 404) throw new NotFound((body && body.error) || 'not found');
    if (!r.ok) throw new Error((body && body.error) || 'HTTP ' + r.status);
    return body;
  }

  async function optional(path) {
    try {
      return await api(path);
    } catch (e) {
      if (e instanceof NotFound) return null;
      throw e;
    }
  }

  function qs(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') q.set(k, v);
    }
    return q.toString();
  }

  // ---------------------------------------------------------------- lines, paths, alignment

  // A member step as the agent writes locations: `.key` for plain names, `['…']` otherwise.
  function keyStep(k) {
    if (/^[A-Za-z0-9_\-$@]+$/.test(k)) return '.' + k;
    return "['" + k.replace(/[\\']/g, (c) => '\\' + c) + "']";
  }

  // Lines of a pretty-printed JSON text (one member or element per line, as the store writes
  // it), each with its location. Keeps the stored text exactly (numbers are not re-printed).
  function jsonLines(text, out) {
    const stack = [];
    for (const raw of text.split('\n')) {
      const t = raw.trim();
      if (t === '') { out.push({ text: raw, path: null }); continue; }
      if (t[0] === '}' || t[0] === ']') {
        const c = stack.pop();
        out.push({ text: raw, path: c ? c.path : '$' });
        continue;
      }
      let rest = t;
      let key = null;
      if (t[0] === '"') {
        const m = /^"(?:[^"\\]|\\.)*"\s*:/.exec(t);
        if (m) {
          try { key = JSON.parse(m[0].replace(/\s*:$/, '')); } catch (_) { key = null; }
          rest = t.slice(m[0].length).trim();
        }
      }
      const top = stack[stack.length - 1];
      let path = '$';
      if (top && top.type === 'obj') path = top.path + keyStep(key === null ? '' : key);
      else if (top) { path = top.path + '[' + top.index + ']'; top.index++; }
      out.push({ text: raw, path });
      if (rest === '{' || rest === '[') stack.push({ type: rest === '{' ? 'obj' : 'arr', path, index: 0 });
    }
  }

  function bodyLines(b, out, comparedPath) {
    if (!b) return;
    if (!b.text) {
      if (b.len > 0) out.push({ text: '<' + b.len + ' bytes, none stored>', path: null });
      return;
    }
    let json = false;
    if (!b.binary && /^\s*[[{]/.test(b.text)) {
      try { JSON.parse(b.text); json = true; } catch (_) { json = false; }
    }
    if (json && comparedPath) jsonLines(b.text, out);
    else for (const l of b.text.split('\n')) out.push({ text: l, path: comparedPath ? 'body' : null });
    if (b.capped) out.push({ text: '… (body capped: ' + b.len + ' bytes in all)', path: null });
  }

  function responseLines(ex) {
    const r = ex.response;
    if (!r) return [{ text: '(no response)', path: 'response' }];
    const out = [{ text: 'HTTP/' + r.version + ' ' + r.status + ' ' + r.reason, path: 'status' }];
    for (const [n, v] of r.headers) out.push({ text: n + ': ' + v, path: 'header:' + n.toLowerCase() });
    out.push({ text: '', path: null });
    bodyLines(r.body, out, true);
    return out;
  }

  function requestLines(ex) {
    const q = ex.request;
    if (!q) return [{ text: '(no request)', path: null }];
    const out = [{ text: q.method + ' ' + q.uri + ' HTTP/' + q.version, path: null }];
    for (const [n, v] of q.headers) out.push({ text: n + ': ' + v, path: null });
    out.push({ text: '', path: null });
    bodyLines(q.body, out, false);
    return out;
  }

  // Is a line at `path` on (or below) a reported difference? `body` differences (text, hash)
  // are shown by alignment, not by location.
  function onDiff(path, diffs) {
    if (!path) return false;
    for (const d of diffs) {
      const dp = d.path;
      if (dp === 'body') continue;
      if (path === dp) return true;
      if (dp[0] === '$' && path.length > dp.length && path.startsWith(dp)) {
        const c = path[dp.length];
        if (c === '.' || c === '[') return true;
      }
    }
    return false;
  }

  // Pairs of line indexes: equal lines side by side (longest common subsequence), a run of
  // removed lines beside the added lines that replaced it.
  function align(a, b) {
    let pre = 0;
    while (pre < a.length && pre < b.length && a[pre].text === b[pre].text) pre++;
    let suf = 0;
    while (suf < a.length - pre && suf < b.length - pre &&
      a[a.length - 1 - suf].text === b[b.length - 1 - suf].text) suf++;
    const ma = a.slice(pre, a.length - suf);
    const mb = b.slice(pre, b.length - suf);
    const n = ma.length;
    const m = mb.length;
    const middle = [];
    if (n * m <= ALIGN_MAX_CELLS) {
      const w = m + 1;
      const lcs = new Uint32Array((n + 1) * w);
      for (let i = n - 1; i >= 0; i--) {
        for (let j = m - 1; j >= 0; j--) {
          lcs[i * w + j] = ma[i].text === mb[j].text
            ? lcs[(i + 1) * w + j + 1] + 1
            : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
        }
      }
      let i = 0;
      let j = 0;
      while (i < n || j < m) {
        if (i < n && j < m && ma[i].text === mb[j].text) { middle.push([i, j]); i++; j++; }
        else if (j === m || (i < n && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1])) { middle.push([i, null]); i++; }
        else { middle.push([null, j]); j++; }
      }
    } else {
      for (let k = 0; k < Math.max(n, m); k++) middle.push([k < n ? k : null, k < m ? k : null]);
    }
    const ops = [];
    for (let k = 0; k < pre; k++) ops.push([k, k]);
    let k = 0;
    while (k < middle.length) {
      if (middle[k][1] !== null) {
        ops.push([middle[k][0] === null ? null : middle[k][0] + pre, middle[k][1] + pre]);
        k++;
        continue;
      }
      const dels = [];
      while (k < middle.length && middle[k][1] === null) { dels.push(middle[k][0]); k++; }
      const adds = [];
      while (k < middle.length && middle[k][0] === null) { adds.push(middle[k][1]); k++; }
      for (let t = 0; t < Math.max(dels.length, adds.length); t++) {
        ops.push([t < dels.length ? dels[t] + pre : null, t < adds.length ? adds[t] + pre : null]);
      }
    }
    for (let t = 0; t < suf; t++) ops.push([a.length - suf + t, b.length - suf + t]);
    return ops;
  }

  function sideBySide(a, b, diffs, titles) {
    const body = h('tbody');
    // A `body` difference (text or hash) marks the body lines that differ.
    const bodyDiffers = diffs.some((d) => d.path === 'body');
    for (const [i, j] of align(a, b)) {
      const l = i === null ? null : a[i];
      const r = j === null ? null : b[j];
      const differs = !(l && r && l.text === r.text);
      const cells = (line, hot) => {
        if (!line) return [h('td', { class: 'g gap' }), h('td', { class: 'gap' })];
        let cls = '';
        let mark = '';
        if (onDiff(line.path, diffs) || (bodyDiffers && differs && line.path === 'body')) { cls = hot; mark = '!'; }
        else if (differs) { cls = 'soft'; mark = '~'; }
        return [
          h('td', { class: ('g ' + cls).trim(), text: mark }),
          // An empty line keeps its height (a no-break space), as in a terminal.
          h('td', { class: cls || null, dataset: line.path ? { path: line.path } : null, text: line.text === '' ? '\u00a0' : line.text }),
        ];
      };
      const [lg, lt] = cells(l, 'hot-p');
      const [rg, rt] = cells(r, 'hot-m');
      rg.classList.add('split');
      body.append(h('tr', null, lg, lt, rg, rt));
    }
    return h('table', { class: 'sides' },
      h('colgroup', null, h('col', { class: 'g' }), h('col'), h('col', { class: 'g' }), h('col')),
      h('thead', null, h('tr', null,
        h('th', { colspan: 2 }, titles[0]),
        h('th', { colspan: 2, class: 'split' }, titles[1]))),
      body);
  }

  // ---------------------------------------------------------------- chrome

  function crumbs(items) {
    const out = h('div', { class: 'crumbs' });
    items.forEach((it, n) => {
      if (n > 0) out.append(h('span', { class: 'sep', text: '/' }));
      out.append(it.href ? h('a', { href: it.href, text: it.text }) : h('span', { text: it.text }));
    });
    return out;
  }

  function setNav(name) {
    for (const a of document.querySelectorAll('.top nav a')) {
      a.classList.toggle('active', a.dataset.nav === name);
    }
  }

  async function loadSource() {
    const el = document.getElementById('source');
    try {
      const s = await api('/api/store');
      const name = s.path.split('/').pop();
      el.textContent = (s.writer ? 'live · ' : '') + 'store ' + name + ' · ' + fmtInt(s.records) +
        ' records · ' + fmtBytes(s.database_bytes + s.wal_bytes);
      el.title = s.path;
    } catch (e) {
      el.textContent = e instanceof NotFound ? 'live · no store' : '';
    }
  }

  function tokenForm(refused) {
    setNav('');
    const input = h('input', { type: 'password', id: 'token-input', autocomplete: 'off', placeholder: 'API token', 'aria-label': 'API token' });
    const form = h('form', {
      onsubmit: (ev) => {
        ev.preventDefault();
        const v = input.value.trim();
        if (!v) return;
        try { sessionStorage.setItem(TOKEN_KEY, v); } catch (_) { /* private mode: not kept */ }
        route();
        loadSource();
      },
    }, input, h('button', { type: 'submit', text: 'Continue' }));
    app.replaceChildren(h('div', { class: 'card token', id: 'token-form' },
      h('div', { class: 'card-body' },
        h('h2', { text: 'API token required' }),
        refused ? h('p', { class: 'error', text: 'The server refused that token.' }) : null,
        h('p', { class: 'muted', text: 'This server listens beyond loopback, so /api/* needs the bearer token ([server] token or PARITY_API_TOKEN). It is kept in this browser tab only.' }),
        form)));
    input.focus();
  }

  // ---------------------------------------------------------------- overview

  function sortByRate(list, key) {
    return list.slice().sort((x, y) => {
      const rx = x.divergence_rate === null ? -1 : x.divergence_rate;
      const ry = y.divergence_rate === null ? -1 : y.divergence_rate;
      return ry - rx || (y.compared - x.compared) || String(x[key]).localeCompare(String(y[key]));
    });
  }

  function unmatchedChips(map) {
    const chips = Object.entries(map || {}).filter(([, v]) => v > 0)
      .map(([k, v]) => h('span', { class: 'chip ' + (k === 'sampled_out' ? '' : 'warn'), text: k.replace(/_/g, ' ') + ' ' + fmtInt(v) }));
    return chips.length ? h('div', { class: 'chips' }, chips) : h('span', { class: 'muted', text: 'none' });
  }

  function sumValues(map) {
    return Object.entries(map || {}).reduce((s, [k, v]) => s + (k === 'sampled_out' ? 0 : v), 0);
  }

  function stat(k, v, cls) {
    return h('div', { class: 'stat' }, h('div', { class: 'v ' + (cls || ''), text: v }), h('div', { class: 'k', text: k }));
  }

  function pairCard(p) {
    const head = h('div', { class: 'card-head' },
      h('h2', null, 'pair ', h('span', { class: 'mono', text: p.name })),
      h('div', { class: 'stats' },
        stat('compared', fmtInt(p.compared)),
        stat('diverged', fmtInt(p.diverged)),
        stat('divergence', fmtRate(p.divergence_rate), rateClass(p.divergence_rate)),
        stat('not compared', fmtInt(sumValues(p.unmatched)))),
      h('div', null, h('div', { class: 'muted', style: 'font-size:12px;margin-bottom:3px', text: 'not compared, by reason' }), unmatchedChips(p.unmatched)));
    const rows = sortByRate(p.endpoints || [], 'endpoint').map((e) => {
      const to = href(['pair', p.name, 'endpoint', e.endpoint]);
      const lat = e.latency_seconds || {};
      const top = (e.differences || [])[0];
      const unmatched = sumValues(e.unmatched);
      const reasons = Object.entries(e.unmatched || {}).filter(([, v]) => v > 0).map(([k, v]) => k + ' ' + v).join(', ');
      return h('tr', { class: 'link', dataset: { endpoint: e.endpoint }, onclick: () => { location.hash = to; } },
        h('td', { class: 'ep' }, h('a', { href: to, text: e.endpoint })),
        h('td', { class: 'num', text: fmtInt(e.compared) }),
        h('td', { class: 'num', text: fmtInt(e.diverged) }),
        rateCell(e.divergence_rate),
        h('td', { class: 'num', title: reasons || null, text: fmtInt(unmatched) }),
        h('td', { class: 'num', text: fmtSecs(lat.primary && lat.primary.p50) }),
        h('td', { class: 'num', text: fmtSecs(lat.mirror && lat.mirror.p50) }),
        h('td', { class: 'num', text: fmtSecs(lat.primary && lat.primary.p99) }),
        h('td', { class: 'num', text: fmtSecs(lat.mirror && lat.mirror.p99) }),
        h('td', null, top ? [h('span', { class: 'mono', text: top.path }), ' ', kindTag(top.kind), h('span', { class: 'muted', text: ' ×' + fmtInt(top.count) })] : h('span', { class: 'muted', text: '–' })));
    });
    const table = h('table', { class: 'grid' },
      h('thead', null, h('tr', null,
        h('th', { text: 'Endpoint' }), h('th', { class: 'num', text: 'Compared' }), h('th', { class: 'num', text: 'Diverged' }),
        h('th', { class: 'num', text: 'Divergence' }), h('th', { class: 'num', text: 'Not compared' }),
        h('th', { class: 'num', text: 'p50 primary' }), h('th', { class: 'num', text: 'p50 mirror' }),
        h('th', { class: 'num', text: 'p99 primary' }), h('th', { class: 'num', text: 'p99 mirror' }),
        h('th', { text: 'Most frequent difference' }))),
      h('tbody', null, rows.length ? rows : h('tr', null, h('td', { colspan: 10, class: 'empty', text: 'Nothing compared for this pair.' }))));
    const regs = (p.latency_regressions || []).map((l) => h('li', null,
      h('span', { class: 'mono', text: l.endpoint }), ': mirror p50 ' + fmtSecs(l.mirror_p50) + ' vs primary ' + fmtSecs(l.primary_p50) + ' (×' + l.ratio.toFixed(1) + ')'));
    return h('section', { class: 'card', dataset: { pair: p.name } }, head, table,
      regs.length ? h('div', { class: 'card-body notice', style: 'margin:0;border-radius:0;border-width:1px 0 0' }, h('strong', { text: 'Latency regressions' }), h('ul', { style: 'margin:4px 0 0' }, regs)) : null);
  }

  async function overview() {
    setNav('overview');
    const summary = await optional('/api/summary');
    const out = [h('h1', { text: 'Overview' })];
    if (summary) {
      const span = summary.from && summary.to
        ? 'Traffic from ' + fmtTime(summary.from) + ' to ' + fmtTime(summary.to) + ' (' + (summary.to - summary.from).toFixed(1) + ' s).'
        : 'No traffic compared yet.';
      const dropped = Object.values(summary.capture.dropped || {}).reduce((s, v) => s + v, 0);
      out.push(h('p', { class: 'muted' }, span, ' Capture: ' + fmtInt(dropped) + ' records dropped, ' + fmtInt(summary.capture.gaps) + ' gaps.'));
      const pairs = sortByRate(summary.pairs || [], 'name');
      if (!pairs.length) out.push(h('div', { class: 'card empty', text: 'No [[pair]] is configured.' }));
      for (const p of pairs) out.push(pairCard(p));
    } else {
      out.push(h('p', { class: 'notice', text: 'No summary report is stored yet; the table counts stored records only (diverged pairs, and matched ones kept for contrast).' }));
      const eps = (await optional('/api/endpoints')) || [];
      const rows = eps.map((e) => {
        const to = href(['pair', e.pair, 'endpoint', e.endpoint]);
        return h('tr', { class: 'link', onclick: () => { location.hash = to; } },
          h('td', { class: 'mono', text: e.pair }),
          h('td', { class: 'ep' }, h('a', { href: to, text: e.endpoint })),
          h('td', { class: 'num', text: fmtInt(e.records) }),
          h('td', { class: 'num', text: fmtInt(e.diverged) }));
      });
      out.push(h('section', { class: 'card' }, h('table', { class: 'grid' },
        h('thead', null, h('tr', null, h('th', { text: 'Pair' }), h('th', { text: 'Endpoint' }), h('th', { class: 'num', text: 'Stored records' }), h('th', { class: 'num', text: 'Diverged' }))),
        h('tbody', null, rows.length ? rows : h('tr', null, h('td', { colspan: 4, class: 'empty', text: 'No records stored.' }))))));
    }
    return out;
  }

  // ---------------------------------------------------------------- records tables

  function recordRows(records, withEndpoint) {
    return records.map((r) => {
      const to = href(['record', String(r.id)]);
      const firsts = (r.differences || []).map((d) => h('div', null, h('span', { class: 'mono', text: d.path }), ' ', kindTag(d.kind)));
      if (!r.diverged) firsts.push(h('span', { class: 'chip good', text: 'matched (kept for contrast)' }));
      if (r.difference_count > (r.differences || []).length) firsts.push(h('div', { class: 'muted', text: '+ ' + (r.difference_count - r.differences.length) + ' more' }));
      return h('tr', { class: 'link', dataset: { record: String(r.id) }, onclick: () => { location.hash = to; } },
        h('td', { class: 'num' }, h('a', { href: to, text: '#' + r.id })),
        h('td', { class: 'mono nowrap', text: fmtTime(r.time) }),
        withEndpoint ? h('td', { class: 'mono', text: r.pair }) : null,
        withEndpoint ? h('td', { class: 'ep', text: r.endpoint }) : null,
        h('td', { class: 'mono', text: r.correlation_id }),
        h('td', { class: 'num mono', text: (r.primary_status ?? '–') + ' / ' + (r.mirror_status ?? '–') }),
        h('td', { class: 'num mono nowrap', text: fmtSecs(r.primary_latency_seconds) + ' / ' + fmtSecs(r.mirror_latency_seconds) }),
        h('td', { class: 'num', text: fmtInt(r.difference_count) }),
        h('td', null, firsts));
    });
  }

  function recordsTable(page, withEndpoint, pagerParts, pagerParams) {
    const head = h('tr', null,
      h('th', { class: 'num', text: 'Record' }), h('th', { text: 'Time' }),
      withEndpoint ? h('th', { text: 'Pair' }) : null, withEndpoint ? h('th', { text: 'Endpoint' }) : null,
      h('th', { text: 'Correlation id' }), h('th', { class: 'num', text: 'Status p / m' }),
      h('th', { class: 'num', text: 'Latency p / m' }), h('th', { class: 'num', text: 'Diffs' }), h('th', { text: 'First differences' }));
    const rows = recordRows(page.records, withEndpoint);
    const cols = withEndpoint ? 9 : 7;
    const table = h('table', { class: 'grid' }, h('thead', null, head),
      h('tbody', null, rows.length ? rows : h('tr', null, h('td', { colspan: cols, class: 'empty', text: 'No stored records match.' }))));
    const pager = h('div', { class: 'pager' },
      pagerParams.before ? h('a', { href: href(pagerParts, Object.assign({}, pagerParams, { before: null })), text: '← newest' }) : null,
      page.next_before ? h('button', { type: 'button', text: 'Older records →', onclick: () => go(pagerParts, Object.assign({}, pagerParams, { before: page.next_before })) }) : null,
      h('span', { class: 'muted', text: rows.length + ' shown, newest first' }));
    return [table, pager];
  }

  // ---------------------------------------------------------------- one endpoint

  function fieldTable(rows, unit, pair, endpoint, active, base) {
    const kinds = [];
    const byPath = new Map();
    for (const r of rows) {
      if (!kinds.includes(r.kind)) kinds.push(r.kind);
      if (!byPath.has(r.path)) byPath.set(r.path, {});
      byPath.get(r.path)[r.kind] = (byPath.get(r.path)[r.kind] || 0) + r.count;
    }
    const order = ['value', 'type', 'missing', 'extra', 'length', 'order', 'text', 'hash', 'other'];
    kinds.sort((a, b) => order.indexOf(a) - order.indexOf(b));
    const paths = [...byPath.entries()].map(([path, counts]) => ({ path, counts, total: Object.values(counts).reduce((s, v) => s + v, 0) }))
      .sort((a, b) => b.total - a.total || a.path.localeCompare(b.path));
    const body = paths.map((f) => {
      const filterable = f.path !== 'other';
      const to = href(['pair', pair, 'endpoint', endpoint], { path: f.path });
      const share = base ? Math.min(1, Math.max(...Object.values(f.counts)) / base) : null;
      return h('tr', { class: (filterable ? 'link' : '') + (active === f.path ? ' active' : ''), dataset: { field: f.path }, onclick: filterable ? () => { location.hash = to; } : null },
        h('td', { class: 'path mono' }, filterable ? h('a', { href: to, text: f.path }) : f.path),
        kinds.map((k) => h('td', { class: 'num' }, f.counts[k] ? [kindTag(k), ' ', fmtInt(f.counts[k])] : h('span', { class: 'muted', text: '·' }))),
        base ? rateCell(share) : null);
    });
    return h('table', { class: 'grid fields' },
      h('thead', null, h('tr', null, h('th', { text: 'Field' }), kinds.map((k) => h('th', { class: 'num', text: k + ' (' + unit + ')' })),
        base ? h('th', { class: 'num', text: 'Share of compared' }) : null)),
      h('tbody', null, body.length ? body : h('tr', null, h('td', { colspan: kinds.length + 2, class: 'empty', text: 'No differences.' }))));
  }

  async function endpointView(pair, endpoint, params) {
    setNav('overview');
    const path = params.get('path');
    const kind = params.get('kind');
    const before = params.get('before');
    const [summary, fields, page] = await Promise.all([
      optional('/api/summary'),
      optional('/api/fields?' + qs({ pair, endpoint })),
      optional('/api/records?' + qs({ pair, endpoint, path, kind, before, limit: 50 })),
    ]);
    const p = summary && (summary.pairs || []).find((x) => x.name === pair);
    const e = p && (p.endpoints || []).find((x) => x.endpoint === endpoint);
    const out = [
      crumbs([{ text: 'Overview', href: '#/' }, { text: 'pair ' + pair }, { text: endpoint }]),
      h('h1', { class: 'mono', text: endpoint }),
    ];
    if (e) {
      const lat = e.latency_seconds || {};
      out.push(h('section', { class: 'card' }, h('div', { class: 'card-head' },
        h('div', { class: 'stats' },
          stat('compared', fmtInt(e.compared)),
          stat('diverged', fmtInt(e.diverged)),
          stat('divergence', fmtRate(e.divergence_rate), rateClass(e.divergence_rate)),
          stat('p50 primary / mirror', fmtSecs(lat.primary && lat.primary.p50) + ' / ' + fmtSecs(lat.mirror && lat.mirror.p50)),
          stat('p99 primary / mirror', fmtSecs(lat.primary && lat.primary.p99) + ' / ' + fmtSecs(lat.mirror && lat.mirror.p99))),
        h('div', null, h('div', { class: 'muted', style: 'font-size:12px;margin-bottom:3px', text: 'not compared, by reason' }), unmatchedChips(e.unmatched)))));
    }
    out.push(h('h3', { text: 'Fields that differ' }));
    if (e && (e.differences || []).length) {
      out.push(h('section', { class: 'card' }, fieldTable(e.differences.map((d) => ({ path: d.path, kind: d.kind, count: d.count })), 'pairs', pair, endpoint, path, e.compared)));
    } else if (fields && fields.length) {
      out.push(h('section', { class: 'card' }, fieldTable(fields.map((f) => ({ path: f.pattern, kind: f.kind, count: f.records })), 'records', pair, endpoint, path)));
    } else {
      out.push(h('section', { class: 'card empty', text: 'No differences recorded for this endpoint.' }));
    }
    const title = h('h3', null, 'Sample records');
    if (path || kind) {
      title.append(' ', h('span', { class: 'chip' }, 'field ', h('span', { class: 'mono', text: (path || '') + (kind ? ' ' + kind : '') }), ' ',
        h('a', { href: href(['pair', pair, 'endpoint', endpoint]), title: 'clear the filter', text: '✕' })));
    }
    out.push(title);
    if (page) {
      out.push(h('section', { class: 'card' }, recordsTable(page, false, ['pair', pair, 'endpoint', endpoint], { path, kind, before })));
    } else {
      out.push(h('section', { class: 'card empty', text: 'No diff store is attached to this server.' }));
    }
    return out;
  }

  // ---------------------------------------------------------------- one record

  function sideTitle(name, ex) {
    const st = ex.response ? String(ex.response.status) : 'no response';
    return [h('strong', { text: name }), ' ', h('span', { class: 'mono muted', text: ex.server }), ' · ' + st + ' · ' + fmtSecs(ex.latency_seconds)];
  }

  function flashPath(container, path) {
    const cells = [...container.querySelectorAll('td[data-path]')];
    const hit = cells.find((td) => onDiff(td.dataset.path, [{ path }])) ||
      (path === 'body' ? container.querySelector('td.soft') : null);
    if (!hit) return;
    const tr = hit.closest('tr');
    tr.scrollIntoView({ block: 'center', behavior: 'smooth' });
    tr.classList.add('flash');
    setTimeout(() => tr.classList.remove('flash'), 1600);
  }

  async function recordView(id) {
    setNav('records');
    const r = await api('/api/records/' + encodeURIComponent(id));
    const out = [
      crumbs([{ text: 'Overview', href: '#/' }, { text: 'pair ' + r.pair }, { text: r.endpoint, href: href(['pair', r.pair, 'endpoint', r.endpoint]) }, { text: 'record #' + r.id }]),
      h('h1', null, 'Record #' + r.id + ' ', r.diverged
        ? h('span', { class: 'chip bad', text: r.differences.length + (r.truncated ? '+' : '') + ' difference' + (r.differences.length === 1 ? '' : 's') })
        : h('span', { class: 'chip good', text: 'matched (kept for contrast)' })),
    ];
    if (!r.masked) out.push(h('p', { class: 'notice', text: 'This record was stored UNMASKED (a run with --unmasked): it may hold secrets.' }));
    const req = (ex) => (ex.request ? ex.request.method + ' ' + ex.request.uri : '(no request)');
    const dl = h('dl', { class: 'meta' },
      h('dt', { text: 'time' }), h('dd', { text: fmtTime(r.time) }),
      h('dt', { text: 'correlation id' }), h('dd', { text: r.correlation_id }),
      h('dt', { text: 'request' }), h('dd', { text: req(r.primary) + (req(r.mirror) !== req(r.primary) ? '  (mirror: ' + req(r.mirror) + ')' : '') }),
      h('dt', { text: 'bodies compared' }), h('dd', { text: r.body_comparison }),
      h('dt', { text: 'primary' }), h('dd', { text: r.primary.server + ' · ' + fmtSecs(r.primary.latency_seconds) + (r.primary.incomplete ? ' · incomplete: ' + r.primary.incomplete : '') }),
      h('dt', { text: 'mirror' }), h('dd', { text: r.mirror.server + ' · ' + fmtSecs(r.mirror.latency_seconds) + (r.mirror.incomplete ? ' · incomplete: ' + r.mirror.incomplete : '') }));
    out.push(h('section', { class: 'card' }, dl));

    const sides = h('section', { class: 'card', id: 'responses' },
      sideBySide(responseLines(r.primary), responseLines(r.mirror), r.differences, [sideTitle('primary', r.primary), sideTitle('mirror', r.mirror)]),
      h('div', { class: 'legend' },
        h('span', null, h('i', { style: 'background:var(--bad-bg);box-shadow:inset 3px 0 0 var(--bad-edge)' }), 'reported difference (primary)'),
        h('span', null, h('i', { style: 'background:var(--good-bg);box-shadow:inset 3px 0 0 var(--good-edge)' }), 'reported difference (mirror)'),
        h('span', null, h('i', { style: 'background:var(--warn-bg)' }), 'differs, not reported (ignored by a rule, or moved)')));

    if (r.differences.length) {
      out.push(h('h3', { text: 'Differences' }));
      const rows = r.differences.map((d) => h('tr', { class: 'link', dataset: { diff: d.path }, onclick: () => flashPath(sides, d.path), title: 'show in the responses' },
        h('td', { class: 'path', text: d.path }),
        h('td', null, kindTag(d.kind)),
        h('td', { class: 'val p', text: d.primary === null ? '(absent)' : d.primary }),
        h('td', { class: 'val m', text: d.mirror === null ? '(absent)' : d.mirror })));
      out.push(h('section', { class: 'card' }, h('table', { class: 'grid diffs' },
        h('thead', null, h('tr', null, h('th', { text: 'Location' }), h('th', { text: 'Kind' }), h('th', { text: 'Primary' }), h('th', { text: 'Mirror' }))),
        h('tbody', null, rows))));
    }
    out.push(h('h3', { text: 'Responses' }), sides);
    out.push(h('h3', { text: 'Requests' }),
      h('section', { class: 'card' }, sideBySide(requestLines(r.primary), requestLines(r.mirror), [], [h('strong', { text: 'primary' }), h('strong', { text: 'mirror' })])));
    return out;
  }

  // ---------------------------------------------------------------- all records, store

  async function recordsView(params) {
    setNav('records');
    const f = { pair: params.get('pair'), endpoint: params.get('endpoint'), kind: params.get('kind'), path: params.get('path'), before: params.get('before') };
    const page = await api('/api/records?' + qs(Object.assign({ limit: 100 }, f)));
    const input = (name, ph) => h('input', { name, placeholder: ph, value: f[name] || '' });
    const kind = h('select', { name: 'kind' }, h('option', { value: '', text: 'any kind' }),
      ['value', 'type', 'missing', 'extra', 'length', 'order', 'text', 'hash'].map((k) => h('option', { value: k, selected: f.kind === k, text: k })));
    const form = h('form', {
      class: 'filters',
      onsubmit: (ev) => {
        ev.preventDefault();
        const d = new FormData(form);
        go(['records'], { pair: d.get('pair'), endpoint: d.get('endpoint'), path: d.get('path'), kind: d.get('kind') });
      },
    }, input('pair', 'pair'), input('endpoint', 'endpoint, e.g. GET /api/orders/{id}'), input('path', 'field, e.g. $.items[*].price'), kind,
    h('button', { type: 'submit', text: 'Filter' }), h('a', { href: '#/records', text: 'clear' }));
    return [h('h1', { text: 'Records' }), h('section', { class: 'card' }, form, recordsTable(page, true, ['records'], f))];
  }

  async function storeView() {
    setNav('store');
    const s = await api('/api/store');
    const dl = h('dl', { class: 'meta' },
      h('dt', { text: 'database' }), h('dd', { text: s.path }),
      h('dt', { text: 'schema version' }), h('dd', { text: String(s.schema_version) }),
      h('dt', { text: 'size' }), h('dd', { text: fmtBytes(s.database_bytes) + ' + WAL ' + fmtBytes(s.wal_bytes) }),
      h('dt', { text: 'records' }), h('dd', { text: fmtInt(s.records) + ' (' + fmtInt(s.diverged) + ' diverged)' }),
      h('dt', { text: 'oldest' }), h('dd', { text: fmtTime(s.oldest) }),
      h('dt', { text: 'newest' }), h('dd', { text: fmtTime(s.newest) }));
    const out = [h('h1', { text: 'Store' }), h('section', { class: 'card' }, dl)];
    if (s.writer) {
      const w = s.writer;
      out.push(h('h3', { text: 'Writer (this process)' }), h('section', { class: 'card' }, h('div', { class: 'card-body' },
        h('div', { class: 'chips' }, Object.entries(w.records).map(([k, v]) => h('span', { class: 'chip ' + (k.startsWith('stored') ? 'good' : (v > 0 ? 'bad' : '')), text: k.replace(/_/g, ' ') + ' ' + fmtInt(v) }))),
        h('p', { class: 'muted', text: 'deleted by age ' + fmtInt(w.deleted_by_age) + ', by size ' + fmtInt(w.deleted_by_size) + ', ' + fmtInt(w.batches) + ' transactions' }),
        w.last_error ? h('p', { class: 'error', text: 'last error: ' + w.last_error }) : null)));
    }
    const runs = s.runs.map((r) => h('tr', null,
      h('td', { class: 'num', text: String(r.id) }), h('td', { class: 'mono', text: r.command }),
      h('td', { class: 'ep', text: r.label }), h('td', { class: 'mono', text: fmtTime(r.started) }),
      h('td', { class: 'mono', text: r.ended ? fmtTime(r.ended) : 'running (or stopped uncleanly)' }),
      h('td', null, r.masked ? h('span', { class: 'chip good', text: 'masked' }) : h('span', { class: 'chip bad', text: 'UNMASKED' })),
      h('td', { class: 'num', text: fmtInt(r.records) }), h('td', { text: r.has_summary ? 'yes' : 'no' })));
    out.push(h('h3', { text: 'Runs' }), h('section', { class: 'card' }, h('table', { class: 'grid' },
      h('thead', null, h('tr', null, ['Run', 'Command', 'Input', 'Started', 'Ended', 'Masking', 'Records', 'Summary'].map((t, i) => h('th', { class: i === 0 || i === 6 ? 'num' : null, text: t })))),
      h('tbody', null, runs))));
    return out;
  }

  // ---------------------------------------------------------------- dispatch

  async function route() {
    const mine = ++generation;
    const { parts, params } = parseHash();
    let view;
    if (parts.length === 0) view = overview();
    else if (parts[0] === 'pair' && parts.length === 4 && parts[2] === 'endpoint') view = endpointView(parts[1], parts[3], params);
    else if (parts[0] === 'record' && parts.length === 2) view = recordView(parts[1]);
    else if (parts[0] === 'records' && parts.length === 1) view = recordsView(params);
    else if (parts[0] === 'store' && parts.length === 1) view = storeView();
    else view = Promise.resolve([h('p', { class: 'error', text: 'No such view: #' + location.hash.slice(1) }), h('a', { href: '#/', text: 'Overview' })]);
    try {
      const nodes = await view;
      if (mine !== generation) return;
      app.replaceChildren(...nodes);
      document.body.dataset.view = parts[0] || 'overview';
      window.scrollTo(0, 0);
    } catch (e) {
      if (mine !== generation) return;
      if (e instanceof AuthError) {
        if (e.message === 'refused') {
          try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing kept */ }
        }
        tokenForm(e.message === 'refused');
        return;
      }
      app.replaceChildren(h('p', { class: 'error', text: e instanceof NotFound ? e.message : 'Could not load this view: ' + e.message }),
        h('a', { href: '#/', text: 'Back to the overview' }));
    }
  }

  window.addEventListener('hashchange', route);
  document.getElementById('refresh').addEventListener('click', () => { route(); loadSource(); });
  route();
  loadSource();
}());
