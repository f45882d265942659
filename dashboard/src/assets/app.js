// resilient-payments dashboard. Plain JS, no framework, no build step. It talks only to the
// dashboard server (same origin); the server holds the API key and the bank token.
// Untrusted text (log lines, payment fields) is only ever set with textContent.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
const HISTORY_MAX = 600;
const OUTCOMES = [
  ['succeeded', 'succeeded'], ['declined', 'declined'], ['pending', 'pending'],
  ['rejected_breaker', 'rejected by breaker'], ['bank_unavailable', 'bank unavailable'],
  ['rejected_bulkhead', 'bulkhead'], ['failed', 'failed'],
];
const STATES = {
  closed: { icon: '●', label: 'calls flow to the bank', color: '#1e8e3e' },
  open: { icon: '■', label: 'calls rejected at once', color: '#c62828' },
  half_open: { icon: '◐', label: 'probing the bank', color: '#b26a00' },
  forced_open: { icon: '⛔', label: 'forced open by an operator', color: '#8a1313' },
  disabled: { icon: '○', label: 'breaker bypassed (forced closed)', color: '#6a737d' },
  metrics_only: { icon: '◇', label: 'measuring only, never trips', color: '#1f6feb' },
};

const state = {
  overview: null,
  overviewAt: 0,
  samples: [],
  lastSeq: null,
  logAfter: null,
  logPaused: false,
  logCount: 0,
  selectedPayment: null,
};

// ---------- helpers ----------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function setText(id, text) { const n = $(id); if (n && n.textContent !== String(text)) n.textContent = text; }
function pct(v) { return v === null || v === undefined ? '–' : (v * 100).toFixed(0) + '%'; }
function num(v, d = 0) { return v === null || v === undefined ? '–' : Number(v).toFixed(d); }
function dur(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return ms.toFixed(0) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min ' + Math.floor(s % 60) + ' s';
  return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
}
function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0').slice(0, 1);
}
function message(text, isError) {
  const m = el('div', { class: 'msg' + (isError ? ' error' : ''), text });
  $('messages').append(m);
  setTimeout(() => m.remove(), isError ? 6000 : 3000);
}

async function api(method, path, body) {
  const init = { method, headers: { 'Accept': 'application/json' } };
  if (method !== 'GET') {
    init.headers['X-Dashboard'] = '1';
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const detail = data && (data.detail || data.title || data.code || data.error);
    const error = new Error(detail ? String(detail) : 'HTTP ' + response.status);
    error.status = response.status;
    error.data = data;
    throw error;
  }
  return data;
}

// Runs an action from a button, disabling it meanwhile and reporting failures.
async function act(button, fn) {
  if (button) button.disabled = true;
  try { return await fn(); } catch (e) { message(e.message, true); return null; } finally { if (button) button.disabled = false; }
}

// ---------- overview ----------
async function pollOverview() {
  try {
    const q = state.lastSeq === null ? '' : '?since=' + state.lastSeq;
    const o = await api('GET', '/api/overview' + q);
    state.overview = o;
    state.overviewAt = Date.now();
    const h = o.history || { samples: [] };
    if (h.reset) { state.samples = []; }
    for (const s of h.samples) state.samples.push(s);
    if (state.samples.length > HISTORY_MAX) state.samples.splice(0, state.samples.length - HISTORY_MAX);
    if (state.samples.length) state.lastSeq = state.samples[state.samples.length - 1].seq;
    render(o);
    document.body.dataset.lastSeq = String(state.lastSeq ?? '');
  } catch (e) {
    $('updated').textContent = 'dashboard server unreachable';
    $('updated').classList.add('stale');
  }
  setTimeout(pollOverview, 1000);
}

function render(o) {
  const apiUp = o.api && o.api.reachable;
  const pill = $('api-pill');
  pill.dataset.ok = String(!!apiUp);
  pill.textContent = apiUp ? 'API up' : 'API unreachable';
  pill.title = apiUp ? 'instance ' + o.api.instance_id : (o.api && o.api.error) || '';
  const banks = o.banks || [];
  renderBankPills(banks);
  renderBanks(banks, o.routing);
  const first = banks.length ? banks[0].name : null;
  setText('breaker-scope', banks.length > 1 ? 'the first bank (' + first + '); every bank below' : 'bank calls');
  renderBreaker(o.breaker, apiUp);
  renderCounts(o);
  renderChaos(chaosOf(banks, o.bank || {}));
  renderTraffic(o.traffic);
  drawRates(o.breaker);
  drawRequests();
  drawLatency();
  drawTimeline(o.transitions || []);
  renderTransitions(o.transitions || []);
}

function renderBreaker(b, apiUp) {
  const badge = $('breaker-badge');
  const stateName = b ? b.state : 'unknown';
  const info = STATES[stateName] || { icon: '?', label: apiUp ? 'unknown state' : 'API unreachable' };
  badge.dataset.state = stateName;
  setText('breaker-state', stateName);
  $('breaker-state').dataset.state = stateName;
  setText('breaker-icon', info.icon);
  setText('breaker-label', info.label);
  if (!b) return;
  setText('breaker-in-state', dur(b.in_state_ms));
  setText('breaker-reason', b.trip_reason_text || '–');
  if (b.open_remaining_ms !== null && b.open_remaining_ms !== undefined) {
    setText('breaker-next-probe', b.open_remaining_ms === 0 ? 'now: the next call probes' : 'in ' + dur(b.open_remaining_ms) + ' (at ' + clock(b.next_probe_at_ms) + ')');
  } else if (stateName === 'half_open') {
    setText('breaker-next-probe', 'probing; times out in ' + dur(b.half_open_remaining_ms));
  } else {
    setText('breaker-next-probe', '–');
  }
  setText('breaker-probes', stateName === 'half_open'
    ? (b.probes_in_flight ?? 0) + ' in flight, ' + (b.probes_succeeded ?? 0) + ' of ' + (b.probes_permitted ?? '?') + ' good'
    : (b.probes_in_flight ? b.probes_in_flight + ' in flight' : 'none'));
  setText('breaker-openings', num(b.consecutive_openings));
  setText('breaker-rejected', num(b.rejected_total));

  // Gauges.
  const w = b.window || {};
  setText('window-counts', 'window: ' + (w.calls ?? 0) + ' calls, ' + (w.failures ?? 0) + ' failed, ' + (w.slow ?? 0) + ' slow');
  gauge('failure', b.failure_rate, b.failure_rate_threshold);
  gauge('slow', b.slow_call_rate, b.slow_call_rate_threshold, b.slow_call_duration_ms ? ' (slow ≥ ' + dur(b.slow_call_duration_ms) + ')' : '');
  setText('enough-calls', b.enough_calls ? '' : 'not enough calls: ' + (w.calls ?? 0) + ' of ' + (b.minimum_calls ?? '?') + ' needed before the rates count');
}

