// attendanced teacher dashboard: fills the class list and class pages from their
// Server-Sent Events. No polling: the server pushes every change; a dropped stream is
// reopened by the browser, which names the last event it saw (Last-Event-ID) and gets exactly
// what it missed.
'use strict';
(() => {
  const body = document.body;
  const live = document.getElementById('live');
  // Server clock minus this clock, in ms (time served is shown by the server's clock).
  let offset = 0;
  // For tests and the curious: how the streams went.
  const stats = { snapshots: 0, updates: 0, opened: 0, reconnect: null };
  window.attendancedDashboard = stats;

  const setLive = (state, text) => {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  };
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '');
  const duration = (s) => {
    const t = Math.max(0, Math.round(s));
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const r = String(t % 60).padStart(2, '0');
    return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
  };
  const serverNow = () => Date.now() + offset;
  const setOffset = (iso) => {
    const t = Date.parse(iso);
    if (!Number.isNaN(t)) offset = t - Date.now();
  };
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // Opens `url` as an event stream with `handlers` per event name.
  function stream(url, handlers) {
    let source = null;
    let lastId = null;
    let shutDown = false;
    const connect = (resumeFrom) => {
      const u = resumeFrom ? `${url}?last_event_id=${encodeURIComponent(resumeFrom)}` : url;
      source = new EventSource(u);
      source.onopen = () => {
        stats.opened += 1;
        shutDown = false;
        setLive('live', 'Live');
      };
      source.onerror = () => {
        if (shutDown) setLive('shutdown', 'The server has shut down; reconnecting when it is back…');
        else setLive('reconnecting', 'Connection lost; reconnecting…');
      };
      for (const [name, handle] of Object.entries(handlers)) {
        source.addEventListener(name, (ev) => {
          if (ev.lastEventId) lastId = ev.lastEventId;
          handle(JSON.parse(ev.data));
        });
      }
      source.addEventListener('shutdown', () => {
        shutDown = true;
        setLive('shutdown', 'The server is shutting down');
      });
    };
    connect(null);
    // Drops the stream and opens it again from the last event seen (what the browser does by
    // itself after a network drop).
    stats.reconnect = () => {
      source.close();
      connect(lastId);
    };
  }

  function listPage() {
    const tbody = document.querySelector('#classes tbody');
    const none = document.getElementById('no-classes');
    const total = (id, v) => {
      const e = document.getElementById(id);
      if (e && v !== null && v !== undefined) e.textContent = String(v);
    };
    stream(body.dataset.events, {
      classes(o) {
        setOffset(o.now);
        stats.updates += 1;
        total('total-connections', o.connections);
        total('total-seated', o.seated);
        total('total-marked', o.marks_today);
        tbody.replaceChildren(
          ...o.classes.map((c) => {
            const tr = el('tr');
            tr.dataset.class = c.class;
            const name = el('td');
            const a = el('a', '', `${c.course} · ${c.division}`);
            a.href = `/teacher/class/${encodeURIComponent(c.course)}/${encodeURIComponent(c.division)}`;
            name.append(a);
            tr.append(name, el('td', 'joined', String(c.joined)),
              el('td', 'marked', String(c.marked)), el('td', 'connected', String(c.connected)));
            return tr;
          }),
        );
        none.hidden = o.classes.length > 0;
      },
    });
  }

  function classPage() {
    const tbody = document.querySelector('#students tbody');
    const chat = document.getElementById('chat');
    const showAddr = document.getElementById('show-addr');
    const rows = new Map();
    showAddr.addEventListener('change', () => body.classList.toggle('hide-addr', !showAddr.checked));

    const key = (r) => `${r.name}\u0000${r.roll}`;
    const secondsLeft = (r) => {
      if (r.marked_at) return 0;
      const due = Date.parse(r.joined_at) + r.seconds_left * 1000;
      const at = r.connected || !r.left_at ? serverNow() : Date.parse(r.left_at);
      return Math.max(0, (due - at) / 1000);
    };
    const paint = (tr, r) => {
      const left = secondsLeft(r);
      const bar = tr.querySelector('progress');
      bar.max = Math.max(1, r.seconds_left);
      bar.value = r.marked_at ? bar.max : Math.max(0, r.seconds_left - left);
      let served;
      if (r.marked_at) served = 'served';
      else if (left <= 0) served = 'served, not marked yet';
      else served = `${duration(left)} left`;
      if (!r.marked_at && !r.connected) served += ' (gone)';
      tr.querySelector('.served-text').textContent = served;
    };
    const fill = (tr, r) => {
      tr.dataset.roll = r.roll;
      const status = r.marked_at ? 'present' : r.connected ? 'seated' : 'left';
      tr.dataset.status = status;
      const cells = tr.children;
      cells[0].textContent = r.name;
      cells[1].textContent = r.roll;
      cells[2].textContent = r.addr || '';
      cells[3].textContent = time(r.joined_at);
      const word = { present: 'Present', seated: 'Seated', left: 'Left' }[status];
      const st = cells[5];
      st.replaceChildren(el('span', `status ${status}`, word));
      if (r.marked_at) st.append(el('span', 'when', ` at ${time(r.marked_at)}`));
      if (r.via === 'ws') st.append(el('span', 'via', ' · web'));
      for (const f of r.flags || []) {
        const words = {
          'shared-address': ['⚑ shared address', 'Several students checked in from this address within minutes: maybe one device checking in for others (or just a shared NAT).'],
          'two-addresses': ['⚑ two addresses', 'This roll was seen from two addresses today.'],
        }[f];
        if (!words) continue;
        const flag = el('span', 'flag', ` ${words[0]}`);
        flag.title = words[1];
        st.append(flag);
      }
      if (r.lagged > 0) {
        const warn = el('span', 'lagging', ` ⚠ lagging (${r.lagged} missed)`);
        warn.title = 'This student\'s connection is too slow to keep up with the class.';
        st.append(warn);
      }
      paint(tr, r);
    };
    const row = (r) => {
      const k = key(r);
      let entry = rows.get(k);
      if (!entry) {
        const tr = el('tr');
        const served = el('td', 'served');
        served.append(el('progress'), el('span', 'served-text'));
        tr.append(el('td'), el('td'), el('td', 'addr'), el('td'), served, el('td'));
        entry = { tr, r };
        rows.set(k, entry);
        // Keep the table sorted by name, then roll.
        const after = [...rows.entries()]
          .filter(([other]) => other > k)
          .sort(([a], [b]) => (a < b ? -1 : 1))[0];
        tbody.insertBefore(tr, after ? after[1].tr : null);
      }
      entry.r = r;
      fill(entry.tr, r);
    };
    const counts = () => {
      let marked = 0;
      let connected = 0;
      for (const { r } of rows.values()) {
        if (r.marked_at) marked += 1;
        if (r.connected) connected += 1;
      }
      document.getElementById('count-joined').textContent = String(rows.size);
      document.getElementById('count-marked').textContent = String(marked);
      document.getElementById('count-connected').textContent = String(connected);
    };
    const say = (c) => {
      const li = el('li');
      li.append(el('time', '', time(c.at)), ` ${c.name}: `, el('span', 'text', c.text));
      chat.append(li);
      while (chat.children.length > 100) chat.firstElementChild.remove();
    };

    stream(body.dataset.events, {
      snapshot(s) {
        stats.snapshots += 1;
        setOffset(s.now);
        rows.clear();
        tbody.replaceChildren();
        chat.replaceChildren();
        s.rows.forEach(row);
        s.chat.forEach(say);
        counts();
      },
      row(r) {
        stats.updates += 1;
        row(r);
        counts();
      },
      chat(c) {
        stats.updates += 1;
        say(c);
      },
    });
    setInterval(() => {
      for (const { tr, r } of rows.values()) paint(tr, r);
    }, 1000);
    projector();
  }

  // The rotating check-in code (digits and QR, for the projector) and the row chain's head,
  // fetched again when the code changes (and at least every 30 s for the head).
  function projector() {
    const section = document.getElementById('projector');
    const left = document.getElementById('code-left');
    let until = 0;
    const tick = () => {
      const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      left.textContent = s ? `changes in ${s} s` : '';
    };
    const load = async () => {
      let p = null;
      try {
        const res = await fetch(body.dataset.code, { credentials: 'same-origin', cache: 'no-store' });
        if (res.ok) p = await res.json();
      } catch { /* offline: try again below */ }
      let wait = 30000;
      if (p) {
        if (p.code) {
          section.hidden = false;
          document.getElementById('code').textContent = p.code;
          document.getElementById('qr').innerHTML = p.qr_svg || '';
          document.getElementById('code-link').textContent = p.link || '';
          until = Date.now() + p.seconds_left * 1000;
          wait = Math.max(500, p.seconds_left * 1000 + 200);
        }
        if (p.chain_head) {
          document.getElementById('chain').textContent =
            `${p.chain_rows} rows on disk; chain head ${p.chain_head} (attendanced verify prints the same).`;
        }
      }
      setTimeout(load, wait);
    };
    setInterval(tick, 1000);
    load();
  }

  if (body.dataset.page === 'list') listPage();
  if (body.dataset.page === 'class') classPage();
})();
