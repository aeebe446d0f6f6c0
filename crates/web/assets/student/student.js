// The student page: the attendanced line protocol over /ws, one text frame per line.
// Replies (OK/ERR) come in command order, so every command sent is queued in `pending` and
// each reply is matched to the oldest one. Live values are asked of the server, never guessed;
// the countdown only animates locally between the server's facts (OK JOIN, OK RESUME, ERR EARLY).
// A seat outlives a drop for the server's resume grace: the page keeps the seat's token (memory
// and sessionStorage, so a reload resumes too), reconnects by itself and sends RESUME <token>.
'use strict';
(() => {
  const POLL_MS = 5000; // TIME, ELAPSED, CLIENTS, PING
  const STALL_MS = 15000; // a reply this late means the connection is dead
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const JITTER = 0.3; // ±30 %: a room of phones that dropped together does not return together
  const GIVE_UP_MS = 5 * 60 * 1000; // the server's default resume grace: the seat is gone after it
  const REJOIN_MAX = 30; // ERR ALREADY retries (5 minutes)
  const SHUTDOWN_RETRY_MS = 30000;
  const REJOIN_RETRY_MS = 10000; // ERR ALREADY after a drop: the old seat is not freed yet
  const STORAGE_RETRY_MS = 3000;
  const EVENTS_MAX = 200;
  const KEY = 'attendanced.identity';
  const SEAT_KEY = 'attendanced.seat'; // {identity, token, total}: what a reload resumes
  // Lines that are not replies to a command: they must not consume `pending`.
  const UNSOLICITED = new Set(['FULL', 'TIMEOUT', 'TOOMANYERRORS']);

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), error: $('error'), form: $('join-form'), identity: $('identity'), code: $('code'),
    join: $('join'), view: $('class-view'), className: $('class-name'),
    student: $('student-name'), bar: $('countdown'), left: $('time-left'), marked: $('marked'),
    change: $('change-identity'), events: $('events'), chatForm: $('chat-form'),
    chat: $('chat-input'), send: $('chat-send'), serverTime: $('server-time'),
    connectedFor: $('connected-for'), clients: $('clients'), ping: $('ping'),
    heartbeat: $('heartbeat'), retry: $('retry'), historyBox: $('history-box'),
    historySum: $('history-sum'), history: $('history'),
  };

  const store = {
    get() { try { return sessionStorage.getItem(KEY) || ''; } catch { return ''; } },
    set(v) { try { if (v) sessionStorage.setItem(KEY, v); else sessionStorage.removeItem(KEY); } catch { /* private mode */ } },
    seat() { try { return JSON.parse(sessionStorage.getItem(SEAT_KEY)) || {}; } catch { return {}; } },
    setSeat(v) { try { if (v.token) sessionStorage.setItem(SEAT_KEY, JSON.stringify(v)); else sessionStorage.removeItem(SEAT_KEY); } catch { /* private mode */ } },
  };

  let ws = null;
  let greeted = false; // HELLO seen on this connection
  let pending = []; // {cmd, arg, at}
  let attempt = 0; // reconnects since the connection was lost
  let lostSince = 0; // performance.now() of the unexpected close not yet made good, or 0
  let gaveUp = false; // lost for GIVE_UP_MS: waits for "Try again"
  let replaced = false; // EVENT REPLACED: the seat is on another device; never reconnect
  let back = false; // the seat was taken back after a drop or a reload
  let rejoins = 0; // ERR ALREADY retries in a row
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
  let required = 0; // seconds, from the last OK JOIN or OK RESUME
  let total = 0; // the class length of this seat, for the progress bar
  let token = ''; // the seat's resume token (OK JOIN, OK RESUME), while it has time to serve
  let dueAt = 0; // performance.now() when the class length is served (server's word)
  let presentAt = 0; // do not send PRESENT before this
  let markedAt = ''; // the rfc3339 of OK PRESENT
  let ended = ''; // EVENT ENDED: the scheduled session closed; what was recorded

  let serverOffset = null; // server clock minus Date.now(), ms
  let elapsed = null; // {secs, at}: OK ELAPSED
  let heartbeatAt = '';
  let wakeLock = null;

  // ---- display -------------------------------------------------------------------------

  const STATUS = {
    connecting: 'Connecting…', connected: 'Connected', joined: 'Checked in',
    marked: 'Marked present', shutdown: 'Server shut down',
    replaced: 'Checked in on another device — this page has stopped',
    gaveup: 'Could not reconnect for 5 minutes. Check your connection, then try again.',
  };
  function setState(state, text) {
    ui.status.dataset.state = state;
    const t = text || STATUS[state];
    if (ui.status.textContent !== t) ui.status.textContent = t;
  }
  function showState() {
    if (replaced) {
      setState('replaced');
    } else if (ended) {
      setState('ended', ended);
    } else if (ws && greeted && (seated || !lostSince)) {
      if (markedAt && seated) setState('marked');
      else if (seated && back) setState('joined', `Back — ${duration(Math.ceil(leftSecs()))} left`);
      else if (seated) setState('joined');
      else setState('connected');
    } else if (gaveUp) {
      setState('gaveup');
    } else if (markedAt && student) {
      setState('marked');
    } else if (shutdown) {
      setState('shutdown');
    } else if (retryAt) {
      const n = Math.max(0, Math.ceil((retryAt - performance.now()) / 1000));
      setState('lost', `Connection lost — reconnecting… attempt ${attempt + 1} in ${n}s`);
    } else if (lostSince) {
      setState('lost', `Connection lost — reconnecting… attempt ${attempt}`);
    } else {
      setState('connecting');
    }
    ui.retry.hidden = !gaveUp || replaced;
  }
  function leftSecs() { return Math.max(0, (dueAt - performance.now()) / 1000); }
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
  // OK HISTORY status=… served=… required=… late=… kind@time…: the server's own account.
  const KINDS = { join: 'Checked in', drop: 'Connection lost', resume: 'Back', expired: 'Seat freed: not back in time', mark: 'Record written' };
  function showHistory(words) {
    const v = {};
    const items = [];
    for (const w of words) {
      const at = w.indexOf('@');
      const eq = w.indexOf('=');
      if (at > 0) items.push([w.slice(0, at), w.slice(at + 1)]);
      else if (eq > 0) v[w.slice(0, eq)] = w.slice(eq + 1);
    }
    const late = Number(v.late) || 0;
    ui.historySum.textContent = `${v.status === 'pending' ? 'Not marked yet' : v.status}: ${duration(Number(v.served) || 0)} of ${duration(Number(v.required) || 0)} served${late ? `, ${late} min late` : ''}`;
    ui.historySum.dataset.status = v.status || '';
    ui.history.replaceChildren(...items.map(([k, t]) => {
      const li = document.createElement('li');
      li.dataset.kind = k;
      li.textContent = `${localTime(t)} ${KINDS[k] || k}`;
      return li;
    }));
    ui.historyBox.hidden = false;
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
        const left = leftSecs();
        ui.bar.max = Math.max(total, 1);
        ui.bar.value = total ? Math.min(total, total - left) : 1;
        ui.left.textContent = `${duration(Math.ceil(left))} left`;
        if (left <= 0 && now >= presentAt && !isPending('PRESENT')) {
          send('PRESENT');
        }
      } else if (replaced || ended) {
        ui.left.textContent = replaced ? 'Counting on the other device' : 'Class over';
      } else {
        if (gaveUp) ui.left.textContent = 'Paused: not connected';
        else ui.left.textContent = lostSince ? 'Paused: reconnecting…' : 'Waiting for the connection…';
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
    const code = ui.code.value.trim();
    if (!identity || isPending('JOIN') || isPending('RESUME') || !send('JOIN', code ? `${identity} ${code}` : identity)) return;
    pending[pending.length - 1].auto = auto;
    ui.join.disabled = true;
  }
  // Takes the seat back with its token; the server says what is left (never our own clock).
  function resume() {
    if (!token || isPending('JOIN') || isPending('RESUME')) return;
    send('RESUME', token);
  }
  function showCode() {
    ui.code.hidden = false;
    $('code-label').hidden = false;
    if (!ui.code.value) ui.code.focus();
  }
  function saveSeat() { store.setSeat({ identity, token, total }); }
  function forgetToken() { token = ''; saveSeat(); }

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
      if (token) resume();
      else if (identity) join(true);
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
    ui.clients.textContent = '–';
    elapsed = null;
    if (idleClosed) {
      idleClosed = false;
      attempt = 0;
      connect(); // shows "Connecting…", not a loss
      return;
    }
    // Not a drop: the seat is elsewhere now, or served (the mark is on disk).
    if (replaced || ended || (markedAt && student)) {
      tick();
      return;
    }
    const now = performance.now();
    if (!lostSince) lostSince = now;
    if (now - lostSince >= GIVE_UP_MS) {
      gaveUp = true;
      tick();
      return;
    }
    let delay;
    if (shutdown) {
      delay = SHUTDOWN_RETRY_MS;
    } else {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
      delay = base * (1 + (Math.random() * 2 - 1) * JITTER);
    }
    attempt += 1;
    // The last attempt just before the grace runs out.
    delay = Math.max(0, Math.min(delay, lostSince + GIVE_UP_MS - now));
    retryAt = now + delay;
    retryTimer = setTimeout(connect, delay);
    tick();
  }
  // Back now (network up, screen on): retry at once instead of waiting out the backoff.
  function retryNow() {
    if (!ws && retryAt && !shutdown) connect();
  }
  // "Try again" after giving up: a fresh round of attempts.
  function tryAgain() {
    gaveUp = false;
    lostSince = 0;
    attempt = 0;
    connect();
  }

  // ---- lines from the server -----------------------------------------------------------

  function onLine(line) {
    const sp = line.indexOf(' ');
    const tag = sp < 0 ? line : line.slice(0, sp);
    const rest = sp < 0 ? '' : line.slice(sp + 1);
    if (tag === 'HELLO') {
      greeted = true;
      if (!student) { attempt = 0; lostSince = 0; } // else once the seat is back
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
      case 'JOIN':
      case 'RESUME': {
        // OK JOIN|RESUME <course> <div> <name> <roll> <required_seconds> [<resume_token>]
        ui.join.disabled = false;
        const first = student === null;
        const id = `${f[1]}_${f[2]}_${f[3]}_${f[4]}`;
        student = { course: f[1], div: f[2], name: f[3], roll: f[4] };
        required = Math.max(0, Number(f[5]) || 0);
        total = id === identity ? Math.max(total, required) : required;
        dueAt = performance.now() + required * 1000;
        presentAt = 0;
        seated = true;
        back = cmd.auto || f[0] === 'RESUME' || lostSince !== 0;
        lostSince = 0;
        attempt = 0;
        rejoins = 0;
        identity = id;
        token = /^[0-9a-fA-F]{32}$/.test(f[6] || '') ? f[6] : '';
        store.set(identity);
        saveSeat();
        showError('');
        showStudent();
        setChat(true);
        if (first) ui.className.focus();
        keepAwake();
        send('HISTORY');
        break;
      }
      case 'PRESENT':
        markedAt = f[1] || '';
        ui.marked.textContent = `Marked present at ${localTime(markedAt)}`;
        ui.marked.dataset.markedAt = markedAt;
        ui.marked.hidden = false;
        showError('');
        forgetToken(); // a marked seat is given back: nothing to resume
        releaseWake();
        send('HISTORY');
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
      case 'HISTORY':
        showHistory(f.slice(1));
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
      case 'RESUME':
        // BADTOKEN: the grace ran out (or the server restarted). A JOIN of the same ID
        // continues the time served today.
        forgetToken();
        join(true);
        break;
      case 'JOIN':
        ui.join.disabled = false;
        showError(message, code);
        // Connected: what is wrong now is the seat, which the error says, not the network.
        lostSince = 0;
        attempt = 0;
        if (code === 'BADCODE') {
          // The class needs the code on the teacher's screen: ask for it, keep the identity.
          showCode();
        } else if (code === 'ALREADY' && cmd.auto && rejoins < REJOIN_MAX) {
          // After a drop or reload the old connection may hold the seat until the server
          // notices it is gone (a dead phone: up to two WebSocket pings).
          rejoins += 1;
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
      case 'ENDED':
        // The scheduled session closed before PRESENT: the record says Late or Left (or Present).
        ended = `Class ended: recorded ${f[1]}, ${f[2]} min attended`;
        seated = false;
        forgetToken();
        releaseWake();
        break;
      case 'SHUTDOWN':
        shutdown = true;
        forgetToken(); // the server gives every seat back: the next check-in is a JOIN
        addEvent('The server is shutting down');
        break;
      case 'REPLACED':
        // A RESUME with our token elsewhere: that device counts now. Reconnecting here would
        // take the seat back and forth, so this page stops for good.
        replaced = true;
        seated = false;
        token = '';
        store.set('');
        store.setSeat({});
        addEvent('You checked in on another device; this page has stopped');
        drop();
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
    else if (gaveUp) tryAgain();
    else retryNow(); // joined as soon as the connection is back
  });
  ui.chatForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.chat.value.trim();
    if (!text || !seated) return;
    if (send('SAY', text)) ui.chat.value = '';
  });
  ui.retry.addEventListener('click', tryAgain);
  ui.change.addEventListener('click', () => {
    // Leaving the seat (QUIT gives it back at once, not after the grace): a new connection
    // checks in someone else.
    send('QUIT');
    identity = '';
    store.set('');
    token = '';
    store.setSeat({});
    total = 0;
    replaced = false;
    gaveUp = false;
    lostSince = 0;
    back = false;
    student = null;
    seated = false;
    markedAt = '';
    ui.marked.hidden = true;
    ui.historyBox.hidden = true;
    ended = '';
    ui.marked.textContent = '';
    delete ui.marked.dataset.markedAt;
    showStudent();
    attempt = 0;
    drop();
    lostSince = 0; // leaving on purpose is not a loss
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
  // A check-in link from the teacher's QR code: ?class=COURSE_DIV&code=123456.
  const q = new URLSearchParams(location.search);
  if (q.get('code')) { ui.code.value = q.get('code').slice(0, 6); showCode(); }
  if (q.get('class') && !identity) ui.identity.value = `${q.get('class')}_`;
  {
    // A reload of this tab: take the seat back rather than joining anew.
    const kept = store.seat();
    if (identity && kept.identity === identity && typeof kept.token === 'string') {
      token = kept.token;
      total = Number(kept.total) || 0;
    }
  }
  setInterval(tick, 1000);
  connect();
})();