function gauge(name, value, threshold, extra) {
  setText(name + '-rate', value === null || value === undefined ? 'n/a' : pct(value));
  const fill = $(name + '-fill');
  fill.style.width = ((value || 0) * 100).toFixed(1) + '%';
  const over = value !== null && value !== undefined && threshold !== undefined && value >= threshold;
  fill.classList.toggle('over', over);
  if (threshold !== null && threshold !== undefined) $(name + '-mark').style.left = 'calc(' + (threshold * 100).toFixed(1) + '% - 1px)';
  setText(name + '-threshold', 'threshold ' + pct(threshold) + (over ? ' — reached' : '') + (extra || ''));
}

function renderCounts(o) {
  const r10 = (o.rolling && o.rolling.window_10s) || {};
  const c = o.counters || {};
  for (const kind of ['succeeded', 'declined', 'pending', 'rejected_breaker', 'bank_timeouts', 'bank_errors', 'rejected_bulkhead', 'bank_unavailable']) {
    setText('c-' + kind, num(r10[kind] ?? 0));
    setText('t-' + kind, num(c[kind]));
  }
  const last = state.samples.slice(-10);
  const span = last.reduce((a, s) => a + (s.counts && s.counts.requests !== undefined ? s.dt_ms : 0), 0);
  const reqs = last.reduce((a, s) => a + ((s.counts && s.counts.requests) || 0), 0);
  setText('request-rate', span ? (reqs * 1000 / span).toFixed(1) : '–');
  const apm = o.rolling && o.rolling.attempts_per_payment_60s;
  setText('attempts-per-payment', apm ? apm.toFixed(2) + ' (1 min)' : (o.attempts_per_payment ? o.attempts_per_payment.toFixed(2) + ' (all)' : '–'));
  const rb = o.retry_budget;
  setText('retry-budget', rb ? rb.balance.toFixed(1) + ' retries' + (rb.exhausted_total ? ', ' + rb.exhausted_total + ' refused' : '') : '–');
  const bh = o.bulkhead;
  setText('bulkhead', bh ? bh.in_use + ' / ' + bh.max_concurrent + (bh.waiting ? ', ' + bh.waiting + ' waiting' : '') : '–');
  const rec = o.reconciler;
  setText('backlog', rec && rec.backlog !== null && rec.backlog !== undefined ? String(rec.backlog) : '–');
  const l = o.latency;
  setText('latency-now', l && l.samples ? num(l.p50_ms) + ' · ' + num(l.p90_ms) + ' · ' + num(l.p99_ms) + ' ms' : '–');
}

// ---------- banks ----------
// A bank's badge says reachability and chaos apart: "reachable" and the chaos preset are two
// facts, so a bank that answers but is in `down` chaos never looks like a plain green check.
const REACH = {
  reachable: { icon: '✓', text: 'reachable' },
  unreachable: { icon: '✕', text: 'unreachable' },
  unknown: { icon: '?', text: 'not watched' },
};
function renderBankPills(banks) {
  const box = $('bank-pills');
  const key = banks.map((b) => b.name).join();
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.replaceChildren();
    if (!banks.length) box.append(el('span', { class: 'pill', 'data-ok': 'unknown', text: 'banks: …' }));
    banks.forEach((b, i) => {
      box.append(el('span', { class: 'pill bank-pill', 'data-bank': b.name, id: i === 0 ? 'bank-pill' : null },
        el('strong', { text: b.name + ' ' }), el('span', { class: 'reach' }), el('span', { class: 'chaos' })));
    });
  }
  for (const b of banks) {
    const pill = box.querySelector('.bank-pill[data-bank="' + CSS.escape(b.name) + '"]');
    if (!pill) continue;
    const badge = b.badge || {};
    const reach = REACH[badge.reach] || REACH.unknown;
    pill.dataset.reach = badge.reach || 'unknown';
    pill.dataset.chaos = badge.chaos || '';
    pill.dataset.level = badge.level || 'unknown';
    setNodeText(pill.querySelector('.reach'), reach.icon + ' ' + reach.text);
    setNodeText(pill.querySelector('.chaos'), badge.reach === 'reachable'
      ? (badge.level === 'ok' ? ' · healthy' : ' · chaos: ' + badge.chaos) : '');
    pill.title = badge.reach === 'unreachable' ? (badge.error || 'did not answer')
      : badge.reach === 'reachable' ? 'answers; chaos preset ' + badge.chaos : 'the dashboard has no URL for this bank';
  }
}
function setNodeText(node, text) { if (node && node.textContent !== String(text)) node.textContent = text; }

const BANK_PRESETS = ['healthy', 'flaky', 'slow', 'down', 'blackhole', 'lossy'];
const BANK_BREAKER = [['force-open', 'Force open', 'danger'], ['force-closed', 'Force closed', ''], ['reset', 'Reset', 'primary']];
const REASONS = {
  breaker_open: 'breaker open', bulkhead_full: 'bulkhead full', connect_refused: 'connection refused',
  bank_refused: 'bank refused (503/429)', decline: 'cascadable decline',
};

