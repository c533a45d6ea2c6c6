// tonewall: the representative's page. Talks only to this origin's REST API (SPEC §5).
// The API key lives in a variable of this closure (never in storage); fields are rendered
// from the API's masked views only, as text (never markup).
'use strict';
(() => {
  const STEPS = ['allocated', 'securing', 'waiting_legs', 'bridged', 'ended'];
  const LABELS = { pan: 'Card number', expiry: 'Expiry (MMYY)', cvv: 'Security code' };
  // ISO 4217 minor-unit exponents that are not 2.
  const EXPONENT = { BHD: 3, CLP: 0, IQD: 3, ISK: 0, JOD: 3, JPY: 0, KRW: 0, KWD: 3, LYD: 3, OMR: 3, TND: 3, UGX: 0, VND: 0, XAF: 0, XOF: 0 };

  let apiKey = null;
  let view = null; // the last session view (masked)
  let fields = {}; // name -> {masked, length, complete, valid}
  let active = null;
  let stream = null; // AbortController of the SSE reader
  let poller = null;
  let refreshTimer = null;
  let paying = false;
  let paid = false;

  const $ = (id) => document.getElementById(id);
  const show = (el, on) => { el.hidden = !on; };
  const terminal = (s) => s === 'ended' || s === 'failed';

  function setError(id, text) {
    const el = $(id);
    el.textContent = text || '';
    show(el, Boolean(text));
  }

  function errorText(res) {
    const e = res.data && res.data.error;
    if (e && typeof e.message === 'string') return `${e.message} (${e.code})`;
    return `the server answered ${res.status}`;
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${apiKey}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch(path, {
        method, headers, cache: 'no-store', credentials: 'omit',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { status: 0, ok: false, data: { error: { code: 'network', message: 'cannot reach tonewall' } } };
    }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    return { status: r.status, ok: r.ok, data };
  }

  const sessionPath = (suffix) => `/v1/sessions/${encodeURIComponent(view.id)}${suffix || ''}`;

  // ---- sign in -------------------------------------------------------------------------

  async function signIn(ev) {
    ev.preventDefault();
    const key = $('api-key').value.trim();
    $('api-key').value = '';
    if (!key) return;
    apiKey = key;
    $('signin-btn').disabled = true;
    // A key is valid when a lookup of a session that cannot exist is "not found", not 401.
    const res = await api('GET', '/v1/sessions/ses_signin_probe');
    $('signin-btn').disabled = false;
    if (res.status === 401 || res.status === 0) {
      apiKey = null;
      setError('signin-error', res.status === 0 ? 'Cannot reach tonewall.' : 'That API key is not valid.');
      return;
    }
    setError('signin-error', '');
    show($('signin'), false);
    show($('signout'), true);
    show($('start'), true);
    $('call-id').focus();
  }

  function signOut() {
    apiKey = null;
    stopStream();
    view = null;
    show($('session'), false);
    show($('start'), false);
    show($('signout'), false);
    show($('signin'), true);
  }

  // ---- session -------------------------------------------------------------------------

  async function secure(ev) {
    ev.preventDefault();
    const callId = $('call-id').value.trim();
    const rep = $('rep').value.trim();
    if (!callId) { setError('start-error', 'A call id is needed.'); return; }
    $('secure-btn').disabled = true;
    const res = await api('POST', '/v1/sessions', { call_id: callId, rep });
    $('secure-btn').disabled = false;
    if (res.status !== 201 || !res.data || typeof res.data.id !== 'string') {
      setError('start-error', `Could not secure the call: ${errorText(res)}`);
      return;
    }
    setError('start-error', '');
    beginSession(res.data);
  }

  function beginSession(v) {
    stopStream();
    view = v;
    fields = {};
    active = null;
    paid = false;
    paying = false;
    buildFields(v);
    ['pay-error', 'alarm'].forEach((id) => setError(id, ''));
    show($('result'), false);
    show($('start'), false);
    show($('session'), true);
    show($('new-btn'), false);
    show($('end-btn'), true);
    $('session-id').textContent = v.id;
    applyView(v);
    startStream();
  }

  function applyView(v) {
    if (!view || v.id !== view.id) return;
    view = v;
    if (v.fields && typeof v.fields === 'object') {
      for (const [name, f] of Object.entries(v.fields)) {
        if (!fields[name]) continue;
        fields[name] = { masked: f.masked, length: f.length, complete: f.complete, valid: f.valid };
      }
    }
    active = v.active_field || null;
    const p = v.payment;
    if (p && (p.status === 'approved' || p.status === 'declined') && $('result').hidden) showResult(p);
    setState(v.state, v.reason);
    $('dnis').textContent = v.dnis || '';
    const legs = v.legs || {};
    setLeg('leg-rep', legs.rep && legs.rep.state);
    setLeg('leg-customer', legs.customer && legs.customer.state);
    renderFields();
  }

  function setLeg(id, state) {
    const el = $(id);
    el.textContent = state || 'waiting';
    el.dataset.state = state || 'waiting';
  }

  function setState(state, reason) {
    if (!view) return;
    view.state = state;
    const el = $('state');
    el.textContent = (state || '').replace('_', ' ');
    el.dataset.state = state || '';
    const r = $('reason');
    r.textContent = reason ? `(${reason})` : '';
    show(r, Boolean(reason));
    const at = STEPS.indexOf(state === 'failed' ? 'ended' : state);
    document.querySelectorAll('#progress li').forEach((li, i) => {
      li.classList.toggle('done', at >= 0 && i < at);
      li.classList.toggle('current', i === at);
      li.classList.toggle('failed', state === 'failed' && i === at);
      if (state === 'failed' && i === at) li.textContent = 'Failed';
      else li.textContent = li.dataset.label || li.textContent;
    });
    show($('dial'), !terminal(state));
    if (terminal(state)) {
      show($('end-btn'), false);
      show($('new-btn'), true);
      stopPolling();
    }
    updatePayButton();
  }

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      await refresh();
    }, 200);
  }

  async function refresh() {
    if (!view || !apiKey) return;
    const id = view.id;
    const res = await api('GET', `/v1/sessions/${encodeURIComponent(id)}`);
    if (res.ok && res.data && view && view.id === id) applyView(res.data);
  }

  function stopPolling() {
    if (poller) clearInterval(poller);
    poller = null;
  }

  // ---- fields --------------------------------------------------------------------------

  function buildFields(v) {
    const box = $('fields');
    box.replaceChildren();
    const tpl = $('field-tpl');
    for (const name of Object.keys(v.fields || {})) {
      fields[name] = { masked: '', length: 0, complete: false, valid: false };
      const node = tpl.content.firstElementChild.cloneNode(true);
      node.dataset.field = name;
      node.querySelector('.field-name').textContent = LABELS[name] || name;
      node.querySelector('.reset').addEventListener('click', () => fieldCommand(name, 'reset'));
      node.querySelector('.activate').addEventListener('click', () => fieldCommand(name, 'activate'));
      box.appendChild(node);
    }
  }

  function renderFields() {
    for (const [name, f] of Object.entries(fields)) {
      const node = document.querySelector(`.field[data-field="${name}"]`);
      if (!node) continue;
      const masked = node.querySelector('.masked');
      masked.textContent = f.masked || '';
      masked.classList.toggle('empty', !f.masked);
      const validity = f.length === 0 ? 'empty' : f.valid ? 'valid' : f.complete ? 'invalid' : 'typing';
      const badge = node.querySelector('.validity');
      badge.dataset.validity = validity;
      badge.textContent = { empty: 'empty', valid: '✓ valid', invalid: '✗ invalid', typing: '…' }[validity];
      show(node.querySelector('.complete-badge'), f.complete);
      node.querySelector('.count').textContent = `${f.length} digit${f.length === 1 ? '' : 's'}`;
      const isActive = active === name && view && !terminal(view.state);
      node.classList.toggle('active', isActive);
      node.dataset.active = String(isActive);
      node.dataset.complete = String(f.complete);
      show(node.querySelector('.active-badge'), isActive);
      const live = view && !terminal(view.state);
      node.querySelector('.reset').disabled = !live;
      node.querySelector('.activate').disabled = !live || isActive;
    }
    updatePayButton();
  }

  async function fieldCommand(name, command) {
    if (!view) return;
    const res = await api('POST', sessionPath(`/fields/${encodeURIComponent(name)}/${command}`));
    if (res.ok && res.data) {
      setError('pay-error', '');
      applyView(res.data);
    } else {
      setError('pay-error', `Could not ${command} the field: ${errorText(res)}`);
    }
  }

  // ---- events (SSE over fetch, so the API key goes in a header) -------------------------

  function sseParser(onEvent) {
    let buf = '';
    let data = [];
    let type = '';
    return (chunk) => {
      buf += chunk;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m) break;
        if (m[0] === '\r' && m.index === buf.length - 1) break; // maybe half of \r\n
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) onEvent(type || 'message', data.join('\n'));
          data = [];
          type = '';
        } else if (!line.startsWith(':')) {
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          let value = i < 0 ? '' : line.slice(i + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'event') type = value;
          else if (field === 'data') data.push(value);
        }
      }
    };
  }

  function streamStatus(text) { $('stream-status').textContent = text; }

  function stopStream() {
    if (stream) stream.abort();
    stream = null;
    stopPolling();
  }

  function startStream() {
    const ctl = new AbortController();
    stream = ctl;
    const id = view.id;
    // A slow safety net for anything the stream missed (legs, validity).
    stopPolling();
    poller = setInterval(() => { if (view && view.id === id) refresh(); }, 3000);
    (async () => {
      let delay = 500;
      while (!ctl.signal.aborted) {
        try {
          const r = await fetch(`/v1/sessions/${encodeURIComponent(id)}/events`, {
            headers: { Authorization: `Bearer ${apiKey}`, Accept: 'text/event-stream' },
            cache: 'no-store', credentials: 'omit', signal: ctl.signal,
          });
          if (r.status >= 400 && r.status < 500) { streamStatus(`Live updates unavailable (${r.status}).`); return; }
          if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
          streamStatus('Live.');
          delay = 500;
          refresh();
          const parse = sseParser((type, data) => onEvent(id, type, data));
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            parse(value);
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        if (!view || view.id !== id || terminal(view.state)) { streamStatus(''); return; }
        streamStatus('Reconnecting…');
        await new Promise((res) => setTimeout(res, delay));
        delay = Math.min(delay * 2, 5000);
      }
    })();
  }

  function onEvent(id, type, data) {
    if (!view || view.id !== id) return;
    let e;
    try { e = JSON.parse(data); } catch (err) { return; }
    if (!e || typeof e !== 'object') return;
    switch (type) {
      case 'state':
        setState(e.state, e.reason);
        renderFields();
        scheduleRefresh();
        break;
      case 'digit':
        if (fields[e.field]) {
          Object.assign(fields[e.field], { masked: e.masked, length: e.length });
          active = e.field;
          renderFields();
          scheduleRefresh(); // validity comes with the session view
        }
        break;
      case 'field':
        if (fields[e.field]) {
          fields[e.field] = { masked: e.masked, length: e.length, complete: e.complete, valid: e.valid };
          if (e.action === 'activated') active = e.field;
          else if (e.action === 'completed' && active === e.field) active = null;
          renderFields();
        }
        break;
      case 'payment':
        if (e.status === 'approved' || e.status === 'declined') showResult(e);
        else if (e.status === 'error') setError('pay-error', 'The payment gateway could not process the payment.');
        scheduleRefresh(); // the card fields are wiped after the gateway answers
        break;
      case 'alarm':
        setError('alarm', `Alarm: ${e.message || e.code || 'unknown'}`);
        break;
      default:
        break;
    }
  }

  // ---- payment -------------------------------------------------------------------------

  function payable() {
    if (!view || view.state !== 'bridged' || paid || paying) return false;
    const all = Object.values(fields);
    return all.length > 0 && all.every((f) => f.complete && f.valid);
  }

  function updatePayButton() { $('pay-btn').disabled = !payable(); }

  // "12.34" in currency with exponent e -> integer minor units, without floating point.
  function minorUnits(text, currency) {
    const e = Object.prototype.hasOwnProperty.call(EXPONENT, currency) ? EXPONENT[currency] : 2;
    const m = /^(\d{1,12})(?:[.,](\d+))?$/.exec(text.trim());
    if (!m) return null;
    const frac = m[2] || '';
    if (frac.length > e) return null;
    const n = Number(m[1] + frac.padEnd(e, '0'));
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  }

  async function pay(ev) {
    ev.preventDefault();
    if (!payable()) return;
    const currency = $('currency').value.trim().toUpperCase();
    if (!/^[A-Z]{3}$/.test(currency)) { setError('pay-error', 'The currency is a three-letter code (AUD, USD, …).'); return; }
    const amount = minorUnits($('amount').value, currency);
    if (amount === null) { setError('pay-error', `The amount is not a valid ${currency} amount.`); return; }
    setError('pay-error', '');
    paying = true;
    updatePayButton();
    $('pay-btn').textContent = 'Paying…';
    const res = await api('POST', sessionPath('/payment'), {
      amount_minor: amount,
      currency,
      description: $('description').value.trim(),
      cardholder: $('cardholder').value.trim(),
    });
    paying = false;
    $('pay-btn').textContent = 'Make payment';
    if (res.ok && res.data && (res.data.status === 'approved' || res.data.status === 'declined')) {
      showResult(res.data);
    } else {
      setError('pay-error', `The payment did not go through: ${errorText(res)}`);
    }
    updatePayButton();
    scheduleRefresh();
  }

  // One payment per session: after an answer the card data is gone and a resubmit would
  // only repeat it.
  function showResult(r) {
    const approved = r.status === 'approved';
    paid = true;
    const box = $('result');
    box.dataset.status = r.status;
    const why = r.decline_reason ? ` (${String(r.decline_reason).replace(/_/g, ' ')})` : '';
    $('result-status').textContent = approved ? 'Payment approved' : `Payment declined${why}`;
    $('result-reference').textContent = r.reference || '—';
    const brand = r.brand && r.brand !== 'unknown' ? `${r.brand} ` : '';
    $('result-pan').textContent = r.masked_pan ? `${brand}${r.masked_pan}` : '—';
    $('result-next').textContent = approved
      ? 'You may now end the secure session.'
      : 'You may now end the secure session (secure the call again to try another card).';
    show(box, true);
    setError('pay-error', '');
    updatePayButton();
  }

  async function endSession() {
    if (!view) return;
    $('end-btn').disabled = true;
    const res = await api('DELETE', sessionPath());
    $('end-btn').disabled = false;
    if (res.ok && res.data) applyView(res.data);
    else setError('alarm', `Could not end the session: ${errorText(res)}`);
  }

  function newCall() {
    stopStream();
    view = null;
    show($('session'), false);
    show($('start'), true);
  }

  // ---- wiring --------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    document.querySelectorAll('#progress li').forEach((li) => { li.dataset.label = li.textContent; });
    const q = new URLSearchParams(window.location.search);
    if (q.get('call_id')) $('call-id').value = q.get('call_id');
    if (q.get('rep')) $('rep').value = q.get('rep');
    $('signin-form').addEventListener('submit', signIn);
    $('start-form').addEventListener('submit', secure);
    $('pay-form').addEventListener('submit', pay);
    $('end-btn').addEventListener('click', endSession);
    $('new-btn').addEventListener('click', newCall);
    $('signout').addEventListener('click', signOut);
    $('api-key').focus();
  });
})();
