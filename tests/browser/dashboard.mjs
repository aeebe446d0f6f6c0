// The teacher dashboard as a teacher uses it: sign in with a token, open the class page, watch
// students arrive (each row is timed from the moment it appears), see a row turn Present when
// the student's mark is on disk, and stay complete across a network drop: the browser's own
// EventSource reconnects with Last-Event-ID and is sent exactly the rows it missed (no second
// snapshot).
//
//     node dashboard.mjs --url http://127.0.0.1:PORT --out DIR --token TOKEN
//          --course C --division D --rolls R1,R2,R3 --present R1 --late R4,R5
//
// Progress lines: "ready" (class page live: the Rust test has students join), "rows" (the
// three rows are shown, with the time each appeared), "present" (the marked row shows Present:
// the Rust test cuts the network, has the late students join, then heals it).
//
// Result: { appeared: {roll: epoch ms}, states, stream: {snapshots, opened, updates}, rows }.

import { check, open, scenario, waitFor, waitUntil } from './lib.mjs';

await scenario(
  {
    token: { type: 'string' },
    course: { type: 'string' },
    division: { type: 'string' },
    rolls: { type: 'string' },
    present: { type: 'string' },
    late: { type: 'string' },
  },
  async (ctx) => {
    const { token, course, division, present } = ctx.args;
    check(token && course && division && ctx.args.rolls && present && ctx.args.late, 'missing arguments');
    const rolls = ctx.args.rolls.split(',');
    const late = ctx.args.late.split(',');
    const { page, tolerate } = await ctx.newPage();

    // No session: the dashboard sends the teacher to the sign-in page.
    await open(page, `${ctx.url}/teacher`);
    await waitFor(page, '#token');
    check(new URL(page.url()).pathname === '/teacher/login', `not redirected to sign-in: ${page.url()}`);
    await ctx.screenshot(page, 'teacher-sign-in');
    await page.fill('#token', token);
    await page.press('#token', 'Enter');
    await waitFor(page, '#classes');
    await waitFor(page, '#live[data-state="live"]');

    const classUrl = `${ctx.url}/teacher/class/${encodeURIComponent(course)}/${encodeURIComponent(division)}`;
    await open(page, classUrl);
    await waitFor(page, '#live[data-state="live"]');
    // When each row first appears, by this machine's clock (the Rust test compares it with
    // the time of the JOIN), and every state of the live indicator.
    await page.evaluate(() => {
      window.__appeared = {};
      const live = document.querySelector('#live');
      window.__states = [live.dataset.state];
      const seen = () => {
        for (const tr of document.querySelectorAll('#students tbody tr[data-roll]')) {
          if (!(tr.dataset.roll in window.__appeared)) window.__appeared[tr.dataset.roll] = Date.now();
        }
        if (window.__states.at(-1) !== live.dataset.state) window.__states.push(live.dataset.state);
      };
      new MutationObserver(seen).observe(document.body, { subtree: true, childList: true, attributes: true });
    });
    ctx.progress('ready');

    const appeared = await waitUntil(page, `rows for ${rolls.join(', ')}`, (want) => {
      const a = window.__appeared;
      return want.every((r) => r in a) ? a : false;
    }, rolls);
    ctx.progress('rows', { appeared });

    await waitFor(page, `#students tr[data-roll="${present}"][data-status="present"]`);
    await ctx.screenshot(page, 'teacher-class');
    // The drop the Rust test makes next breaks the event stream (and its first retries): the
    // browser logs that as a network error of the stream, and only that is expected.
    tolerate(/^Failed to load resource: net::ERR_[A-Z_]+ \(http:\/\/[^ ]+\/events(\?[^ ]*)?\)$/);
    ctx.progress('present');

    // The Rust test now cuts the network: the indicator must say so, then come back live with
    // the late students' rows, which arrived while the stream was down.
    await waitUntil(page, 'the drop is shown', () => window.__states.includes('reconnecting'));
    await waitFor(page, '#live[data-state="live"]');
    await waitUntil(page, `rows for ${late.join(', ')} after the reconnect`, (want) => {
      const have = [...document.querySelectorAll('#students tbody tr[data-roll]')].map((tr) => tr.dataset.roll);
      return want.every((r) => have.includes(r));
    }, late);
    const stream = await page.evaluate(() => {
      const s = window.attendancedDashboard;
      return { snapshots: s.snapshots, opened: s.opened, updates: s.updates };
    });
    const rows = await page.evaluate(() =>
      [...document.querySelectorAll('#students tbody tr[data-roll]')].map((tr) => ({
        roll: tr.dataset.roll,
        status: tr.dataset.status,
      })),
    );
    const states = await page.evaluate(() => window.__states);
    await ctx.screenshot(page, 'teacher-class-after-drop');

    // The class list, for the README.
    await open(page, `${ctx.url}/teacher`);
    await waitFor(page, '#classes tbody tr');
    await ctx.screenshot(page, 'teacher-list');
    return { appeared, stream, rows, states };
  },
);