function bankPanel(b) {
  const fact = (label, cls) => [el('dt', { text: label }), el('dd', { class: cls, text: '–' })];
  const chaos = el('div', { class: 'controls', role: 'group', 'aria-label': 'Chaos of bank ' + b.name });
  for (const preset of BANK_PRESETS) {
    const button = el('button', { 'data-bank-chaos': preset, title: 'set ' + b.name + "'s chaos to " + preset, text: preset });
    button.addEventListener('click', () => setChaos({ preset }, button, b.name + ': ' + preset, b.name));
    chaos.append(button);
  }
  const breaker = el('div', { class: 'controls bank-breaker-controls', role: 'group', 'aria-label': 'Breaker of bank ' + b.name });
  for (const [action, label, cls] of BANK_BREAKER) {
    const button = el('button', { 'data-bank-breaker': action, class: cls || null, text: label });
    button.addEventListener('click', async () => {
      const r = await act(button, () => api('POST', '/api/breaker/' + action + '?bank=' + encodeURIComponent(b.name)));
      if (r) message(b.name + ' breaker ' + action + ' → ' + (r.state || 'done'));
    });
    breaker.append(button);
  }
  return el('article', { class: 'bank-panel', 'data-bank': b.name, 'aria-label': 'bank ' + b.name },
    el('div', { class: 'bank-head' },
      el('h3', { class: 'bank-name', text: b.name }),
      el('span', { class: 'prio muted' }),
      el('span', { class: 'bank-url muted', text: b.url || b.api_url || '' })),
    el('div', { class: 'badge small', 'data-state': 'unknown' },
      el('span', { class: 'icon', 'aria-hidden': 'true', text: '?' }),
      el('div', {},
        el('div', { class: 'bank-breaker-state', 'data-testid': 'bank-breaker-state', text: 'unknown' }),
        el('div', { class: 'label', text: 'waiting for the API' }))),
    el('dl', { class: 'facts' },
      ...fact('failure rate', 'f-failure'), ...fact('slow-call rate', 'f-slow'),
      ...fact('next probe', 'f-probe'), ...fact('trip reason', 'f-reason'),
      ...fact('route share', 'f-share'), ...fact('cascaded away', 'f-cascades'),
      ...fact('cascades / min, why', 'f-why'), ...fact('retry budget', 'f-budget'),
      ...fact('bulkhead', 'f-bulkhead'), ...fact('health score', 'f-score')),
    el('div', { class: 'bar share-bar', title: 'share of bank attempts' }, el('div', { class: 'fill' })),
    el('h3', { text: 'chaos' }), chaos,
    el('h3', { text: 'breaker' }), breaker,
    el('p', { class: 'note f-note' }));
}

function renderBanks(banks, routing) {
  setText('routing-mode', 'routing: ' + (routing && routing.mode ? routing.mode : (banks.length ? 'one bank' : '–')) +
    (banks.length ? ' · ' + banks.length + (banks.length === 1 ? ' bank' : ' banks') + ', in priority order' : ''));
  const box = $('bank-panels');
  const key = banks.map((b) => b.name).join();
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.replaceChildren(...banks.map(bankPanel));
    if (!banks.length) box.append(el('p', { class: 'muted', text: 'no banks: the API did not answer' }));
    // The chaos card's bank picker: every bank the dashboard has a URL for.
    const select = $('chaos-bank');
    const chosen = select.value;
    select.replaceChildren(...banks.filter((b) => b.chaos_controls).map((b) => el('option', { value: b.name, text: b.name })));
    if (chosen && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }
  for (const b of banks) {
    const panel = box.querySelector('.bank-panel[data-bank="' + CSS.escape(b.name) + '"]');
    if (panel) updateBankPanel(panel, b);
  }
}

function updateBankPanel(panel, b) {
  const q = (cls) => panel.querySelector(cls);
  const br = b.breaker;
  const stateName = br && br.state ? br.state : (b.in_api ? 'unknown' : 'not routed');
  const info = STATES[stateName] || { icon: '?', label: b.in_api ? 'unknown state' : 'the API does not route to this bank' };
  panel.dataset.state = stateName;
  q('.badge').dataset.state = stateName;
  setNodeText(q('.icon'), info.icon);
  setNodeText(q('.bank-breaker-state'), stateName);
  q('.bank-breaker-state').dataset.state = stateName;
  setNodeText(q('.badge .label'), info.label);
  setNodeText(q('.prio'), b.priority ? '#' + b.priority : '');
  if (br) {
    const rate = (v, t) => (v === null || v === undefined ? 'n/a' : pct(v)) + (t !== null && t !== undefined ? ' (threshold ' + pct(t) + ')' : '');
    setNodeText(q('.f-failure'), rate(br.failure_rate, br.failure_rate_threshold) + (br.enough_calls ? '' : ' · ' + ((br.window && br.window.calls) ?? 0) + ' of ' + (br.minimum_calls ?? '?') + ' calls'));
    setNodeText(q('.f-slow'), rate(br.slow_call_rate, br.slow_call_rate_threshold));
    setNodeText(q('.f-probe'), br.open_remaining_ms !== null && br.open_remaining_ms !== undefined
      ? (br.open_remaining_ms === 0 ? 'now: the next call probes' : 'in ' + dur(br.open_remaining_ms) + ' (at ' + clock(br.next_probe_at_ms) + ')')
      : (stateName === 'half_open' ? 'probing' : '–'));
    setNodeText(q('.f-reason'), br.trip_reason_text || '–');
  }
  const share = typeof b.share === 'number' ? b.share : null;
  setNodeText(q('.f-share'), share === null ? '–' : pct(share) + ' of attempts' + (b.attempts !== undefined && b.attempts !== null ? ' (' + b.attempts + ')' : ''));
  q('.share-bar .fill').style.width = ((share || 0) * 100).toFixed(1) + '%';
  const total = b.cascaded_away;
  const byReason = b.cascades && typeof b.cascades === 'object'
    ? Object.entries(b.cascades).filter(([, n]) => n).map(([k, n]) => (REASONS[k] || k.replace(/_/g, ' ')) + ' ' + n).join(' · ') : '';
  setNodeText(q('.f-cascades'), (total === undefined || total === null ? '–' : String(total)) + (byReason ? ' — ' + byReason : ''));
  const r = b.cascades_per_minute;
  setNodeText(q('.f-why'), r ? r.per_minute.toFixed(1) + '/min' + (Object.keys(r.by_reason).length
    ? ': ' + Object.entries(r.by_reason).map(([k, v]) => (REASONS[k] || k.replace(/_/g, ' ')) + ' ' + v.toFixed(1)).join(' · ')
    : (b.cascades ? '' : ' (this API does not say why)')) : '–');
  const rb = b.retry_budget;
  setNodeText(q('.f-budget'), rb && typeof rb.balance === 'number' ? rb.balance.toFixed(1) + ' retries' + (rb.exhausted_total ? ', ' + rb.exhausted_total + ' refused' : '') : '–');
  const bh = b.bulkhead;
  setNodeText(q('.f-bulkhead'), bh && bh.in_use !== undefined ? bh.in_use + ' / ' + bh.max_concurrent : '–');
  const score = b.score;
  setNodeText(q('.f-score'), score === undefined || score === null ? '– (not health-routed)'
    : typeof score === 'number' ? score.toFixed(2) : (typeof score.value === 'number' ? score.value.toFixed(2) : JSON.stringify(score)));
  for (const button of panel.querySelectorAll('[data-bank-chaos]')) {
    button.hidden = !b.chaos_controls;
    button.setAttribute('aria-pressed', String(!!b.badge && b.badge.reach === 'reachable' && b.badge.chaos === button.dataset.bankChaos));
  }
  q('.bank-breaker-controls').hidden = !b.breaker_controls;
  const notes = [];
  if (!b.chaos_controls) notes.push('the dashboard has no URL for this bank (--bank): no chaos controls');
  if (b.in_api && !b.breaker_controls) notes.push('this API moves only the first bank\'s breaker');
  if (!b.in_api && b.chaos_controls) notes.push('the API does not route to this bank');
  setNodeText(q('.f-note'), notes.join('; '));
}

