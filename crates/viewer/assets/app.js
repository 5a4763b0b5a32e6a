// rlm trajectory viewer. Plain JavaScript, no dependencies. Every text from a trace goes through esc() (or
// textContent) before it reaches the DOM.
'use strict';

const ROW_H = 26;          // px, fixed height of a tree row (the list is virtualised)
const OVERSCAN = 30;       // rows rendered above and below the viewport
const OUTLINE_PAGE = 5000; // outlines per request
const EXPAND_ALL_UNDER = 400; // traces with fewer events start fully expanded
const SHOW_CHARS = 100000; // longer texts are cut until "show all" is clicked

const S = {
  runs: [], runsLoaded: false, filter: { q: '', status: 'all' },
  run: null, // the open run: see openRun()
};

// ---------------------------------------------------------------- helpers

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}
// Where the viewer is mounted ("/" or e.g. "/ui/"): API URLs start there.
const BASE = (document.querySelector('meta[name=rlm-base]') || {}).content || '/';
function $(sel, root) { return (root || document).querySelector(sel); }
async function api(path) {
  const res = await fetch(BASE + path, { cache: 'no-store' });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}
function fmtMs(ms) {
  if (ms == null || isNaN(ms)) return '';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
}
function fmtNum(n) { return n == null ? '' : Number(n).toLocaleString('en-US'); }
function fmtCost(c) { return c == null ? '—' : `$${Number(c).toFixed(c < 0.01 ? 4 : 2)}`; }
function fmtTime(ms) { return ms == null ? '' : new Date(ms).toLocaleString(); }
function fmtBytes(b) {
  if (b < 1024) return `${b} B`;
  if (b < 1 << 20) return `${(b / 1024).toFixed(1)} KB`;
  return `${(b / (1 << 20)).toFixed(1)} MB`;
}
function statusOf(run) {
  if (run.status === 'running') return { cls: 'running', label: 'running' };
  const by = run.finished_by || 'unknown';
  if (by === 'limit') return { cls: 'limit', label: `limit: ${run.limit || '?'}` };
  if (by === 'error' || by === 'cancelled') return { cls: 'error', label: by };
  return { cls: 'ok', label: by };
}

// ---------------------------------------------------------------- code and markdown

const PY_KEYWORDS = new Set(('False None True and as assert async await break class continue def del elif else except ' +
  'finally for from global if import in is lambda nonlocal not or pass raise return try while with yield match case').split(' '));
const PY_BUILTINS = new Set(('print len range str int float list dict set tuple enumerate zip sorted sum min max any all ' +
  'open isinstance type map filter repr round abs reversed').split(' '));
const RLM_NAMES = new Set(['context', 'llm_query', 'llm_query_batched', 'rlm_query', 'rlm_query_batched', 'SHOW_VARS',
  'FINAL_VAR', 'FINAL', 'answer']);
const PY_TOKEN = /(#[^\n]*)|([rRbBuUfF]{0,2}(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?))|(\b\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?j?\b)|([A-Za-z_]\w*)/g;

// Highlights Python (and is harmless on anything else): comments, strings, numbers, keywords, builtins, REPL names.
function highlight(code) {
  let out = '', last = 0, m;
  PY_TOKEN.lastIndex = 0;
  while ((m = PY_TOKEN.exec(code))) {
    if (m[0] === '') { PY_TOKEN.lastIndex++; continue; }
    out += esc(code.slice(last, m.index));
    let cls = null;
    if (m[1]) cls = 'c';
    else if (m[2]) cls = 's';
    else if (m[3]) cls = 'n';
    else if (m[4]) cls = PY_KEYWORDS.has(m[4]) ? 'k' : RLM_NAMES.has(m[4]) ? 'r' : PY_BUILTINS.has(m[4]) ? 'b' : null;
    out += cls ? `<span class="t${cls}">${esc(m[0])}</span>` : esc(m[0]);
    last = m.index + m[0].length;
  }
  return out + esc(code.slice(last));
}

function inline(text) {
  // text is already escaped
  return text
    .replace(/`([^`\n]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*\n]+)\*\*/g, '<strong>$1</strong>')
    .replace(/(^|[\s(])\*([^*\n]+)\*(?=[\s).,!?:;]|$)/g, '$1<em>$2</em>')
    .replace(/\b(FINAL(?:_VAR)?\()/g, '<mark>$1</mark>');
}

