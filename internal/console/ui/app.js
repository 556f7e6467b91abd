// splitter operator console. Plain JavaScript, no build step, no request
// to anything but this admin port. It reads /v1/console/state and the
// /v1/console/events stream (no token needed) and calls the admin API's
// mutation endpoints with the token the operator typed, as a bearer
// header. The token lives in the page (and, when asked, in this tab's
// sessionStorage), never in a cookie.
(function () {
  'use strict';

  var TOKEN_KEY = 'splitter.console.token';
  var ACTION_LABELS = { start: 'Start', pause: 'Pause', resume: 'Resume', abort: 'Abort', promote: 'Promote' };
  var ALL_ACTIONS = ['start', 'pause', 'resume', 'abort', 'promote'];
  var STATE_LABELS = {
    idle: 'Idle', progressing: 'Progressing', paused: 'Paused', waiting: 'Waiting', promoted: 'Promoted',
    rolled_back: 'Rolled back', aborted: 'Aborted'
  };
  var REASON_LABELS = { header_match: 'header rule', sticky_routing: 'sticky user', weighted_routing: 'weighted', sticky_assigned: 'key assigned' };

  var cards = new Map(); // service name -> card
  var seq = 0;
  var lastEvent = 0;
  var source = null;
  var retry = 1000;
  var tokenRequired = false;

  // ---- DOM helpers ---------------------------------------------------

  function byId(id) { return document.getElementById(id); }

  // h builds an element: attrs are attributes (class, id, data-*, aria-*,
  // and "text" for textContent); children are nodes or strings.
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'text') el.textContent = String(v);
        else el.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { append(el, x); }); return; }
    el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }

  var SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs) {
    var el = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    return el;
  }

  function pct(n) {
    if (n === null || n === undefined) return '–';
    return (Math.round(n * 100) / 100).toLocaleString('en-US', { maximumFractionDigits: 2 }) + ' %';
  }
  function num(n) { return Number(n || 0).toLocaleString('en-US', { maximumFractionDigits: 2 }); }
  function time(t) {
    if (!t) return '–';
    var d = new Date(t);
    if (isNaN(d.getTime()) || d.getFullYear() < 2000) return '–';
    return d.toLocaleTimeString('en-GB', { hour12: false });
  }
  function dateTime(t) {
    if (!t) return '–';
    var d = new Date(t);
    if (isNaN(d.getTime()) || d.getFullYear() < 2000) return '–';
    return d.toLocaleString('en-GB', { hour12: false });
  }
  function secs(n) {
    n = Math.max(0, n || 0);
    if (n < 10 && n !== Math.round(n)) return (Math.round(n * 10) / 10) + ' s';
    n = Math.round(n);
    if (n < 120) return n + ' s';
    if (n < 7200) return Math.floor(n / 60) + ' min ' + (n % 60) + ' s';
    return Math.floor(n / 3600) + ' h ' + Math.floor((n % 3600) / 60) + ' min';
  }
  // goDuration reads Go's duration text ("1m30s", "898.1ms") as seconds.
  function goDuration(text) {
    var units = { h: 3600, m: 60, s: 1, ms: 1e-3, us: 1e-6, 'µs': 1e-6, ns: 1e-9 };
    var re = /([0-9.]+)(h|ms|m|s|us|µs|ns)/g;
    var total = 0;
    var m;
    while ((m = re.exec(String(text))) !== null) total += parseFloat(m[1]) * units[m[2]];
    return total;
  }
  function short(sha) { return sha ? sha.slice(0, 12) : '–'; }

  // ---- the token -----------------------------------------------------

  function token() { return byId('token').value.trim(); }

  function initToken() {
    var input = byId('token');
    var keep = byId('token-keep');
    var saved = null;
    try { saved = window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { saved = null; }
    if (saved) { input.value = saved; keep.checked = true; }
    function persist() {
      try {
        if (keep.checked && token()) window.sessionStorage.setItem(TOKEN_KEY, token());
        else window.sessionStorage.removeItem(TOKEN_KEY);
      } catch (e) { /* storage disabled: the field still holds it */ }
    }
    input.addEventListener('input', persist);
    keep.addEventListener('change', persist);
    byId('token-forget').addEventListener('click', function () {
      input.value = '';
      keep.checked = false;
      persist();
      input.focus();
    });
  }

  // ---- the admin API -------------------------------------------------

  function describe(status, msg) {
    msg = msg || '';
    switch (status) {
      case 401:
        return 'Not allowed: the admin token is ' + (token() ? 'wrong' : 'missing') +
          ' (401). Enter the admin token above and try again.';
      case 403: return 'Forbidden (403): ' + msg;
      case 409: return 'Refused (409): ' + msg;
      case 400: return 'Invalid (400): ' + msg;
      case 404: return 'Not found (404): ' + msg;
      case 503: return 'Unavailable (503): ' + msg;
    }
    return 'Failed (' + status + '): ' + (msg || 'no details');
  }

  // call sends a mutation with the token; it resolves to the JSON answer
  // or rejects with an Error whose message is for people.
  function call(method, path, body) {
    var headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token()) headers.Authorization = 'Bearer ' + token();
    return fetch(path, {
      method: method, headers: headers, credentials: 'omit', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!resp.ok) throw new Error(describe(resp.status, data && data.error ? data.error : text.trim()));
        return data;
      });
    }, function (err) {
      throw new Error('Could not reach splitter: ' + err.message);
    });
  }

  function say(el, text, ok) {
    el.textContent = text;
    el.className = 'msg ' + (ok ? 'ok' : 'error');
  }

  // ---- live updates --------------------------------------------------

  function setConn(kind, text) {
    var el = byId('conn');
    el.setAttribute('data-conn', kind);
    el.textContent = text;
  }

  function connect() {
    if (source) source.close();
    source = new EventSource('/v1/console/events');
    source.addEventListener('open', function () { retry = 1000; });
    source.addEventListener('state', function (ev) {
      lastEvent = Date.now();
      retry = 1000;
      var st;
      try { st = JSON.parse(ev.data); } catch (e) { return; }
      render(st);
      setConn('live', 'Live · updated ' + time(new Date()));
    });
    source.addEventListener('ping', function () {
      lastEvent = Date.now();
      setConn('live', 'Live · no change since ' + time(new Date(lastEvent)));
    });
    source.addEventListener('bye', function () {
      setConn('down', 'splitter is shutting down; reconnecting…');
    });
    source.addEventListener('error', function () {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (too many streams, draining) or gone: try again later,
        // and show the state meanwhile.
        setConn('down', 'Disconnected; retrying in ' + Math.round(retry / 1000) + ' s');
        source.close();
        source = null;
        setTimeout(function () { refresh(); connect(); }, retry);
        retry = Math.min(retry * 2, 30000);
      } else {
        setConn('down', 'Disconnected; reconnecting…');
      }
    });
  }

  function refresh() {
    return fetch('/v1/console/state', { credentials: 'omit', cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(render)
      .catch(function (e) { setConn('down', 'Cannot read the state: ' + e.message); });
  }

  // ---- rendering -----------------------------------------------------

  function render(st) {
    tokenRequired = !!(st.auth && st.auth.token_required);
    renderConfig(st);
    renderServices(st);
    renderFleet(st.fleet);
    renderAudit(st.audit || []);
    renderRefusals(st.refusals || { count: 0, recent: [] });
    renderSignals(st.signals || {});
  }

  function renderConfig(st) {
    var c = st.config || {};
    var dl = byId('config-dl');
    var rows = [];
    if (st.loaded) {
      rows.push(['Source', h('span', { class: 'mono', text: c.source })]);
      rows.push(['sha256', h('span', { class: 'mono', title: c.sha256, text: short(c.sha256) })]);
      rows.push(['Generation', String(c.generation)]);
      if (c.revision) rows.push(['etcd revision', String(c.revision)]);
      rows.push(['Loaded', dateTime(c.loaded_at)]);
    } else {
      rows.push(['State', 'No configuration loaded: every request goes to the stable route.']);
    }
    var nodes = [];
    rows.forEach(function (r) { nodes.push(h('dt', { text: r[0] }), h('dd', null, r[1])); });
    dl.replaceChildren.apply(dl, nodes);
    var re = byId('reload-error');
    if (c.last_reload_error) {
      re.textContent = 'The last reload failed at ' + dateTime(c.last_reload_error_at) +
        ' (the configuration above keeps serving): ' + c.last_reload_error;
      re.hidden = false;
    } else {
      re.hidden = true;
    }
    byId('auth-note').textContent = tokenRequired
      ? 'This splitter requires the admin token for every change.'
      : 'This splitter has no admin token set: changes are accepted from loopback addresses without one.';
    byId('no-services').hidden = !!st.loaded;
  }

  function renderServices(st) {
    var list = byId('service-list');
    var seen = new Set();
    var prev = null;
    (st.services || []).forEach(function (svc) {
      seen.add(svc.name);
      var card = cards.get(svc.name);
      if (!card) {
        card = makeCard(svc.name);
        cards.set(svc.name, card);
      }
      // Keep the configuration's order, moving a card only when it is out
      // of place: moving it would take the focus off its controls.
      var want = prev ? prev.nextSibling : list.firstChild;
      if (card.root !== want) list.insertBefore(card.root, want);
      prev = card.root;
      updateCard(card, svc);
    });
    cards.forEach(function (card, name) {
      if (!seen.has(name)) { card.root.remove(); cards.delete(name); }
    });
  }

  function makeCard(name) {
    var id = 'svc' + (++seq);
    var card = { name: name, id: id, dirty: false, svc: null };
    card.head = h('div', { class: 'card-head' }, h('h3', { id: id + '-h', text: name }));
    card.badges = h('span', { class: 'badges' });
    card.head.appendChild(card.badges);
    card.weights = h('div', { class: 'scroll' });
    card.canary = h('div', { class: 'canary-box' });
    card.rollout = h('div', { class: 'rollout-box' });
    card.traffic = h('div', { class: 'traffic-box' });
    card.reasons = h('div', { class: 'reasons-box' });
    card.root = h('article', { class: 'card', 'data-service': name, 'aria-labelledby': id + '-h' },
      card.head, card.weights, card.canary, card.rollout, card.traffic, card.reasons);
    return card;
  }

  function updateCard(card, svc) {
    card.svc = svc;
    card.badges.replaceChildren();
    append(card.badges, [
      h('span', { class: 'badge stable', text: 'stable ' + svc.stable }), ' ',
      svc.override ? h('span', { class: 'badge override', 'data-role': 'override', text: 'override in force' }) : null, ' ',
      svc.mirror ? h('span', {
        class: 'badge mirror', 'data-role': 'mirror',
        title: 'A dark launch: this share of the requests is also copied to ' + svc.mirror.version + ', whose answers are discarded',
        text: 'mirror ' + pct(svc.mirror.percent) + ' \u2192 ' + svc.mirror.version + (svc.mirror.runtime ? ' (runtime)' : '')
      }) : null, ' ',
      (svc.mirror_routes || []).map(function (r) {
        return [h('span', {
          class: 'badge mirror', 'data-role': 'mirror-route', 'data-name': r.name,
          title: 'Mirror route ' + r.name + ': this share of the requests where ' + r.when + ' is also copied to ' + r.version +
            ', before the service\'s mirror' + (r.owner ? ' (set by ' + r.owner + ')' : ''),
          text: 'mirror ' + pct(r.percent) + ' \u2192 ' + r.version + ' (' + r.name + ')'
        }), ' '];
      }),
      svc.assign_cookie ? h('span', {
        class: 'badge assign', 'data-role': 'assign',
        title: 'Clients without a sticky key are given one in the cookie ' + svc.assign_cookie,
        text: 'keys in cookie ' + svc.assign_cookie
      }) : null
    ]);
    renderWeights(card, svc);
    renderCanary(card, svc);
    renderRollout(card, svc);
    renderTraffic(card, svc);
    renderReasons(card, svc);
  }

  function renderWeights(card, svc) {
    var rows = svc.versions.map(function (v) {
      var fill = h('span');
      fill.style.width = Math.max(0, Math.min(100, v.weight)) + '%';
      return h('tr', { 'data-version': v.version },
        h('th', { scope: 'row', text: v.version }),
        h('td', { class: 'num', 'data-role': 'weight', text: pct(v.weight) }),
        h('td', { class: 'num', 'data-role': 'file-weight', text: pct(v.file) }),
        h('td', { class: 'num', 'data-role': 'override-weight', text: v.override === undefined ? '–' : pct(v.override) }),
        h('td', null, h('div', { class: 'bar', 'aria-hidden': 'true' }, fill)));
    });
    card.weights.replaceChildren(h('table', { class: 'weights' },
      h('caption', { text: 'Weights: in force, in the file, and set by an override' }),
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', text: 'Version' }), h('th', { scope: 'col', text: 'In force' }),
        h('th', { scope: 'col', text: 'File' }), h('th', { scope: 'col', text: 'Override' }),
        h('th', { scope: 'col', text: 'Share' }))),
      h('tbody', null, rows)));
  }

  function canaryWeight(svc) {
    for (var i = 0; i < svc.versions.length; i++) {
      if (svc.versions[i].version === svc.canary) return svc.versions[i].weight;
    }
    return 0;
  }

  function renderCanary(card, svc) {
    if (!svc.canary) { card.canary.replaceChildren(); card.c = null; return; }
    if (!card.c || card.c.version !== svc.canary) buildCanary(card, svc);
    var c = card.c;
    var active = document.activeElement;
    if (!card.dirty && active !== c.range && active !== c.number) {
      var w = canaryWeight(svc);
      c.range.value = String(Math.round(w));
      c.number.value = String(w);
    }
    var owned = svc.rollout && svc.rollout.owns_weights;
    c.note.textContent = owned
      ? 'A progressing rollout owns these weights: pause or abort it before setting the canary by hand.'
      : 'Share of requests (not pinned by a rule or a sticky key) that go to ' + svc.canary + '; the rest go to ' + svc.stable + '.';
    c.clear.disabled = !svc.override;
  }

  function buildCanary(card, svc) {
    var id = card.id;
    var c = { version: svc.canary };
    c.range = h('input', { type: 'range', id: id + '-range', min: '0', max: '100', step: '1', 'data-role': 'canary-range', 'aria-describedby': id + '-cnote' });
    c.number = h('input', { type: 'number', id: id + '-num', min: '0', max: '100', step: '0.01', inputmode: 'decimal', 'data-role': 'canary-number', 'aria-describedby': id + '-cnote' });
    c.set = h('button', { type: 'button', 'data-role': 'canary-set', text: 'Set canary' });
    c.clear = h('button', { type: 'button', class: 'secondary', 'data-role': 'override-clear', text: 'Back to file weights' });
    c.note = h('p', { class: 'note', id: id + '-cnote' });
    c.msg = h('p', { class: 'msg', 'data-role': 'canary-msg', role: 'status', 'aria-live': 'polite' });
    c.range.addEventListener('input', function () { card.dirty = true; c.number.value = c.range.value; });
    c.number.addEventListener('input', function () { card.dirty = true; if (c.number.value !== '') c.range.value = c.number.value; });
    c.number.addEventListener('keydown', function (e) { if (e.key === 'Enter') { e.preventDefault(); setCanary(card); } });
    c.range.addEventListener('keydown', function (e) { if (e.key === 'Enter') { e.preventDefault(); setCanary(card); } });
    c.set.addEventListener('click', function () { setCanary(card); });
    c.clear.addEventListener('click', function () { clearOverride(card); });
    card.canary.replaceChildren(
      h('h4', { text: 'Canary' }),
      h('div', { class: 'control' },
        h('label', { for: id + '-range', text: 'Canary ' + svc.canary + ' share' }), c.range,
        h('label', { for: id + '-num', text: 'Percent' }), c.number,
        c.set, c.clear),
      c.note, c.msg);
    card.c = c;
  }

  function setCanary(card) {
    var c = card.c;
    var raw = c.number.value.trim();
    var p = Number(raw);
    if (raw === '' || !isFinite(p) || p < 0 || p > 100) {
      say(c.msg, 'Enter a percentage from 0 to 100.', false);
      c.number.focus();
      return;
    }
    say(c.msg, 'Setting ' + card.svc.canary + ' to ' + pct(p) + '…', true);
    c.set.disabled = true;
    call('PUT', '/v1/services/' + encodeURIComponent(card.name) + '/canary', { percentage: p })
      .then(function (ans) {
        card.dirty = false;
        var parts = card.svc.versions.map(function (v) { return v.version + ' ' + pct(ans[v.version]); });
        say(c.msg, 'Done: ' + parts.join(', ') + '.', true);
        refresh();
      }, function (err) { say(c.msg, err.message, false); })
      .then(function () { c.set.disabled = false; });
  }

  function clearOverride(card) {
    var c = card.c;
    call('DELETE', '/v1/services/' + encodeURIComponent(card.name) + '/override')
      .then(function () { card.dirty = false; say(c.msg, 'Done: back to the file’s weights.', true); refresh(); },
        function (err) { say(c.msg, err.message, false); });
  }

  function renderRollout(card, svc) {
    var box = card.rollout;
    if (svc.rollout_error) {
      box.replaceChildren(h('h4', { text: 'Rollout' }), h('p', { class: 'alert', text: svc.rollout_error }));
      card.r = null;
      return;
    }
    var r = svc.rollout;
    if (!r) { box.replaceChildren(); card.r = null; return; }
    if (!card.r) buildRollout(card);
    var R = card.r;
    if (R.shownState && R.shownState !== r.state && R.msg.className === 'msg ok') {
      // A confirmation is about the state it produced; a later change
      // (the guard's) makes it stale.
      R.msg.textContent = '';
    }
    R.shownState = r.state;
    R.state.setAttribute('data-state', r.state);
    R.state.textContent = STATE_LABELS[r.state] || r.state;
    R.summary.textContent = (r.shadow ? 'Shadow step: ' + pct(r.shadow_percent) + ' mirrored, no user served'
      : r.step ? 'Step ' + r.step + ' of ' + r.steps : 'Not started') +
      ' · canary ' + r.canary + ' at ' + pct(r.weight) + ' against ' + r.stable;
    if (r.state === 'progressing' || r.state === 'paused' || r.state === 'waiting') {
      R.hold.hidden = false;
      R.progress.max = Math.max(r.hold_seconds, 0.001);
      R.progress.value = Math.min(r.held_seconds, r.hold_seconds);
      R.holdText.textContent = 'Held ' + secs(r.held_seconds) + ' of ' + secs(r.hold_seconds) +
        (r.state === 'paused' ? ' (paused: the hold clock is stopped)' : '');
    } else {
      R.hold.hidden = true;
    }
    var v = r.verdict;
    if (v) {
      R.verdict.setAttribute('data-result', v.result);
      R.verdict.replaceChildren.apply(R.verdict, [
        h('p', null, 'Last verdict: ', h('span', { class: 'result', 'data-role': 'verdict', text: v.result }), ' at ' + time(v.at) +
          ' over ' + secs(goDuration(v.covered)) + ' of the ' + secs(goDuration(r.config && r.config.guard ? r.config.guard.window : 0)) + ' window'),
        h('p', { text: 'Canary ' + r.canary + ': ' + num(v.canary.requests) + ' requests, ' + num(v.canary.errors) +
          ' errors (' + pct(v.canary_error_rate) + '). Stable ' + r.stable + ': ' + num(v.stable.requests) +
          ' requests, ' + num(v.stable.errors) + ' errors (' + pct(v.stable_error_rate) + ').' }),
        latencyLine(r, v),
        v.failing_for ? h('p', { 'data-role': 'failing-for', text: 'Failing for ' + secs(goDuration(v.failing_for)) + ' of the ' +
          secs(goDuration(r.config && r.config.guard ? r.config.guard.failing_for : 0)) + ' the guard waits before a rollback.' }) : null,
        h('p', { class: 'note', text: v.reason })].filter(Boolean));
    } else {
      R.verdict.removeAttribute('data-result');
      R.verdict.replaceChildren(h('p', { class: 'note', text: 'No verdict yet.' }));
    }
    renderWaiting(R.waiting, r.waiting);
    R.sigErr.hidden = !r.signal_error;
    R.sigErr.textContent = r.signal_error ? 'Signals cannot be read, so the guard makes no verdict: ' + r.signal_error : '';
    var allowed = r.actions || [];
    ALL_ACTIONS.forEach(function (a) { R.buttons[a].disabled = allowed.indexOf(a) < 0; });
    var hist = (r.history || []).slice(-5).reverse().map(function (t) {
      return h('li', null, h('time', { datetime: t.at, text: time(t.at) }), ' ' + (STATE_LABELS[t.from] || t.from) + ' → ' +
        (STATE_LABELS[t.to] || t.to) + ', step ' + t.step + ', canary ' + pct(t.weight) + ', by ' + t.actor + ': ' + t.reason);
    });
    R.history.replaceChildren.apply(R.history, hist);
    R.historyHead.hidden = hist.length === 0;
  }

  // latencyLine shows the latency figures of a verdict judged on latency.
  function latencyLine(r, v) {
    var l = v.latency;
    if (!l || !l.canary || !l.canary.requests) return null;
    var fig = function (f) { return f.requests ? num(f.ms) + (f.over ? '+' : '') + ' ms (' + num(f.requests) + ' timed)' : 'none timed'; };
    return h('p', { 'data-role': 'latency', 'data-result': l.result },
      'Latency p' + num(l.percentile) + ': canary ' + r.canary + ' ' + fig(l.canary) + ', stable ' + r.stable + ' ' + fig(l.stable) + '.');
  }

  // renderWaiting says what a waiting rollout waits on: the hook asked
  // now and its last answer.
  function renderWaiting(box, w) {
    if (!w) { box.hidden = true; box.replaceChildren(); return; }
    box.hidden = false;
    var head = 'Waiting before step ' + w.next_step + ' (' + pct(w.next_weight) + ')';
    var nodes = [];
    if (w.hook) {
      nodes.push(h('p', null, head + ' on hook ', h('span', { class: 'mono', 'data-role': 'waiting-hook', text: w.hook }),
        ' (' + w.type + '), asked ' + num(w.asked) + (w.asked === 1 ? ' time' : ' times') + (w.since ? ' since ' + time(w.since) : '') + '.'));
      if (w.last_answer) nodes.push(h('p', { class: 'note', 'data-role': 'waiting-answer', text: 'Last answer at ' + time(w.last_at) + ': ' + w.last_answer }));
    } else {
      nodes.push(h('p', { text: head + (w.note ? ': ' + w.note : ': the hooks are asked by the rollout leader.') }));
    }
    if (w.passed && w.passed.length) nodes.push(h('p', { class: 'note', text: 'Answered 2xx: ' + w.passed.join(', ') + '.' }));
    box.replaceChildren.apply(box, nodes);
  }

  function buildRollout(card) {
    var R = { buttons: {} };
    R.state = h('span', { class: 'badge state', 'data-role': 'rollout-state' });
    R.summary = h('span', { 'data-role': 'rollout-summary' });
    R.progress = h('progress', { 'aria-labelledby': card.id + '-hold' });
    R.holdText = h('span', { id: card.id + '-hold' });
    R.hold = h('div', { class: 'hold' }, R.progress, R.holdText);
    R.verdict = h('div', { class: 'verdict' });
    R.waiting = h('div', { class: 'waiting', 'data-role': 'waiting', hidden: true });
    R.sigErr = h('p', { class: 'alert', role: 'alert', hidden: true });
    R.msg = h('p', { class: 'msg', 'data-role': 'rollout-msg', role: 'status', 'aria-live': 'polite' });
    var actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Rollout actions for ' + card.name });
    ALL_ACTIONS.forEach(function (a) {
      var b = h('button', { type: 'button', 'data-action': a, class: a === 'abort' ? 'danger' : (a === 'start' || a === 'promote' ? '' : 'secondary'), text: ACTION_LABELS[a] });
      b.addEventListener('click', function () { act(card, a, b); });
      R.buttons[a] = b;
      actions.appendChild(b);
    });
    R.history = h('ol', { class: 'history', reversed: true });
    R.historyHead = h('h4', { text: 'Recent transitions' });
    card.rollout.replaceChildren(
      h('h4', { text: 'Rollout' }),
      h('p', null, R.state, ' ', R.summary),
      R.hold, R.waiting, R.verdict, R.sigErr, actions, R.msg, R.historyHead, R.history);
    card.r = R;
  }

  function act(card, action, button) {
    var R = card.r;
    say(R.msg, ACTION_LABELS[action] + '…', true);
    call('POST', '/v1/services/' + encodeURIComponent(card.name) + '/rollout', { action: action })
      .then(function (st) {
        say(R.msg, 'Done: the rollout is ' + (STATE_LABELS[st.state] || st.state).toLowerCase() + '.', true);
        return refresh();
      }, function (err) { say(R.msg, err.message, false); })
      .then(function () {
        if (button.disabled) {
          var next = ALL_ACTIONS.map(function (a) { return R.buttons[a]; }).filter(function (b) { return !b.disabled; })[0];
          if (next && document.activeElement === document.body) next.focus();
        }
      });
  }

  function renderTraffic(card, svc) {
    var t = svc.traffic;
    var box = card.traffic;
    var head = h('h4', { text: 'Traffic per version' });
    if (!t) { box.replaceChildren(head, h('p', { class: 'note', text: 'Not sampled yet.' })); return; }
    var span = secs(t.bucket_seconds * (t.versions[0] ? t.versions[0].requests.length : 0));
    var nodes = [head];
    if (t.error) nodes.push(h('p', { class: 'alert', 'data-role': 'traffic-error', text: t.error }));
    var peak = 1;
    t.versions.forEach(function (v) { v.requests.forEach(function (n) { if (n > peak) peak = n; }); });
    t.versions.forEach(function (v) {
      var label = v.version + ': ' + num(v.rate_per_second) + ' requests/s, ' + pct(v.error_percent) + ' errors over the last minute';
      nodes.push(h('div', { class: 'traffic-row', 'data-version': v.version },
        h('span', { class: 'mono', text: v.version }),
        h('span', { class: 'nums' },
          h('span', { 'data-role': 'rate', text: num(v.rate_per_second) + ' req/s' }), ' · ',
          h('span', { class: v.error_percent > 0 ? 'err' : '', 'data-role': 'error-rate', text: pct(v.error_percent) + ' errors' })),
        spark(v, peak, label)));
    });
    nodes.push(h('ul', { class: 'legend' },
      h('li', null, h('span', { class: 'swatch sw-req', 'aria-hidden': 'true' }), 'requests per ' + secs(t.bucket_seconds)),
      h('li', null, h('span', { class: 'swatch sw-err', 'aria-hidden': 'true' }), 'errors (5xx, resets)'),
      h('li', { class: 'note', text: 'last ' + span + ' (' + secs(t.covered_seconds) + ' sampled)' })));
    box.replaceChildren.apply(box, nodes);
  }

  // spark draws one version's requests (blue) and errors (red) per bucket.
  function spark(v, peak, label) {
    var n = v.requests.length;
    var svg = s('svg', { viewBox: '0 0 ' + n + ' 20', preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
    svg.appendChild(s('title', {})).textContent = label;
    for (var i = 0; i < n; i++) {
      var rh = 20 * v.requests[i] / peak;
      if (rh > 0) svg.appendChild(s('rect', { x: i + 0.1, y: 20 - rh, width: 0.8, height: rh, fill: '#3b6fd4' }));
      var eh = 20 * v.errors[i] / peak;
      if (eh > 0) svg.appendChild(s('rect', { x: i + 0.1, y: 20 - Math.max(eh, 0.8), width: 0.8, height: Math.max(eh, 0.8), fill: '#c62828' }));
    }
    return svg;
  }

  function renderReasons(card, svc) {
    var box = card.reasons;
    var rs = svc.reasons || [];
    var total = rs.reduce(function (a, r) { return a + r.recent; }, 0);
    var head = h('h4', { text: 'Why requests went where they went' });
    if (!rs.length) { box.replaceChildren(); return; }
    var bar = h('div', { class: 'mix', 'aria-hidden': 'true' });
    rs.forEach(function (r) {
      if (!total || !r.recent) return;
      var seg = h('span', { class: 'r-' + r.reason });
      seg.style.width = (100 * r.recent / total) + '%';
      bar.appendChild(seg);
    });
    var items = rs.map(function (r) {
      return h('li', { 'data-reason': r.reason },
        h('span', { class: 'swatch r-' + r.reason, 'aria-hidden': 'true' }),
        (REASON_LABELS[r.reason] || r.reason) + ' (' + r.reason + '): ' + num(r.recent) +
        (total ? ' (' + pct(100 * r.recent / total) + ')' : '') + ', ' + num(r.total) + ' since start');
    });
    box.replaceChildren(head, total ? bar : h('p', { class: 'note', text: 'No decisions recently.' }), h('ul', { class: 'legend' }, items));
  }

  function renderFleet(f) {
    var sec = byId('fleet');
    if (!f) { sec.hidden = true; return; }
    sec.hidden = false;
    var st = f.status || {};
    byId('fleet-conn').textContent = st.node_id
      ? 'This replica: ' + st.node_id + ', ' + (st.connected ? 'connected to etcd' : 'disconnected from etcd since ' + dateTime(st.disconnected_since)) +
        ', applied revision ' + (st.applied_revision || 0) + '.'
      : '';
    var err = byId('fleet-error');
    err.hidden = !f.error;
    err.textContent = f.error ? 'Cannot list the replicas: ' + f.error : '';
    var tbody = byId('fleet-table').tBodies[0];
    var v = f.view || { replicas: [] };
    var newest = 0;
    (v.replicas || []).forEach(function (r) { if (r.revision > newest) newest = r.revision; });
    var rows = (v.replicas || []).map(function (r) {
      return h('tr', { 'data-node': r.node_id },
        h('th', { scope: 'row', class: 'mono', text: r.node_id }),
        h('td', { class: 'num', 'data-role': 'revision', text: String(r.revision) + (r.revision < newest ? ' (behind)' : '') }),
        h('td', { class: 'mono', title: r.sha256, text: short(r.sha256) }),
        h('td', { class: 'mono', title: r.state_sha256, text: short(r.state_sha256) }),
        h('td', { text: time(r.applied_at) }),
        h('td', { class: r.error ? 'err' : '', text: r.error || '' }));
    });
    tbody.replaceChildren.apply(tbody, rows);
  }

  function renderAudit(events) {
    var list = byId('audit-list');
    if (!events.length) {
      list.replaceChildren(h('li', { class: 'note', text: 'No changes since the process started.' }));
      return;
    }
    list.replaceChildren.apply(list, events.map(auditItem));
  }

  function auditItem(e) {
    var attrs = e.attrs || [];
    var result = '';
    attrs.forEach(function (a) { if (a.key === 'result') result = a.value; });
    return h('li', { 'data-level': e.level, 'data-result': result },
      h('time', { datetime: e.time, text: time(e.time) }),
      h('span', { class: 'what', text: e.message }),
      attrs.map(function (a) { return h('span', { class: 'kv' }, h('b', { text: a.key + ' ' }), a.value); }));
  }

  // Refusals at the door (no or a wrong token, cross-site, a non-loopback
  // Host) are counted and the last few listed apart: anyone who reaches
  // the port can cause them, so they never push the changes out.
  function renderRefusals(r) {
    var recent = r.recent || [];
    var count = r.count || 0;
    byId('refusals-count').textContent = count === 0
      ? 'None since the process started.'
      : count + (count === 1 ? ' attempt' : ' attempts') + ' refused since the process started (no or a wrong admin token, ' +
        'sent from another site, or a Host that is not loopback)' + (recent.length ? '; the last ' + recent.length + ', newest first:' : '.');
    var list = byId('refusals-list');
    list.hidden = recent.length === 0;
    list.replaceChildren.apply(list, recent.map(auditItem));
  }

  function renderSignals(sg) {
    var el = byId('signals');
    var every = secs(sg.interval_seconds);
    if (!sg.source) {
      el.textContent = 'Per-version traffic: no source (envoy_admin is not set).';
    } else if (sg.error) {
      el.textContent = 'Per-version traffic from ' + sg.source + ': ' + sg.error;
    } else {
      el.textContent = 'Per-version traffic from ' + sg.source + ', sampled every ' + every + ', last ' +
        secs(sg.interval_seconds * sg.buckets) + ' kept in memory; last sample ' + time(sg.sampled_at) + '.';
    }
  }

  // ---- start ---------------------------------------------------------

  function start() {
    initToken();
    refresh();
    if (window.EventSource) connect();
    else setInterval(refresh, 2000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