// The chaos card shows the bank picked in its selector (the first by default).
function chaosOf(banks, fallback) {
  const name = $('chaos-bank').value;
  const b = banks.find((x) => x.name === name) || banks[0];
  return (b && b.chaos) || fallback;
}
function chaosBank() { return $('chaos-bank').value || null; }

function renderChaos(bank) {
  const preset = bank.reachable ? (bank.preset || 'custom profile') : 'unreachable';
  let text = 'now: ' + preset;
  const sc = bank.scenario;
  if (sc && sc.steps) text += ' · scenario step ' + ((sc.current_step ?? 0) + 1) + '/' + sc.steps.length + (sc.finished ? ' (finished)' : ', ' + dur(sc.elapsed_ms) + ' in');
  setText('chaos-current', text);
  for (const b of document.querySelectorAll('[data-preset]')) {
    b.setAttribute('aria-pressed', String(!sc && b.dataset.preset === bank.preset));
  }
  setText('bank-in-flight', num(bank.in_flight));
  setText('bank-ledger', num(bank.ledger_charges));
}

function renderTraffic(t) {
  if (!t) return;
  if (t.running) {
    const left = Math.max(0, t.ends_at_ms - Date.now());
    const by = Object.entries(t.by_status || {}).map(([k, v]) => k + '×' + v).join(' ');
    setText('traffic-status', 'running ' + t.rate_per_s + '/s, ' + dur(left) + ' left · sent ' + t.sent + (t.dropped ? ', dropped ' + t.dropped : '') + (by ? ' · ' + by : ''));
  } else {
    setText('traffic-status', t.sent ? 'stopped after ' + t.sent + ' payments' : 'stopped');
  }
}

// ---------- charts ----------
function frame(node) {
  const w = Math.max(200, node.clientWidth || 600), h = Math.max(60, node.clientHeight || 160);
  node.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
  node.replaceChildren();
  return { w, h, left: 38, right: w - 8, top: 8, bottom: h - 18 };
}

// The charts' time axis: the history collected so far, at least 2 and at most 10 minutes.
function timeRange() {
  const now = state.overview ? state.overview.now_ms : Date.now();
  const first = state.samples.length ? state.samples[0].t_ms : now;
  const span = Math.min(HISTORY_MAX * 1000, Math.max(120000, now - first));
  let step = 30000;
  for (const s of [30000, 60000, 120000]) { step = s; if (span / s <= 5) break; }
  const ticks = [];
  for (let t = 0; t <= span; t += step) ticks.push({ t: now - t, label: t === 0 ? 'now' : '-' + (t % 60000 ? t / 1000 + ' s' : t / 60000 + ' min') });
  return { t0: now - span, t1: now, ticks };
}

