// The student page: the attendanced line protocol over /ws, one text frame per line.
// Replies (OK/ERR) come in command order, so every command sent is queued in `pending` and
// each reply is matched to the oldest one. Live values are asked of the server, never guessed;
// the countdown only animates locally between the server's facts (OK JOIN, ERR EARLY).
'use strict';
(() => {
  const POLL_MS = 5000; // TIME, ELAPSED, CLIENTS, PING
  const STALL_MS = 15000; // a reply this late means the connection is dead
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const SHUTDOWN_RETRY_MS = 30000;
  const REJOIN_RETRY_MS = 10000; // ERR ALREADY after a drop: the old seat is not freed yet
  const STORAGE_RETRY_MS = 3000;
  const EVENTS_MAX = 200;
  const KEY = 'attendanced.identity';
  // Lines that are not replies to a command: they must not consume `pending`.
  const UNSOLICITED = new Set(['FULL', 'TIMEOUT', 'TOOMANYERRORS']);

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), error: $('error'), form: $('join-form'), identity: $('identity'),
    join: $('join'), view: $('class-view'), className: $('class-name'),
    student: $('student-name'), bar: $('countdown'), left: $('time-left'), marked: $('marked'),
    change: $('change-identity'), events: $('events'), chatForm: $('chat-form'),
    chat: $('chat-input'), send: $('chat-send'), serverTime: $('server-time'),
    connectedFor: $('connected-for'), clients: $('clients'), ping: $('ping'),
    heartbeat: $('heartbeat'),
  };

  const store = {
    get() { try { return sessionStorage.getItem(KEY) || ''; } catch { return ''; } },
    set(v) { try { if (v) sessionStorage.setItem(KEY, v); else sessionStorage.removeItem(KEY); } catch { /* private mode */ } },
  };

  let ws = null;
  let greeted = false; // HELLO seen on this connection
  let pending = []; // {cmd, arg, at}
  let attempt = 0; // reconnects since the last HELLO
  let shutdown = false; // EVENT SHUTDOWN seen
  let retryAt = 0; // performance.now() of the next reconnect, while lost
  let retryTimer = 0;
  let pollTimer = 0;
  let rejoinTimer = 0;
  let pingSeq = 0;
  let idleClosed = false; // ERR TIMEOUT: closed for not joining; reconnect quietly

  let identity = store.get(); // the identity to (re)join as, kept for reloads
  let seated = false; // OK JOIN on this connection
  let student = null; // {course, div, name, roll}: the class view is shown
  let required = 0; // seconds, from the last OK JOIN
  let dueAt = 0; // performance.now() when the class length is served (server's word)
  let presentAt = 0; // do not send PRESENT before this
  let markedAt = ''; // the rfc3339 of OK PRESENT

  let serverOffset = null; // server clock minus Date.now(), ms
  let elapsed = null; // {secs, at}: OK ELAPSED
  let heartbeatAt = '';
  let wakeLock = null;

  // ---- display -------------------------------------------------------------------------

  const STATUS = {
    connecting: 'Connecting…', connected: 'Connected', joined: 'Checked in',
    marked: 'Marked present', shutdown: 'Server shut down',
  };
  function setState(state, text) {
    ui.status.dataset.state = state;
    const t = text || STATUS[state];
    if (ui.status.textContent !== t) ui.status.textContent = t;
  }
  function showState() {
    if (ws && greeted) {
      if (markedAt && seated) setState('marked');
      else if (seated) setState('joined');
      else setState('connected');
    } else if (shutdown) {
      setState('shutdown');
    } else if (retryAt) {
      const n = Math.max(0, Math.ceil((retryAt - performance.now()) / 1000));
      setState('lost', `Connection lost — retrying in ${n}s`);
    } else {
      setState('connecting');
    }
  }
  // A refusal's message in #error (its code in data-code), or nothing.
  function showError(text, code) {
    ui.error.textContent = text || '';
    ui.error.hidden = !text;
    if (text && code) ui.error.dataset.code = code; else delete ui.error.dataset.code;
  }
  function localTime(ts) {
    const ms = Date.parse(ts);
    return Number.isNaN(ms) ? ts : clock(ms);
  }
  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }
  function duration(secs) {
    const s = Math.max(0, Math.floor(secs));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
  }
  function addEvent(text) {
    const li = document.createElement('li');
    const t = document.createElement('time');
    t.textContent = clock(Date.now());
    li.append(t, ' ', text);
    ui.events.append(li);
    while (ui.events.childElementCount > EVENTS_MAX) ui.events.firstElementChild.remove();
    ui.events.scrollTop = ui.events.scrollHeight;
  }
  function setChat(enabled) {
    ui.chat.disabled = !enabled;
    ui.send.disabled = !enabled;
  }
  function showStudent() {
    const shown = student !== null;
    ui.view.hidden = !shown;
    ui.form.hidden = shown;
    if (!shown) return;
    ui.className.textContent = `${student.course}, ${student.div}`;
    ui.student.textContent = `${student.name} (${student.roll})`;
  }

  // Every second (and at each fact): countdown, live values, retry countdown.
  function tick() {
    const now = performance.now();
    if (student) {
      if (markedAt) {
        ui.bar.max = Math.max(required, 1);
        ui.bar.value = ui.bar.max;
        ui.left.textContent = '0:00 left';
      } else if (seated) {
        const left = Math.max(0, (dueAt - now) / 1000);
        ui.bar.max = Math.max(required, 1);
        ui.bar.value = required ? Math.min(required, required - left) : 1;
        ui.left.textContent = `${duration(Math.ceil(left))} left`;
        if (left <= 0 && now >= presentAt && !isPending('PRESENT')) {
          send('PRESENT');
        }
      } else {
        ui.left.textContent = 'Waiting for the connection…';
      }
    }
    if (serverOffset !== null) {
      const ts = Date.now() + serverOffset;
      ui.serverTime.textContent = clock(ts);
    }
    if (elapsed && ws && greeted) {
      ui.connectedFor.textContent = duration(elapsed.secs + (now - elapsed.at) / 1000);
    }
    showState();
  }

  // ---- wake lock -----------------------------------------------------------------------

  function counting() { return seated && !markedAt; }
  async function keepAwake() {
    if (!counting() || wakeLock || document.visibilityState !== 'visible') return;
    if (!('wakeLock' in navigator)) return;
    try {
      wakeLock = await navigator.wakeLock.request('screen');
      wakeLock.addEventListener('release', () => { wakeLock = null; });
      if (!counting()) releaseWake();
    } catch { wakeLock = null; }
  }
  function releaseWake() {
    const lock = wakeLock;
    wakeLock = null;
    if (lock) lock.release().catch(() => {});
  }

  // ---- the connection ------------------------------------------------------------------

  function isPending(cmd) { return pending.some((p) => p.cmd === cmd); }
  function send(cmd, arg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(arg === undefined ? cmd : `${cmd} ${arg}`);
    pending.push({ cmd, arg, at: performance.now() });
    return true;
  }
  function poll() {
    if (pending.length && performance.now() - pending[0].at > STALL_MS) {
      // No reply for too long: a phone that changed network, a NAT that forgot us.
      drop();
      return;
    }
    send('TIME');
    send('ELAPSED');
    send('CLIENTS');
    send('PING', String(++pingSeq));
  }
  // `auto`: a resume (reload, reconnect), not the user's submit.
  function join(auto) {
    clearTimeout(rejoinTimer);
    if (!identity || isPending('JOIN') || !send('JOIN', identity)) return;
    pending[pending.length - 1].auto = auto;
    ui.join.disabled = true;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryAt = 0;
    greeted = false;
    pending = [];
    const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
    let sock;
    try { sock = new WebSocket(url); } catch { closed(null); return; }
    ws = sock;
    showState();
    sock.onopen = () => {
      // The server takes commands before its greeting; they are answered after it.
      poll();
      clearInterval(pollTimer);
      pollTimer = setInterval(poll, POLL_MS);
      if (identity) join(true);
    };
    sock.onmessage = (e) => { if (ws === sock) onLine(String(e.data)); };
    sock.onclose = () => closed(sock);
  }
  // Ends the current connection at once (it is dead or we leave it) and schedules the next.
  function drop() {
    const sock = ws;
    if (sock) {
      sock.onclose = null;
      try { sock.close(); } catch { /* already closing */ }
    }
    closed(sock);
  }
  function closed(sock) {
    if (sock && ws !== sock) return; // an old socket we already left
    ws = null;
    greeted = false;
    seated = false;
    pending = [];
    clearInterval(pollTimer);
    clearTimeout(rejoinTimer);
    releaseWake();
    setChat(false);
    ui.join.disabled = false;
    ui.heartbeat.textContent = 'Disconnected';
    ui.connectedFor.textContent = '–';
    ui.ping.textContent = '–';
    elapsed = null;
    let delay;
    if (idleClosed) {
      idleClosed = false;
      attempt = 0;
      connect(); // shows "Connecting…", not a loss
      return;
    }
    if (shutdown) {
      delay = SHUTDOWN_RETRY_MS;
    } else {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
      delay = Math.min(BACKOFF_MAX_MS, base * (0.75 + Math.random() * 0.5));
      attempt += 1;
    }
    retryAt = performance.now() + delay;
    retryTimer = setTimeout(connect, delay);
    tick();
  }
  // Back now (network up, screen on): retry at once instead of waiting out the backoff.
  function retryNow() {
    if (!ws && retryAt && !shutdown) connect();
  }

  // ---- lines from the server -----------------------------------------------------------

  function onLine(line) {
    const sp = line.indexOf(' ');
    const tag = sp < 0 ? line : line.slice(0, sp);
    const rest = sp < 0 ? '' : line.slice(sp + 1);
    if (tag === 'HELLO') {
      greeted = true;
      attempt = 0;
      shutdown = false;
      heartbeatAt = '';
      ui.heartbeat.textContent = 'Connected';
      showState();
    } else if (tag === 'OK' || tag === 'ERR') {
      const code = rest.split(' ', 1)[0];
      if (tag === 'ERR' && UNSOLICITED.has(code)) {
        // TIMEOUT: no JOIN within the login timeout; the reconnect is quiet and quick.
        if (code === 'TIMEOUT') idleClosed = true;
        else showError(rest.slice(code.length + 1), code);
        return;
      }
      const cmd = pending.shift();
      if (!cmd) return;
      if (tag === 'OK') onOk(cmd, rest); else onErr(cmd, code, rest.slice(code.length + 1));
    } else if (tag === 'EVENT') {
      onEvent(rest);
    }
  }

  function onOk(cmd, rest) {
    const f = rest.split(' ');
    switch (f[0]) {
      case 'JOIN': {
        // OK JOIN <course> <div> <name> <roll> <required_seconds>
        ui.join.disabled = false;
        const first = student === null;
        student = { course: f[1], div: f[2], name: f[3], roll: f[4] };
        required = Math.max(0, Number(f[5]) || 0);
        dueAt = performance.now() + required * 1000;
        presentAt = 0;
        seated = true;
        identity = `${f[1]}_${f[2]}_${f[3]}_${f[4]}`;
        store.set(identity);
        showError('');
        showStudent();
        setChat(true);
        if (first) ui.className.focus();
        keepAwake();
        break;
      }
      case 'PRESENT':
        markedAt = f[1] || '';
        ui.marked.textContent = `Marked present at ${localTime(markedAt)}`;
        ui.marked.dataset.markedAt = markedAt;
        ui.marked.hidden = false;
        showError('');
        releaseWake();
        break;
      case 'TIME': {
        const ms = Date.parse(f[1]);
        const rtt = performance.now() - cmd.at;
        if (!Number.isNaN(ms)) serverOffset = ms + rtt / 2 - Date.now();
        break;
      }
      case 'ELAPSED':
        elapsed = { secs: Number(f[1]) || 0, at: performance.now() };
        break;
      case 'CLIENTS':
        ui.clients.textContent = f[1] || '–';
        break;
      case 'PONG':
        ui.ping.textContent = `${Math.round(performance.now() - cmd.at)} ms`;
        break;
      case 'SAY':
        addEvent(`You: ${cmd.arg}`);
        showError('');
        break;
      default:
        break;
    }
    tick();
  }

  function onErr(cmd, code, message) {
    switch (cmd.cmd) {
      case 'JOIN':
        ui.join.disabled = false;
        showError(message, code);
        if (code === 'ALREADY' && cmd.auto) {
          // After a drop or reload the old connection may hold the seat until the server
          // notices it is gone (a dead phone: up to two WebSocket pings).
          rejoinTimer = setTimeout(() => join(true), REJOIN_RETRY_MS);
        } else if (!seated && student === null) {
          // A refused identity is not kept; the form stays for a corrected one.
          identity = '';
          store.set('');
        }
        break;
      case 'PRESENT': {
        // EARLY <seconds> …: the server's word on what is left; try again then.
        const n = Number(message.split(' ', 1)[0]);
        if (code === 'EARLY' && Number.isFinite(n)) {
          dueAt = performance.now() + n * 1000;
          presentAt = performance.now() + 1000;
        } else {
          presentAt = performance.now() + STORAGE_RETRY_MS;
          showError(message, code);
        }
        break;
      }
      default:
        showError(message, code);
        break;
    }
    tick();
  }

  function onEvent(rest) {
    const f = rest.split(' ');
    const after = (n) => f.slice(n).join(' ');
    switch (f[0]) {
      case 'JOIN': addEvent(`${f[3]} joined`); break;
      case 'PRESENT': addEvent(`${f[1]} was marked present`); break;
      case 'SAY': addEvent(`${f[1]}: ${after(2)}`); break;
      case 'LEAVE': addEvent(`${f[1]} left`); break;
      case 'JOINS': addEvent(`${f[3]} more joined`); break;
      case 'PRESENTS': addEvent(`${f[3]} more were marked present`); break;
      case 'LEAVES': addEvent(`${f[3]} more left`); break;
      case 'LAGGED': addEvent(`${f[1]} announcements were skipped`); break;
      case 'HEARTBEAT': {
        heartbeatAt = f[1] || '';
        const ms = Date.parse(heartbeatAt);
        ui.heartbeat.textContent = Number.isNaN(ms) ? 'Connected' : `Connected, last heartbeat ${clock(ms)}`;
        break;
      }
      case 'SHUTDOWN':
        shutdown = true;
        addEvent('The server is shutting down');
        break;
      default: break;
    }
    tick();
  }

  // ---- the user ------------------------------------------------------------------------

  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = ui.identity.value.trim();
    if (!id) { showError('Type your identifier, e.g. ComputerNetworks_Div1_JayPatel_18BCP043'); return; }
    identity = id;
    showError('');
    if (ws && ws.readyState === WebSocket.OPEN) join(false);
    else retryNow(); // joined as soon as the connection is back
  });
  ui.chatForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.chat.value.trim();
    if (!text || !seated) return;
    if (send('SAY', text)) ui.chat.value = '';
  });
  ui.change.addEventListener('click', () => {
    // Leaving the seat: a new connection checks in someone else.
    identity = '';
    store.set('');
    student = null;
    seated = false;
    markedAt = '';
    ui.marked.hidden = true;
    ui.marked.textContent = '';
    delete ui.marked.dataset.markedAt;
    showStudent();
    attempt = 0;
    drop();
    connect();
    ui.identity.focus();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    retryNow();
    keepAwake();
  });
  window.addEventListener('online', retryNow);

  if (identity) ui.identity.value = identity;
  setInterval(tick, 1000);
  connect();
})();