function mdText(text) {
  const out = [];
  let para = [], list = null;
  const flush = () => {
    if (para.length) out.push(`<p>${inline(esc(para.join('\n'))).replace(/\n/g, '<br>')}</p>`);
    para = [];
    if (list) out.push(`<ul>${list.map((li) => `<li>${inline(esc(li))}</li>`).join('')}</ul>`);
    list = null;
  };
  for (const line of text.split('\n')) {
    const h = /^(#{1,6})\s+(.*)$/.exec(line);
    const li = /^\s*(?:[-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (h) { flush(); out.push(`<h${Math.min(h[1].length + 2, 6)}>${inline(esc(h[2]))}</h${Math.min(h[1].length + 2, 6)}>`); }
    else if (li) { if (para.length) { const l = list; list = null; flush(); list = l; } (list = list || []).push(li[1]); }
    else if (!line.trim()) flush();
    else { if (list) flush(); para.push(line); }
  }
  flush();
  return out.join('');
}

// Markdown, simply: fenced code (highlighted), headings, lists, paragraphs, `code`, **bold**, *em*. Escapes all HTML.
function markdown(text) {
  const out = [];
  const fence = /```([\w+-]*)[^\n]*\n([\s\S]*?)(?:```|$)/g;
  let last = 0, m;
  while ((m = fence.exec(text))) {
    out.push(mdText(text.slice(last, m.index)));
    const lang = m[1] || 'text';
    out.push(`<div class="fence"><span class="lang">${esc(lang)}</span><pre class="code">${highlight(m[2])}</pre></div>`);
    last = fence.lastIndex;
    if (m[0].length === 0) break;
  }
  out.push(mdText(text.slice(last)));
  return out.join('');
}

// A long text, cut to SHOW_CHARS with a button revealing the rest.
let clipSeq = 0;
const clipped = new Map();
function clip(text, cls, render) {
  text = String(text ?? '');
  const fmt = render || esc;
  if (text.length <= SHOW_CHARS) return `<pre class="${cls}">${fmt(text)}</pre>`;
  const id = `clip${++clipSeq}`;
  clipped.set(id, { text, fmt });
  return `<pre class="${cls}" id="${id}">${fmt(text.slice(0, SHOW_CHARS))}</pre>` +
    `<button class="more" data-clip="${id}">show all ${fmtNum(text.length)} characters</button>`;
}
document.addEventListener('click', (e) => {
  const b = e.target.closest('button.more');
  if (!b) return;
  const c = clipped.get(b.dataset.clip);
  const pre = document.getElementById(b.dataset.clip);
  if (c && pre) { pre.innerHTML = c.fmt(c.text); b.remove(); }
});

// ---------------------------------------------------------------- run list

async function loadRuns() {
  const data = await api('api/runs');
  S.runs = data.runs;
  S.runsLoaded = true;
}

function renderList() {
  $('#crumbs').innerHTML = '';
  const app = $('#app');
  if (!$('#runlist', app)) {
    app.innerHTML = `<section id="runlist">
      <div class="toolbar"><input id="search" type="search" placeholder="Search queries, answers, ids, files  ( / )" autocomplete="off">
      <select id="status"><option value="all">all</option><option value="running">running</option>
      <option value="ok">answered</option><option value="limit">limit hit</option><option value="error">error / cancelled</option>
      <option value="errors">with errors</option></select><span id="count" class="muted"></span></div>
      <table class="runs"><thead><tr><th>status</th><th>query</th><th>answer</th><th class="num">iter.</th>
      <th class="num">sub-calls</th><th class="num">tokens</th><th class="num">cost</th><th class="num">duration</th>
      <th>started</th><th>file</th></tr></thead><tbody id="runrows"></tbody></table></section>`;
    const search = $('#search');
    search.value = S.filter.q;
    $('#status').value = S.filter.status;
    search.addEventListener('input', () => { S.filter.q = search.value; renderRunRows(); });
    $('#status').addEventListener('change', () => { S.filter.status = $('#status').value; renderRunRows(); });
  }
  renderRunRows();
}

function renderRunRows() {
  const body = $('#runrows');
  if (!body) return;
  const q = S.filter.q.trim().toLowerCase();
  const want = S.filter.status;
  const rows = S.runs.filter((r) => {
    const st = statusOf(r).cls;
    if (want === 'errors' ? r.errors === 0 : want !== 'all' && st !== want) return false;
    if (!q) return true;
    return [r.query, r.answer, r.run_id, r.source, r.root_model, r.error].some((f) => f && String(f).toLowerCase().includes(q));
  }).reverse();
  $('#count').textContent = `${rows.length} of ${S.runs.length} runs`;
  if (!S.runsLoaded) { body.innerHTML = '<tr><td colspan="10" class="muted">Loading…</td></tr>'; return; }
  if (!rows.length) { body.innerHTML = '<tr><td colspan="10" class="muted">No runs match.</td></tr>'; return; }
  body.innerHTML = rows.map((r) => {
    const st = statusOf(r);
    return `<tr class="run" data-run="${esc(r.run_id)}">
      <td><span class="badge ${st.cls}">${esc(st.label)}</span>${r.errors ? ` <span class="badge error" title="events with errors">${r.errors} err</span>` : ''}</td>
      <td class="q"><a href="#/run/${esc(r.run_id)}">${esc(r.query || '(no query)')}</a></td>
      <td class="a">${esc(r.answer || r.error || '')}</td>
      <td class="num">${fmtNum(r.iterations)}</td><td class="num">${fmtNum(r.sub_calls)}</td>
      <td class="num">${fmtNum(r.tokens)}</td><td class="num">${fmtCost(r.cost)}</td>
      <td class="num">${fmtMs(r.duration_ms)}</td><td class="muted">${esc(fmtTime(r.started_ms))}</td>
      <td class="muted" title="${esc(fmtBytes(r.bytes))}, ${fmtNum(r.events)} events">${esc(r.source)}</td></tr>`;
  }).join('');
}

document.addEventListener('click', (e) => {
  const tr = e.target.closest('tr.run');
  if (tr && !e.target.closest('a')) location.hash = `#/run/${tr.dataset.run}`;
});

// ---------------------------------------------------------------- one run: loading and the tree model

function openRun(runId) {
  S.run = {
    id: runId, outline: [], total: null, loading: false, done: false, firstRender: null,
    started: performance.now(), root: null, rows: [], byKey: new Map(), explicit: new Map(),
    selected: null, pendingNode: null, events: new Map(), counts: {},
  };
}

async function loadOutline() {
  const run = S.run;
  if (!run || run.loading) { if (run) run.again = true; return; }
  run.loading = true;
  try {
    do {
      run.again = false;
      for (;;) {
        const page = await api(`api/runs/${run.id}/outline?offset=${run.outline.length}&limit=${OUTLINE_PAGE}`);
        if (S.run !== run) return;
        run.total = page.total;
        if (page.items.length) {
          for (const item of page.items) run.outline[item.seq] = item;
          rebuild();
        }
        if (!page.items.length || run.outline.length >= page.total) break;
      }
    } while (run.again);
    run.done = true;
  } catch (err) {
    if (S.run === run) $('#app').innerHTML = `<p class="error">Cannot load run ${esc(run.id)}: ${esc(err.message)}</p>`;
  } finally {
    run.loading = false;
  }
}

function node(kind, key, ev, extra) {
  return Object.assign({ kind, key, ev, children: [], start: null, end: null, parent: null }, extra);
}

// Rebuilds the tree from the outline: runs → iterations → model call, cells (with the sub-calls made while each
// cell ran, batches grouped) → child runs under their sub-calls, to any depth.
function buildTree(outline, rootId) {
  const runs = new Map();
  const runOf = (id) => {
    if (!runs.has(id)) runs.set(id, { id, meta: null, fin: null, events: [], attached: false });
    return runs.get(id);
  };
  for (const ev of outline) {
    if (!ev) continue;
    const r = runOf(ev.run_id);
    if (ev.type === 'metadata') r.meta = ev;
    else if (ev.type === 'final') r.fin = ev;
    else r.events.push(ev);
  }
  const counts = { iterations: 0, sub_calls: 0, child_runs: 0, cells: 0, model_calls: 0, errors: 0 };
  const byKey = new Map();
  const add = (parent, child) => { child.parent = parent; parent.children.push(child); byKey.set(child.key, child); return child; };

  const groupSubCalls = (parent, calls) => {
    const batches = new Map();
    for (const ev of calls) {
      if (ev.batch_id && ev.batch_size > 1) {
        let b = batches.get(ev.batch_id);
        if (!b) { b = add(parent, node('batch', `batch:${ev.batch_id}`, ev, { size: ev.batch_size, items: [] })); batches.set(ev.batch_id, b); }
        b.items.push(ev);
      } else {
        subCall(parent, ev);
      }
    }
    for (const b of batches.values()) {
      b.items.sort((x, y) => (x.batch_index ?? 0) - (y.batch_index ?? 0));
      for (const ev of b.items) subCall(b, ev);
    }
  };
  const subCall = (parent, ev) => {
    counts.sub_calls++;
    const n = add(parent, node('sub_call', ev.event_id, ev));
    if (ev.child_run_id && runs.has(ev.child_run_id)) buildRun(n, runs.get(ev.child_run_id));
    return n;
  };
  const buildRun = (parent, r) => {
    r.attached = true;
    if (parent) counts.child_runs++;
    const rn = node('run', `run:${r.id}`, r.meta || r.fin, { runId: r.id, meta: r.meta, fin: r.fin });
    if (parent) add(parent, rn); else byKey.set(rn.key, rn);
    if (r.meta) add(rn, node('metadata', r.meta.event_id, r.meta));
    const iterations = new Map();
    const loose = [];
    const pendingOf = new Map(); // iteration → sub-calls recorded since its last cell
    for (const ev of r.events) {
      if (ev.iteration == null) { loose.push(ev); continue; }
      let it = iterations.get(ev.iteration);
      if (!it) {
        it = add(rn, node('iteration', `it:${r.id}:${ev.iteration}`, ev, { n: ev.iteration, runId: r.id }));
        iterations.set(ev.iteration, it);
        pendingOf.set(it, []);
        if (r.id === rootId) counts.iterations++;
      }
      if (ev.error) counts.errors++;
      if (ev.type === 'model_call') { counts.model_calls++; add(it, node('model_call', ev.event_id, ev)); }
      else if (ev.type === 'cell') {
        counts.cells++;
        const cell = add(it, node('cell', ev.event_id, ev));
        groupSubCalls(cell, pendingOf.get(it));
        pendingOf.set(it, []);
      } else if (ev.type === 'sub_call') pendingOf.get(it).push(ev);
      else add(it, node(ev.type, ev.event_id, ev));
    }
    // Sub-calls of a cell that is still running.
    for (const [it, pending] of pendingOf) if (pending.length) groupSubCalls(it, pending);
    for (const ev of loose) add(rn, node(ev.type, ev.event_id, ev));
    rn.iterations = iterations;
    return rn;
  };

  const rootRun = runs.get(rootId) || runOf(rootId);
  const root = buildRun(null, rootRun);
  // Child runs whose sub-call is not recorded yet (it is written when the child ends): show them, running, under
  // their parent's latest iteration.
  let placed = true;
  while (placed) {
    placed = false;
    for (const r of runs.values()) {
      if (r.attached || !r.meta || !r.meta.parent_run_id) continue;
      const parent = byKey.get(`run:${r.meta.parent_run_id}`);
      if (!parent) continue;
      const its = [...parent.iterations.values()];
      const host = its.length ? its[its.length - 1] : parent;
      buildRun(host, r);
      placed = true;
    }
  }
  for (const r of runs.values()) {
    if (r.fin) {
      const rn = byKey.get(`run:${r.id}`);
      if (rn) add(rn, node('final', r.fin.event_id, r.fin));
      if (r.fin.error) counts.errors++;
    }
  }
  timeSpan(root);
  return { root, byKey, counts };
}

function timeSpan(n) {
  let start = null, end = null;
  const ev = n.ev;
  if (ev && ev.ts_ms != null && n.kind !== 'run' && n.kind !== 'iteration' && n.kind !== 'batch') {
    start = ev.ts_ms;
    end = ev.ts_ms + (n.kind === 'final' || n.kind === 'metadata' ? 0 : ev.ms || 0);
  }
  for (const c of n.children) {
    timeSpan(c);
    if (c.start != null && (start == null || c.start < start)) start = c.start;
    if (c.end != null && (end == null || c.end > end)) end = c.end;
  }
  if (n.kind === 'run' && n.meta && n.meta.ts_ms != null) {
    start = n.meta.ts_ms;
    if (n.fin && n.fin.ms != null) end = Math.max(end ?? start, start + n.fin.ms);
  }
  n.start = start;
  n.end = end;
}

function defaultExpanded(n) {
  const run = S.run;
  if ((run.total ?? 0) <= EXPAND_ALL_UNDER) return true;
  if (n.kind === 'run' && !n.parent) return true;
  if (n.kind === 'iteration' && n.parent && !n.parent.parent) return true;
  return false;
}
function isExpanded(n) {
  const e = S.run.explicit.get(n.key);
  return e === undefined ? defaultExpanded(n) : e;
}

function flatten() {
  const run = S.run;
  const rows = [];
  const walk = (n, level) => {
    rows.push({ n, level });
    if (n.children.length && isExpanded(n)) for (const c of n.children) walk(c, level + 1);
  };
  if (run.root) walk(run.root, 0);
  run.rows = rows;
}

let rebuildTimer = null;
function rebuild() {
  // Coalesce bursts of pages and live updates.
  if (rebuildTimer) return;
  const run = S.run;
  const now = () => {
    rebuildTimer = null;
    if (S.run !== run) return;
    const t = buildTree(run.outline, run.id);
    run.root = t.root; run.byKey = t.byKey; run.counts = t.counts;
    renderRun();
  };
  if (!run.root) now(); else rebuildTimer = setTimeout(now, 120);
}

// ---------------------------------------------------------------- one run: rendering

function summaryOf(runId) { return S.runs.find((r) => r.run_id === runId); }

function renderRunShell() {
  const run = S.run;
  $('#crumbs').innerHTML = `› <a href="#/run/${esc(run.id)}">run ${esc(run.id.slice(0, 8))}</a>`;
  $('#app').innerHTML = `<section id="runview">
    <div id="runhead"></div>
    <div class="split">
      <div class="left">
        <div class="toolbar">
          <button id="expand-all" title="e">Expand all</button><button id="collapse-all" title="c">Collapse</button>
          <button id="next-error" title="n">Next problem</button>
          <span class="muted keys">j/k iterations · ↑/↓ rows · ←/→ fold · Enter opens</span>
          <span id="progress" class="muted"></span>
        </div>
        <div class="rowhead"><span>tree</span><span id="scale"></span></div>
        <div id="rows" tabindex="0"><div id="spacer"></div></div>
      </div>
      <div class="right" id="detail"><p class="muted">Select a node (click, or j/k) to see its details.</p></div>
    </div></section>`;
  const rows = $('#rows');
  rows.addEventListener('scroll', () => scheduleRows());
  rows.addEventListener('click', onRowClick);
  $('#expand-all').addEventListener('click', () => setAll(true));
  $('#collapse-all').addEventListener('click', () => setAll(false));
  $('#next-error').addEventListener('click', () => nextProblem());
  window.addEventListener('resize', scheduleRows);
}

function renderRun() {
  const run = S.run;
  if (!run) return;
  if (!$('#runview')) renderRunShell();
  flatten();
  renderHead();
  if (run.pendingNode && run.byKey.has(run.pendingNode)) {
    const key = run.pendingNode;
    run.pendingNode = null;
    select(key, true);
  }
  renderRows();
  if (run.firstRender == null && run.rows.length) {
    run.firstRender = performance.now() - run.started;
    window.__rlmFirstRenderMs = run.firstRender;
  }
  const p = $('#progress');
  if (p) p.textContent = run.total != null && run.outline.length < run.total ? `loading ${fmtNum(run.outline.length)} / ${fmtNum(run.total)} events…` : `${fmtNum(run.outline.length)} events`;
}

function renderHead() {
  const run = S.run;
  const s = summaryOf(run.id) || {};
  const root = run.root;
  const meta = root && root.meta;
  const fin = root && root.fin;
  const st = statusOf(fin ? { status: 'finished', finished_by: fin.finished_by, limit: fin.limit } : { status: 'running' });
  const c = run.counts;
  const tokens = fin && fin.tokens != null ? fin.tokens : s.tokens;
  const duration = root && root.start != null && root.end != null ? root.end - root.start : s.duration_ms;
  const head = $('#runhead');
  head.dataset.iterations = c.iterations;
  head.dataset.subCalls = c.sub_calls;
  head.dataset.childRuns = c.child_runs;
  head.dataset.events = run.outline.length;
  head.dataset.status = st.cls;
  head.innerHTML = `<div class="q">${esc(meta ? meta.preview : '(no metadata yet)')}</div>
    <div class="stats"><span class="badge ${st.cls}">${esc(st.label)}</span>
    <span data-stat="iterations"><b>${fmtNum(c.iterations)}</b> iterations</span>
    <span data-stat="sub-calls"><b>${fmtNum(c.sub_calls)}</b> sub-calls</span>
    <span data-stat="child-runs"><b>${fmtNum(c.child_runs)}</b> child runs</span>
    <span><b>${fmtNum(c.cells)}</b> cells</span>
    <span><b>${fmtNum(tokens)}</b> tokens</span>
    ${s.cost != null ? `<span><b>${fmtCost(s.cost)}</b></span>` : ''}
    <span><b>${fmtMs(duration)}</b></span>
    ${c.errors ? `<span class="badge error">${c.errors} errors</span>` : ''}
    ${meta && meta.model ? `<span class="muted">${esc(meta.model)}</span>` : ''}</div>
    ${fin ? `<div class="answer ${st.cls}"><b>answer</b> ${esc(fin.preview || fin.error || '')}</div>` : ''}`;
  const scale = $('#scale');
  if (scale) scale.textContent = duration != null ? `timeline · ${fmtMs(duration)}` : 'timeline';
}

const ICON = { run: 'RLM', metadata: 'meta', iteration: 'iter', model_call: 'model', cell: 'cell', batch: 'batch', sub_call: 'call', compaction: 'compact', final: 'final' };

function label(n) {
  const ev = n.ev || {};
  switch (n.kind) {
    case 'run': return `${n.parent ? 'child RLM' : 'run'} · depth ${ev.depth ?? 0} · ${esc((n.meta && n.meta.preview) || '')}`;
    case 'metadata': return `${esc(ev.model || '')} · ${esc(ev.preview || '')}`;
    case 'iteration': {
      const cells = n.children.filter((c) => c.kind === 'cell').length;
      return `Iteration ${n.n} · ${cells} cell${cells === 1 ? '' : 's'}`;
    }
    case 'model_call': return `${esc(ev.model || '')}${ev.purpose === 'final_answer' ? ' · asked for a final answer' : ''} · ${esc(ev.preview || '')}`;
    case 'cell': return `In [${ev.cell_index ?? '?'}] ${esc(ev.preview || '')}`;
    case 'batch': return `${ev.call_kind === 'rlm' ? 'rlm_query_batched' : 'llm_query_batched'} × ${n.size}`;
    case 'sub_call': return `${ev.call_kind === 'rlm' ? 'rlm_query' : 'llm_query'}${ev.batch_size > 1 ? ` [${ev.batch_index}]` : ''} → ${esc(ev.model || '')} · ${esc(ev.preview || '')}`;
    case 'final': return `${esc(ev.finished_by || '')} · ${esc(ev.preview || '')}`;
    case 'compaction': return `compaction · ${esc(ev.preview || '')}`;
    default: return esc(ev.type || n.kind);
  }
}

function badges(n) {
  const ev = n.ev || {};
  const out = [];
  if (n.kind === 'run' && !n.fin) out.push('<span class="badge running">running</span>');
  if (ev.error && n.kind !== 'run' && n.kind !== 'iteration' && n.kind !== 'batch') out.push(`<span class="badge error" title="${esc(ev.error)}">error</span>`);
  if (ev.truncated && n.kind === 'cell') out.push(`<span class="badge warn">truncated ${fmtNum(ev.truncated)}</span>`);
  if (n.kind === 'final' && ev.limit) out.push(`<span class="badge limit">limit: ${esc(ev.limit)}</span>`);
  if (n.kind === 'batch') {
    const failed = n.children.filter((c) => c.ev && c.ev.error).length;
    if (failed) out.push(`<span class="badge error">${failed} failed</span>`);
  }
  if (n.kind === 'run' && n.fin && n.fin.error) out.push('<span class="badge error">error</span>');
  const tokens = n.kind === 'run' ? n.fin && n.fin.tokens : ['model_call', 'sub_call', 'compaction'].includes(n.kind) ? ev.tokens : null;
  if (tokens) out.push(`<span class="tok">${fmtNum(tokens)} tok</span>`);
  if (ev.cost != null && n.kind !== 'iteration') out.push(`<span class="tok">${fmtCost(ev.cost)}</span>`);
  return out.join('');
}

let rowsFrame = null;
function scheduleRows() {
  if (rowsFrame) return;
  rowsFrame = requestAnimationFrame(() => { rowsFrame = null; renderRows(); });
}

// Renders only the rows in (and near) the viewport.
function renderRows() {
  const run = S.run;
  const box = $('#rows');
  if (!run || !box) return;
  const spacer = $('#spacer');
  spacer.style.height = `${run.rows.length * ROW_H}px`;
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - OVERSCAN);
  const last = Math.min(run.rows.length, Math.ceil((box.scrollTop + box.clientHeight) / ROW_H) + OVERSCAN);
  const root = run.root;
  const t0 = root ? root.start : null;
  const span = root && root.end != null && t0 != null ? Math.max(1, root.end - t0) : null;
  let html = '';
  for (let i = first; i < last; i++) {
    const { n, level } = run.rows[i];
    const ev = n.ev || {};
    const open = n.children.length ? (isExpanded(n) ? '▾' : '▸') : '';
    const problem = (ev.error && !['run', 'iteration', 'batch'].includes(n.kind)) || (n.kind === 'final' && (ev.limit || ev.error));
    const cls = `row k-${n.kind}${n.key === run.selected ? ' sel' : ''}${problem ? ' bad' : ''}${n.kind === 'final' && !problem ? ' good' : ''}`;
    let bar = '';
    if (span && n.start != null) {
      const left = ((n.start - t0) / span) * 100;
      const width = Math.max(0.4, (((n.end ?? n.start) - n.start) / span) * 100);
      bar = `<span class="bar b-${n.kind}${problem ? ' bad' : ''}" style="left:${left.toFixed(3)}%;width:${Math.min(width, 100 - left).toFixed(3)}%"></span>`;
    }
    const dur = n.start != null && n.end != null && n.kind !== 'final' && n.kind !== 'metadata' ? fmtMs(n.end - n.start) : '';
    html += `<div class="${cls}" data-i="${i}" data-kind="${n.kind}" data-level="${level}" data-key="${esc(n.key)}" style="top:${i * ROW_H}px">
      <span class="tree" style="padding-left:${level * 16 + 4}px"><span class="tog">${open}</span><span class="icon i-${n.kind}">${ICON[n.kind] || esc(n.kind)}</span><span class="lbl">${label(n)}</span></span>
      <span class="meta">${badges(n)}<span class="ms">${dur}</span></span><span class="wf">${bar}</span></div>`;
  }
  // Keep the spacer, replace the rest.
  while (spacer.nextSibling) spacer.nextSibling.remove();
  spacer.insertAdjacentHTML('afterend', html);
}

function onRowClick(e) {
  const row = e.target.closest('.row');
  if (!row) return;
  const { n } = S.run.rows[Number(row.dataset.i)] || {};
  if (!n) return;
  if (e.target.closest('.tog') && n.children.length) { toggle(n); return; }
  select(n.key, false);
}

function toggle(n, value) {
  const run = S.run;
  run.explicit.set(n.key, value === undefined ? !isExpanded(n) : value);
  flatten();
  renderRows();
}

function setAll(value) {
  const run = S.run;
  for (const n of run.byKey.values()) if (n.children.length) run.explicit.set(n.key, value || (n.kind === 'run' && !n.parent));
  flatten();
  renderRows();
}

// Selects a node: expands its ancestors, scrolls it into view, shows its details and updates the deep link.
function select(key, scroll) {
  const run = S.run;
  const n = run.byKey.get(key);
  if (!n) { run.pendingNode = key; return; }
  for (let p = n.parent; p; p = p.parent) if (!isExpanded(p)) run.explicit.set(p.key, true);
  run.selected = key;
  flatten();
  const i = run.rows.findIndex((r) => r.n === n);
  const box = $('#rows');
  if (box && i >= 0) {
    const top = i * ROW_H;
    if (scroll || top < box.scrollTop || top + ROW_H > box.scrollTop + box.clientHeight) {
      if (top < box.scrollTop || top + ROW_H > box.scrollTop + box.clientHeight) box.scrollTop = Math.max(0, top - box.clientHeight / 3);
    }
  }
  renderRows();
  const link = `#/run/${run.id}/node/${encodeURIComponent(key)}`;
  if (location.hash !== link) history.replaceState(null, '', link);
  showDetail(n);
}

function moveSelection(delta, kinds) {
  const run = S.run;
  if (!run || !run.rows.length) return;
  let i = run.rows.findIndex((r) => r.n.key === run.selected);
  for (let step = 0; step < run.rows.length; step++) {
    i += delta;
    if (i < 0 || i >= run.rows.length) return;
    if (!kinds || kinds.includes(run.rows[i].n.kind)) { select(run.rows[i].n.key, false); return; }
  }
}

function nextProblem() {
  const run = S.run;
  const all = [];
  const walk = (n) => { all.push(n); n.children.forEach(walk); };
  if (run.root) walk(run.root);
  const bad = (n) => { const ev = n.ev || {}; return (ev.error && !['run', 'iteration', 'batch'].includes(n.kind)) || (n.kind === 'cell' && ev.truncated) || (n.kind === 'final' && ev.limit); };
  const at = all.findIndex((n) => n.key === run.selected);
  const next = all.slice(at + 1).find(bad) || all.find(bad);
  if (next) select(next.key, true);
}

document.addEventListener('keydown', (e) => {
  if (e.target.closest && e.target.closest('input, select, textarea')) {
    if (e.key === 'Escape') e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (!S.run || !$('#runview')) {
    if (e.key === '/') { const s = $('#search'); if (s) { e.preventDefault(); s.focus(); } }
    return;
  }
  const run = S.run;
  const cur = run.byKey.get(run.selected);
  switch (e.key) {
    case 'j': moveSelection(1, ['iteration']); break;
    case 'k': moveSelection(-1, ['iteration']); break;
    case 'ArrowDown': moveSelection(1); break;
    case 'ArrowUp': moveSelection(-1); break;
    case 'ArrowRight': if (cur && cur.children.length) toggle(cur, true); break;
    case 'ArrowLeft': if (cur && cur.children.length && isExpanded(cur)) toggle(cur, false); else if (cur && cur.parent) select(cur.parent.key, false); break;
    case 'Enter': if (cur && cur.children.length) toggle(cur); break;
    case 'e': setAll(true); break;
    case 'c': setAll(false); break;
    case 'n': nextProblem(); break;
    case 'Escape': location.hash = '#/'; break;
    default: return;
  }
  e.preventDefault();
});

// ---------------------------------------------------------------- details

async function fullEvent(seq) {
  const run = S.run;
  if (run.events.has(seq)) return run.events.get(seq);
  const page = await api(`api/runs/${run.id}/events?offset=${seq}&limit=1`);
  const ev = page.items[0];
  if (run.events.size > 500) run.events.clear();
  run.events.set(seq, ev);
  return ev;
}

function kv(pairs) {
  return `<dl class="kv">${pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('')}</dl>`;
}

function usageLine(u) {
  if (!u) return '';
  const t = u.total || u;
  return `${fmtNum((t.prompt_tokens || 0) + (t.completion_tokens || 0))} (prompt ${fmtNum(t.prompt_tokens)}, completion ${fmtNum(t.completion_tokens)}${t.cached_tokens ? `, cached ${fmtNum(t.cached_tokens)}` : ''}; ${fmtNum(t.calls)} calls)`;
}

function cellHtml(ev) {
  const err = ev.error;
  return `<div class="cellbox${err ? ' bad' : ''}">
    <div class="cellhead">In [${esc(ev.index)}] <span class="muted">${fmtMs(ev.duration_ms)}</span>${ev.truncated_chars ? ` <span class="badge warn">output truncated: ${fmtNum(ev.truncated_chars)} characters not shown to the model</span>` : ''}</div>
    ${clip(ev.code, 'code cell-code', highlight)}
    ${ev.stdout ? `<div class="outhead">Out [${esc(ev.index)}]</div>${clip(ev.stdout, 'out cell-stdout')}` : ''}
    ${ev.stderr ? `<div class="outhead">stderr</div>${clip(ev.stderr, 'out err cell-stderr')}` : ''}
    ${err ? `<div class="outhead bad">${esc(err.kind)}: ${esc(err.message)}</div>${err.traceback ? clip(err.traceback, 'out err cell-traceback') : ''}` : ''}
    ${!ev.stdout && !ev.stderr && !err ? '<div class="muted">(no output)</div>' : ''}</div>`;
}

function messagesHtml(messages) {
  return (messages || []).map((m) => `<details class="msg"><summary>${esc(m.role)} · ${fmtNum((m.content || '').length)} chars</summary>${clip(m.content, 'out')}</details>`).join('');
}

let detailSeq = 0;
async function showDetail(n) {
  const box = $('#detail');
  if (!box) return;
  const my = ++detailSeq;
  const ev = n.ev || {};
  const title = `<h3><span class="icon i-${n.kind}">${ICON[n.kind] || ''}</span> ${label(n)}</h3>`;
  box.innerHTML = `${title}<p class="muted">Loading…</p>`;
  box.dataset.kind = n.kind;
  box.dataset.key = n.key;
  let body = '';
  try {
    if (n.kind === 'iteration') {
      // The iteration as a notebook: the response, then each cell with its output.
      const parts = [];
      for (const c of n.children) {
        if (c.kind !== 'model_call' && c.kind !== 'cell') continue;
        const full = await fullEvent(c.ev.seq);
        if (c.kind === 'model_call') parts.push(`<div class="resp">${full.response != null ? markdown(full.response) : `<p class="error">${esc(full.error)}</p>`}</div>`);
        else parts.push(cellHtml(full));
      }
      const calls = countKind(n, 'sub_call');
      body = kv([['duration', fmtMs(n.end - n.start)], ['sub-calls', calls ? fmtNum(calls) : '']]) + parts.join('');
    } else if (n.kind === 'batch') {
      body = kv([['size', fmtNum(n.size)], ['wall time', fmtMs(n.end - n.start)],
        ['sum of latencies', fmtMs(n.children.reduce((a, c) => a + (c.ev.ms || 0), 0))],
        ['failed', fmtNum(n.children.filter((c) => c.ev.error).length)]]) +
        '<p class="muted">The bars in the timeline show how the calls overlapped. Select a call for its prompt and response.</p>';
    } else if (n.kind === 'run') {
      const meta = n.meta ? await fullEvent(n.meta.seq) : null;
      const fin = n.fin ? await fullEvent(n.fin.seq) : null;
      body = (fin ? finalHtml(fin) : '<p><span class="badge running">running</span></p>') + (meta ? metadataHtml(meta) : '');
    } else {
      const full = await fullEvent(ev.seq);
      if (n.kind === 'cell') body = cellHtml(full);
      else if (n.kind === 'model_call') {
        body = kv([['model', esc(full.model)], ['purpose', esc(full.purpose)], ['latency', fmtMs(full.latency_ms)],
          ['tokens', usageLine(full.usage)], ['messages sent', fmtNum(full.history_len)]]) +
          (full.error ? `<div class="errbox">${esc(full.error)}</div>` : '') +
          (full.response != null ? `<h4>response</h4><div class="resp">${markdown(full.response)}</div>` : '') +
          `<h4>new messages in this request (${(full.new_messages || []).length})</h4>${messagesHtml(full.new_messages)}`;
      } else if (n.kind === 'sub_call') {
        body = kv([['kind', esc(full.kind)], ['model', esc(full.model)], ['latency', fmtMs(full.latency_ms)], ['tokens', usageLine(full.usage)],
          ['batch', full.batch_id ? `${esc(full.batch_index)} of ${esc(full.batch_size)}` : ''],
          ['child run', full.child_run_id ? `<a href="#" class="jump" data-key="run:${esc(full.child_run_id)}">${esc(full.child_run_id)}</a>` : '']]) +
          (full.error ? `<div class="errbox">${esc(full.error)}</div>` : '') +
          `<h4>prompt</h4>${clip(full.prompt, 'out sub-prompt')}` +
          (full.response != null ? `<h4>response</h4>${clip(full.response, 'out sub-response')}` : '');
      } else if (n.kind === 'compaction') {
        body = kv([['model', esc(full.model)], ['messages replaced', fmtNum(full.replaced_messages)],
          ['estimated tokens', `${fmtNum(full.tokens_before)} → ${fmtNum(full.tokens_after)}`],
          ['window', `${fmtNum(full.window_tokens)} tokens (compacts at ${Math.round((full.threshold || 0) * 100)}%)`],
          ['full messages in', `<code>${esc(full.history_variable)}</code>`], ['latency', fmtMs(full.latency_ms)],
          ['tokens', usageLine(full.usage)]]) +
          (full.error ? `<div class="errbox">${esc(full.error)}</div>` : '') +
          (full.summary != null ? `<h4>summary</h4>${clip(full.summary, 'out compaction-summary')}` : '');
      } else if (n.kind === 'final') body = finalHtml(full);
      else if (n.kind === 'metadata') body = metadataHtml(full);
      else body = `<pre class="out">${esc(JSON.stringify(full, null, 2))}</pre>`;
    }
  } catch (err) {
    body = `<p class="error">${esc(err.message)}</p>`;
  }
  if (my !== detailSeq) return;
  box.innerHTML = title + body + `<p class="muted small">event ${esc(ev.event_id || n.key)} · <a href="#/run/${esc(S.run.id)}/node/${esc(encodeURIComponent(n.key))}">link</a></p>`;
  box.scrollTop = 0;
}

function countKind(n, kind) { return n.children.reduce((a, c) => a + (c.kind === kind ? 1 : 0) + countKind(c, kind), 0); }

function finalHtml(f) {
  const st = statusOf({ status: 'finished', finished_by: f.finished_by, limit: f.limit });
  const models = f.usage && f.usage.by_model ? Object.entries(f.usage.by_model).map(([m, u]) => `<tr><td>${esc(m)}</td><td class="num">${fmtNum(u.calls)}</td><td class="num">${fmtNum(u.prompt_tokens)}</td><td class="num">${fmtNum(u.completion_tokens)}</td></tr>`).join('') : '';
  return `<div class="final ${st.cls}"><div><span class="badge ${st.cls}">${esc(st.label)}</span></div>
    ${f.answer != null ? `<h4>answer</h4>${clip(f.answer, 'out final-answer')}` : ''}
    ${f.error ? `<div class="errbox">${esc(f.error)}</div>` : ''}</div>` +
    kv([['iterations', fmtNum(f.iterations)], ['sub-calls', fmtNum(f.sub_calls)], ['duration', fmtMs(f.duration_ms)], ['tokens', usageLine(f.usage)]]) +
    (models ? `<table class="usage"><tr><th>model</th><th>calls</th><th>prompt</th><th>completion</th></tr>${models}</table>` : '');
}

function metadataHtml(m) {
  return `<h4>query</h4>${clip(m.query, 'out')}` +
    kv([['root model', esc(m.root_model)], ['sub model', esc(m.sub_model)], ['executor', esc(m.executor)], ['rlm', esc(m.rlm_version)],
      ['context', `<code>${esc(JSON.stringify(m.context))}</code>`]]) +
    `<details><summary>configuration</summary><pre class="out">${esc(JSON.stringify(m.config, null, 2))}</pre></details>`;
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a.jump');
  if (!a || !S.run) return;
  e.preventDefault();
  select(a.dataset.key, true);
});

// ---------------------------------------------------------------- routing and live updates

async function route() {
  const m = /^#\/run\/([0-9a-fA-F-]{36})(?:\/node\/(.+))?$/.exec(location.hash);
  if (!m) {
    S.run = null;
    renderList();
    if (!S.runsLoaded) { await loadRuns().catch(showError); renderRunRows(); }
    return;
  }
  const [, id, nodeKey] = m;
  const key = nodeKey ? decodeURIComponent(nodeKey) : null;
  if (S.run && S.run.id === id) {
    if (key && key !== S.run.selected) select(key, true);
    return;
  }
  openRun(id);
  S.run.pendingNode = key;
  $('#app').innerHTML = '<p class="muted">Loading run…</p>';
  if (!S.runsLoaded) loadRuns().then(() => { if (S.run && S.run.id === id && S.run.root) renderHead(); }).catch(() => {});
  await loadOutline();
}

function showError(err) { $('#app').innerHTML = `<p class="error">${esc(err.message)}</p>`; }

let runsTimer = null;
function refreshRunsSoon() {
  if (runsTimer) return;
  runsTimer = setTimeout(async () => {
    runsTimer = null;
    try { await loadRuns(); } catch { return; }
    if (!S.run) renderRunRows(); else if (S.run.root) renderHead();
  }, 250);
}

function connect() {
  const live = $('#live');
  const source = new EventSource(BASE + 'api/stream');
  source.onopen = () => { live.classList.add('on'); live.title = 'live updates: connected'; };
  source.onerror = () => { live.classList.remove('on'); live.title = 'live updates: reconnecting'; };
  source.onmessage = (msg) => {
    let update;
    try { update = JSON.parse(msg.data); } catch { return; }
    if (update.type === 'reset') {
      if (S.run) { const { id, selected } = S.run; openRun(id); S.run.pendingNode = selected; loadOutline(); }
      refreshRunsSoon();
      return;
    }
    refreshRunsSoon();
    if (S.run && update.run_id === S.run.id && update.events > S.run.outline.length) loadOutline();
  };
}

window.addEventListener('hashchange', route);
connect();
route();