// A line or area chart of the samples. series: {name, color, value(sample), area?}
function chart(node, series, opts) {
  const f = frame(node);
  const range = timeRange();
  const { t0, t1 } = range;
  const x = (t) => f.left + (f.right - f.left) * (t - t0) / (t1 - t0);
  let max = opts.max || 0;
  const stacked = opts.stacked;
  const rows = state.samples.filter((s) => s.t_ms >= t0);
  const tops = rows.map(() => 0);
  const values = series.map((s) => (s.smooth ? movingAverage : (v) => v)(rows.map((r) => s.value(r))));
  if (stacked) {
    values.forEach((vs) => vs.forEach((v, i) => { tops[i] += v || 0; }));
    for (const t of tops) max = Math.max(max, t);
  } else {
    for (const vs of values) for (const v of vs) if (v !== null && v !== undefined) max = Math.max(max, v);
  }
  for (const th of opts.thresholds || []) max = Math.max(max, th.value * 1.1);
  max = niceMax(max || 1);
  const y = (v) => f.bottom - (f.bottom - f.top) * v / max;
  // Grid and axis labels.
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, yy = y(v);
    node.append(svg('line', { x1: f.left, x2: f.right, y1: yy, y2: yy, class: 'grid-line' }));
    const label = svg('text', { x: f.left - 4, y: yy + 4, 'text-anchor': 'end' });
    label.textContent = opts.format ? opts.format(v) : fmtAxis(v);
    node.append(label);
  }
  for (const tick of range.ticks) {
    const lbl = svg('text', { x: x(tick.t), y: f.h - 4, 'text-anchor': tick.t === t1 ? 'end' : 'middle' });
    lbl.textContent = tick.label;
    node.append(lbl);
  }
  if (!rows.length) {
    const t = svg('text', { x: f.w / 2, y: f.h / 2, 'text-anchor': 'middle' });
    t.textContent = 'collecting samples…';
    node.append(t);
    return;
  }
  const base = rows.map(() => 0);
  series.forEach((s, si) => {
    const vs = values[si];
    if (stacked) {
      const upper = vs.map((v, i) => base[i] + (v || 0));
      let d = '';
      rows.forEach((r, i) => { d += (i ? 'L' : 'M') + x(r.t_ms).toFixed(1) + ',' + y(upper[i]).toFixed(1); });
      for (let i = rows.length - 1; i >= 0; i--) d += 'L' + x(rows[i].t_ms).toFixed(1) + ',' + y(base[i]).toFixed(1);
      node.append(svg('path', { d: d + 'Z', fill: s.color, 'fill-opacity': '0.75', stroke: s.color, 'stroke-width': '0.5' }));
      upper.forEach((v, i) => { base[i] = v; });
    } else {
      let d = '', pen = false;
      rows.forEach((r, i) => {
        const v = vs[i];
        if (v === null || v === undefined) { pen = false; return; }
        d += (pen ? 'L' : 'M') + x(r.t_ms).toFixed(1) + ',' + y(v).toFixed(1);
        pen = true;
      });
      node.append(svg('path', { d, fill: 'none', stroke: s.color, 'stroke-width': s.width || 2, 'stroke-dasharray': s.dash || '' }));
    }
  });
  for (const th of opts.thresholds || []) {
    node.append(svg('line', { x1: f.left, x2: f.right, y1: y(th.value), y2: y(th.value), stroke: th.color, class: 'threshold' }));
    const t = svg('text', { x: f.right - 2, y: y(th.value) - 3, 'text-anchor': 'end' });
    t.textContent = th.label;
    node.append(t);
  }
}
function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
function fmtAxis(v) { return v >= 1000 ? (v / 1000).toFixed(1) + 'k' : (v % 1 ? v.toFixed(1) : String(v)); }
function legend(id, items) {
  const node = $(id);
  if (node.childElementCount) return;
  for (const [name, color, dash] of items) {
    const sw = el('span', { class: 'sw' });
    sw.style.background = dash ? 'repeating-linear-gradient(90deg,' + color + ' 0 5px, transparent 5px 8px)' : color;
    node.append(el('span', {}, sw, name));
  }
}
// Per-second rate of a counter in a sample.
function rate(kind) {
  return (s) => {
    if (!s.counts || s.counts[kind] === undefined) return null;
    return (s.counts[kind] || 0) * 1000 / (s.dt_ms || 1000);
  };
}
const OUTCOME_COLORS = {
  succeeded: '#1e8e3e', declined: '#00838f', pending: '#8d6e63', rejected_breaker: '#1f6feb',
  bank_unavailable: '#5d4037', rejected_bulkhead: '#7b1fa2', failed: '#c62828',
};

function drawRequests() {
  const series = OUTCOMES.map(([k, name]) => ({ name, color: OUTCOME_COLORS[k], value: rate(k), smooth: true }));
  chart($('chart-requests'), series, { stacked: true, format: (v) => fmtAxis(v) + '/s' });
  legend('legend-requests', OUTCOMES.map(([k, name]) => [name, OUTCOME_COLORS[k]]));
}
// A 3-sample moving average, so 1 s sampling does not look like noise; gaps stay gaps.
function movingAverage(values) {
  return values.map((v, i) => {
    if (v === null || v === undefined) return null;
    let sum = 0, n = 0;
    for (let j = Math.max(0, i - 2); j <= i; j++) if (values[j] !== null && values[j] !== undefined) { sum += values[j]; n++; }
    return sum / n;
  });
}
function drawLatency() {
  chart($('chart-latency'), [
    { name: 'p50', color: '#1e8e3e', value: (s) => s.p50_ms },
    { name: 'p90', color: '#e67700', value: (s) => s.p90_ms },
    { name: 'p99', color: '#c62828', value: (s) => s.p99_ms },
  ], { format: (v) => fmtAxis(v) });
  legend('legend-latency', [['p50', '#1e8e3e'], ['p90', '#e67700'], ['p99', '#c62828'], ['(over the last 2048 requests, sampled each second)', 'transparent']]);
}
function drawRates(b) {
  const th = [];
  if (b && b.failure_rate_threshold !== undefined) th.push({ value: b.failure_rate_threshold, label: 'failure threshold ' + pct(b.failure_rate_threshold), color: '#c62828' });
  if (b && b.slow_call_rate_threshold !== undefined) th.push({ value: b.slow_call_rate_threshold, label: 'slow threshold ' + pct(b.slow_call_rate_threshold), color: '#e67700' });
  chart($('chart-rates'), [
    { name: 'failure rate', color: '#c62828', value: (s) => s.failure_rate },
    { name: 'slow-call rate', color: '#e67700', value: (s) => s.slow_call_rate, dash: '4 3' },
  ], { max: 1, thresholds: th, format: (v) => (v * 100).toFixed(0) + '%' });
}

function drawTimeline(transitions) {
  const node = $('timeline');
  const f = frame(node);
  const range = timeRange();
  const { t0, t1 } = range;
  const x = (t) => f.left + (f.right - f.left) * Math.max(0, t - t0) / (t1 - t0);
  const top = 6, height = 26;
  // Runs of the same state, from the samples (1 s resolution).
  let run = null;
  const runs = [];
  for (const s of state.samples) {
    if (s.t_ms < t0) continue;
    const st = s.state || 'unreachable';
    if (run && run.state === st) { run.end = s.t_ms; } else { if (run) run.end = s.t_ms; run = { state: st, start: s.t_ms, end: s.t_ms }; runs.push(run); }
  }
  if (run) run.end = t1;
  for (const r of runs) {
    const info = STATES[r.state];
    const color = info ? info.color : '#d0d4d9';
    const x0 = x(r.start), x1 = Math.max(x(r.end), x0 + 1);
    const rect = svg('rect', { x: x0, y: top, width: x1 - x0, height, fill: color });
    if (r.state === 'open' || r.state === 'forced_open') rect.setAttribute('fill-opacity', '0.9');
    const title = svg('title', {});
    title.textContent = r.state + ' ' + clock(r.start) + '–' + clock(r.end);
    rect.append(title);
    node.append(rect);
    if (x1 - x0 > 50) {
      const t = svg('text', { x: x0 + 4, y: top + 17, class: 'seg' });
      t.textContent = (info ? info.icon + ' ' : '') + r.state;
      node.append(t);
    }
  }
  // Exact transition times as ticks (short half-open states are too brief for 1 s samples).
  for (const tr of transitions) {
    if (!tr.at_ms || tr.at_ms < t0) continue;
    const info = STATES[tr.to];
    node.append(svg('line', { x1: x(tr.at_ms), x2: x(tr.at_ms), y1: top - 4, y2: top + height + 4, stroke: info ? info.color : '#24292f', 'stroke-width': 2 }));
  }
  for (const tick of range.ticks) {
    const t = svg('text', { x: x(tick.t), y: f.h - 4, 'text-anchor': tick.t === t1 ? 'end' : 'middle' });
    t.textContent = tick.label;
    node.append(t);
  }
  if (!runs.length) {
    const t = svg('text', { x: f.w / 2, y: top + 17, 'text-anchor': 'middle' });
    t.textContent = 'collecting samples…';
    node.append(t);
  }
}

function renderTransitions(transitions) {
  const list = $('transitions');
  const key = transitions.map((t) => t.at_ms + t.to).join();
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren();
  if (!transitions.length) { list.append(el('li', { class: 'muted', text: 'no transitions yet' })); return; }
  for (const t of transitions.slice().reverse()) {
    list.append(el('li', {},
      el('time', { text: clock(t.at_ms) }),
      el('span', { class: 'st', 'data-s': t.from, text: t.from }), ' → ',
      el('span', { class: 'st', 'data-s': t.to, text: t.to }), ' ',
      el('span', { text: (t.reason_text || '') + (t.open_for_ms ? ' · open for ' + dur(t.open_for_ms) : '') })));
  }
}

// ---------- payments ----------
async function pollPayments() {
  try {
    const page = await api('GET', '/api/payments?limit=15');
    renderPayments(page.data || []);
  } catch (e) { /* shown by the API pill */ }
  setTimeout(pollPayments, 2000);
}
function renderPayments(rows) {
  const body = $('payments-body');
  const key = rows.map((p) => p.id + p.status + p.attempts).join();
  if (body.dataset.key === key) return;
  body.dataset.key = key;
  body.replaceChildren();
  if (!rows.length) { body.append(el('tr', {}, el('td', { colspan: '5', class: 'muted', text: 'no payments yet' }))); return; }
  for (const p of rows) {
    const latency = Date.parse(p.updated_at) - Date.parse(p.created_at);
    const tr = el('tr', { class: 'payment' + (p.id === state.selectedPayment ? ' selected' : ''), tabindex: '0', 'data-id': p.id, title: p.id },
      el('td', { text: clock(Date.parse(p.created_at)) }),
      el('td', {}, el('span', { class: 'st', 'data-s': p.status, text: p.status + (p.decline_code ? ' (' + p.decline_code + ')' : '') })),
      el('td', { class: 'num', text: p.amount_display || p.amount + ' ' + p.currency + ' (minor units)' }),
      el('td', { class: 'num', text: String(p.attempts) }),
      el('td', { class: 'num', text: isNaN(latency) ? '–' : dur(latency) }));
    tr.addEventListener('click', () => openPayment(p.id));
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter') openPayment(p.id); });
    body.append(tr);
  }
}
async function openPayment(id) {
  state.selectedPayment = id;
  for (const r of document.querySelectorAll('tr.payment')) r.classList.toggle('selected', r.dataset.id === id);
  const box = $('payment-details');
  box.hidden = false;
  box.replaceChildren(el('p', { class: 'muted', text: 'loading ' + id + '…' }));
  try {
    const d = await api('GET', '/api/payments/' + encodeURIComponent(id));
    const p = d.payment || {};
    const facts = el('dl', { class: 'facts' });
    for (const [k, v] of [['id', p.id], ['status', p.status], ['amount', (p.amount_display || p.currency) + ' (' + p.amount + ' minor units)'], ['card', p.source], ['attempts', p.attempts], ['bank reference', p.bank_reference], ['bank charge', p.bank_charge_id || '–'], ['decline', p.decline_code || '–'], ['created', p.created_at], ['updated', p.updated_at]]) {
      facts.append(el('dt', { text: k }), el('dd', { text: v === undefined ? '–' : String(v) }));
    }
    const logs = el('ol', { class: 'logs' });
    logs.style.height = '160px';
    if (d.logs && d.logs.available) {
      for (const r of d.logs.records || []) logs.append(logLine(r));
      if (!(d.logs.records || []).length) logs.append(el('li', { class: 'note', text: 'no log lines for this payment in the buffer' }));
    } else {
      logs.append(el('li', { class: 'note', text: 'logs unavailable' + (d.logs && d.logs.reason ? ': ' + d.logs.reason : '') }));
    }
    const close = el('button', { text: 'Close' });
    close.addEventListener('click', () => { box.hidden = true; state.selectedPayment = null; });
    const follow = el('button', { text: 'Follow in live logs' });
    follow.addEventListener('click', () => { $('log-field').value = 'payment_id'; $('log-search').value = id; resetLogs(); });
    box.replaceChildren(el('div', { class: 'row' }, el('strong', { text: 'Payment ' + id }), close, follow), facts, logs);
  } catch (e) {
    box.replaceChildren(el('p', { class: 'note', text: 'cannot load ' + id + ': ' + e.message }));
  }
}

function showSend(r, what) {
  const box = $('send-result');
  if (!r) return;
  const parts = [what];
  if (r.count !== undefined) {
    parts.push(r.count + ' sent in ' + dur(r.elapsed_ms) + ': ' + Object.entries(r.by_status).map(([k, v]) => k + '×' + v).join(' '));
    box.replaceChildren(parts.join(' · '));
    // For tests and scripts: the statuses of the burst, e.g. "201:30".
    box.dataset.byStatus = Object.entries(r.by_status).map(([k, v]) => k + ':' + v).join(' ');
    return;
  }
  box.replaceChildren(
    what + ' → ',
    el('strong', { text: r.status ? 'HTTP ' + r.status : 'no answer' }),
    r.outcome ? ' ' + r.outcome : '',
    ' · ',
    el('span', { id: 'replayed-header', 'data-replayed': r.replayed || 'none', text: 'Idempotent-Replayed: ' + (r.replayed || '(absent)') }),
    ' · key ' + r.idempotency_key,
    r.latency_ms !== undefined ? ' · ' + r.latency_ms + ' ms' : '',
    r.retry_after ? ' · Retry-After ' + r.retry_after : '',
    r.request_id ? ' · request ' + r.request_id : '',
    r.error ? ' · ' + r.error : '');
}
function paymentSpec() {
  return { amount: Number($('pay-amount').value) || 1999, source: $('pay-source').value };
}

// ---------- logs ----------
function resetLogs() {
  state.logAfter = null;
  state.logCount = 0;
  $('log-list').replaceChildren();
}
function logLine(r) {
  const fields = Object.entries(r.fields || {}).map(([k, v]) => k + '=' + (typeof v === 'string' ? v : JSON.stringify(v))).join(' ');
  const ts = r.timestamp ? String(r.timestamp).replace(/^.*T/, '').replace(/Z$/, '') : '';
  return el('li', { 'data-seq': r.seq },
    el('span', { class: 'ts', text: ts + ' ' }),
    el('span', { class: 'lvl', 'data-l': r.level, text: r.level }),
    ' ' + (r.message || '') + ' ',
    el('span', { class: 'fld', text: fields }));
}
async function pollLogs() {
  if (!state.logPaused) {
    try {
      const params = new URLSearchParams();
      params.set('limit', '200');
      if (state.logAfter !== null) params.set('after', state.logAfter);
      const level = $('log-level').value;
      if (level) params.set('level', level);
      const search = $('log-search').value.trim();
      if (search) params.set($('log-field').value, search);
      const page = await api('GET', '/api/logs?' + params);
      if (!page.available) {
        setText('log-status', 'logs unavailable' + (page.reason ? ' (' + page.reason + ')' : ''));
        $('log-status').dataset.available = 'false';
        $('log-list').replaceChildren(el('li', { class: 'note', text: 'logs unavailable: ' + (page.reason || 'the API did not answer') }));
        state.logAfter = null;
      } else {
        $('log-status').dataset.available = 'true';
        const list = $('log-list');
        const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
        if (page.missed) list.append(el('li', { class: 'note', text: '… ' + page.missed + ' records missed (the buffer moved on)' }));
        for (const r of page.records || []) list.append(logLine(r));
        state.logCount += (page.records || []).length;
        while (list.childElementCount > 500) list.firstElementChild.remove();
        if (stick) list.scrollTop = list.scrollHeight;
        if (page.next_after !== undefined && page.next_after !== null) state.logAfter = page.next_after;
        setText('log-status', 'live · ' + (search ? 'following ' + search + ' · ' : '') + list.childElementCount + ' shown');
      }
    } catch (e) {
      setText('log-status', 'logs unavailable (' + e.message + ')');
    }
  }
  setTimeout(pollLogs, 1000);
}

// ---------- controls ----------
const SCENARIOS = {
  outage: [{ at_ms: 0, preset: 'down' }, { at_ms: 20000, preset: 'healthy' }],
  flapping: [0, 5, 10, 15, 20, 25, 30].map((s, i) => ({ at_ms: s * 1000, preset: i % 2 ? 'healthy' : 'down' })),
  brownout: [{ at_ms: 0, preset: 'slow' }, { at_ms: 15000, preset: 'flaky' }, { at_ms: 30000, preset: 'healthy' }],
};
// Sets a bank's chaos: `bank` names it (the chaos card's picked bank when absent).
async function setChaos(body, button, label, bank) {
  const name = bank || chaosBank();
  const path = '/api/chaos' + (name ? '?bank=' + encodeURIComponent(name) : '');
  const r = await act(button, () => api('PUT', path, body));
  if (r) {
    setText('chaos-result', (name ? name + ' ' : 'bank ') + 'chaos: ' + label + ' (now ' + (r.preset || 'custom') + ')');
    message((name ? name : 'bank') + ' chaos → ' + label);
  }
}

function wire() {
  $('send-one').addEventListener('click', async (e) => {
    showSend(await act(e.target, () => api('POST', '/api/payments/one', paymentSpec())), 'one payment');
  });
  $('replay-last').addEventListener('click', async (e) => {
    showSend(await act(e.target, () => api('POST', '/api/payments/replay-last')), 'replay of the last key');
  });
  $('send-burst').addEventListener('click', async (e) => {
    const count = Math.max(1, Math.min(200, Number($('burst-count').value) || 30));
    setText('send-result', 'sending a burst of ' + count + '…');
    showSend(await act(e.target, () => api('POST', '/api/payments/burst', Object.assign({ count }, paymentSpec()))), 'burst');
  });
  $('traffic-start').addEventListener('click', async (e) => {
    const body = { rate_per_s: Number($('traffic-rate').value), duration_s: Number($('traffic-duration').value), decline_percent: Number($('traffic-declines').value) || 0 };
    const t = await act(e.target, () => api('POST', '/api/traffic', body));
    if (t) renderTraffic(t);
  });
  $('traffic-stop').addEventListener('click', async (e) => {
    const t = await act(e.target, () => api('DELETE', '/api/traffic'));
    if (t) renderTraffic(t);
  });
  for (const b of document.querySelectorAll('[data-preset]')) {
    b.addEventListener('click', () => setChaos({ preset: b.dataset.preset }, b, b.dataset.preset));
  }
  for (const b of document.querySelectorAll('[data-scenario]')) {
    b.addEventListener('click', () => setChaos({ scenario: SCENARIOS[b.dataset.scenario] }, b, 'scenario ' + b.dataset.scenario));
  }
  $('scenario-run').addEventListener('click', (e) => {
    let steps;
    try { steps = JSON.parse($('scenario-json').value); } catch (err) { message('scenario is not JSON: ' + err.message, true); return; }
    setChaos({ scenario: steps }, e.target, 'custom scenario');
  });
  for (const b of document.querySelectorAll('[data-breaker]')) {
    b.addEventListener('click', async () => {
      const r = await act(b, () => api('POST', '/api/breaker/' + b.dataset.breaker));
      if (r) message('breaker ' + b.dataset.breaker + ' → ' + r.state);
    });
  }
  $('chaos-bank').addEventListener('change', () => { if (state.overview) render(state.overview); });
  $('log-pause').addEventListener('click', (e) => {
    state.logPaused = !state.logPaused;
    e.target.textContent = state.logPaused ? 'Resume' : 'Pause';
    e.target.setAttribute('aria-pressed', String(state.logPaused));
    if (state.logPaused) setText('log-status', 'paused');
  });
  $('log-clear').addEventListener('click', () => $('log-list').replaceChildren());
  $('log-level').addEventListener('change', resetLogs);
  $('log-field').addEventListener('change', resetLogs);
  let debounce = null;
  $('log-search').addEventListener('input', () => { clearTimeout(debounce); debounce = setTimeout(resetLogs, 300); });
  window.addEventListener('resize', () => { if (state.overview) render(state.overview); });
}

// "updated 0.4 s ago", and a warning when the data goes stale.
setInterval(() => {
  if (!state.overviewAt) return;
  const age = Date.now() - state.overviewAt;
  const u = $('updated');
  u.textContent = age > 3000 ? 'stale: no update for ' + dur(age) : 'updated ' + dur(age) + ' ago';
  u.classList.toggle('stale', age > 3000);
}, 250);

// ---------- webhooks (the demo receiver) ----------
async function pollWebhooks() {
  try { renderWebhooks(await api('GET', '/api/webhooks')); } catch (e) { /* shown by the API pill */ }
  setTimeout(pollWebhooks, 1000);
}
function registrationText(r) {
  switch (r && r.state) {
    case 'registered': return 'registered as ' + r.endpoint_id + ' (' + r.action + ')';
    case 'from_file': return 'secret from --webhook-secret-file';
    case 'pending': return 'registering… ' + (r.attempts ? r.attempts + ' failed: ' + (r.last_error || '') : '');
    case 'no_api_key': return 'not registered: no API key';
    default: return 'off (start with --webhook-register)';
  }
}
function renderWebhooks(w) {
  setText('wh-registration', registrationText(w.registration));
  setText('wh-url', w.receiver_url || '/webhooks/receiver');
  const t = w.totals || {};
  setText('wh-received', t.received || 0);
  setText('wh-verified', t.verified || 0);
  setText('wh-refused', t.refused || 0);
  setText('wh-duplicates', t.duplicates || 0);
  setText('wh-chaos-failed', t.chaos_failed || 0);
  setText('wh-held', t.held || 0);
  const c = w.chaos || {};
  setText('wh-chaos-current', 'now: fail ' + pct(c.fail_share) + ', hang ' + pct(c.hang_share) + ' for ' + dur(c.hang_ms));
  const rows = w.deliveries || [];
  const body = $('webhooks-body');
  const key = rows.map((d) => d.received_at_ms + d.webhook_id + d.arrivals).join();
  if (body.dataset.key === key) return;
  body.dataset.key = key;
  body.replaceChildren();
  if (!rows.length) { body.append(el('tr', {}, el('td', { colspan: '7', class: 'muted', text: 'no deliveries yet' }))); return; }
  for (const d of rows) {
    const badge = d.verified
      ? el('span', { class: 'st', 'data-s': 'verified', text: 'verified' })
      : el('span', { class: 'st', 'data-s': 'refused', text: 'refused', title: d.refusal || '' });
    body.append(el('tr', { class: 'delivery', 'data-id': d.webhook_id, 'data-verified': String(d.verified) },
      el('td', { text: clock(d.received_at_ms) }),
      el('td', { text: d.event_id || d.webhook_id, title: d.webhook_id }),
      el('td', { text: d.event_type || '–' }),
      el('td', {}, d.payment_id || '–', ' ', d.payment_status ? el('span', { class: 'st', 'data-s': d.payment_status, text: d.payment_status }) : null),
      el('td', {}, badge, d.verified ? null : ' ' + (d.refusal || '')),
      el('td', { class: 'num' + (d.arrivals > 1 ? ' dup' : ''), text: d.arrivals > 1 ? '×' + d.arrivals + ' (#' + d.arrival + ')' : '1' }),
      el('td', { class: 'num', text: String(d.answered) + (d.held_ms ? ' after ' + dur(d.held_ms) : '') })));
  }
}
function wireWebhooks() {
  const share = (id) => Math.min(1, Math.max(0, Number($(id).value) / 100 || 0));
  $('wh-chaos-apply').addEventListener('click', (e) => act(e.target, async () => {
    const body = { fail_share: share('wh-fail'), hang_share: share('wh-hang'), hang_ms: Math.round((Number($('wh-hang-s').value) || 0) * 1000) };
    await api('PUT', '/api/webhooks/receiver-chaos', body);
    message('receiver chaos set');
  }));
  $('wh-chaos-heal').addEventListener('click', (e) => act(e.target, async () => {
    $('wh-fail').value = '0';
    $('wh-hang').value = '0';
    await api('PUT', '/api/webhooks/receiver-chaos', { fail_share: 0, hang_share: 0, hang_ms: 0 });
    message('receiver healed');
  }));
}

document.addEventListener('DOMContentLoaded', () => {
  wire();
  wireWebhooks();
  pollWebhooks();
  pollOverview();
  pollLogs();
  pollPayments();
});
