// The student page through a real network drop (a cut proxy) mid-class, with a resume grace:
// the page shows the drop, reconnects by itself, takes its seat back with RESUME (the class
// hears no leave and no arrival), counts down what the server says is left — not its own
// clock, not a fresh class — and is marked present at the end.
//
//     node student_resume.mjs --url http://127.0.0.1:PORT --out DIR [--identity ID]
//
// Progress lines: "joined" (the Rust test waits, then cuts the network), "lost" (the page shows
// the drop: the Rust test waits, then heals it), "back" {back_text, left_secs} (the seat is back).
//
// Result: { states, lost_text, back_text, left_secs, marked_at, sockets, history, history_sum }:
// `history` the kinds of the page's "Your record today" list once it shows the mark.

import { open, scenario, waitFor, waitForText, waitUntil, checkIn, recordStates } from './lib.mjs';

await scenario(
  { identity: { type: 'string', default: 'ComputerNetworks_Div1_JayPatel_18BCP043' } },
  async (ctx) => {
    const { page, tolerate } = await ctx.newPage();
    let sockets = 0;
    page.on('websocket', () => { sockets += 1; });
    await open(page, `${ctx.url}/`);
    await recordStates(page);
    await checkIn(page, ctx.args.identity, tolerate);
    ctx.progress('joined');

    await waitFor(page, '#status[data-state="lost"]');
    const lostText = (await page.textContent('#status')).trim();
    // A few failed attempts while the network is down: the attempt count shows.
    await waitForText(page, '#status', /attempt [2-9]/);
    await ctx.screenshot(page, 'lost');
    ctx.progress('lost');

    const backText = (await waitForText(page, '#status', /^Back — \d+:\d\d left$/, { timeout: 30_000 })).trim();
    const leftText = (await page.textContent('#time-left')).trim();
    const [m, s] = leftText.match(/(\d+):(\d\d) left/).slice(1).map(Number);
    await ctx.screenshot(page, 'back');
    ctx.progress('back', { back_text: backText, left_secs: m * 60 + s });

    await waitFor(page, '#marked', { timeout: 30_000 });
    await waitFor(page, '#status[data-state="marked"]');
    const markedAt = await page.getAttribute('#marked', 'data-marked-at');
    // The list sits in a closed <details> (the student opens it): wait on the DOM, not on sight.
    const history = await waitUntil(page, 'the history list with the mark', () => {
      const kinds = [...document.querySelectorAll('#history li')].map((li) => li.dataset.kind);
      return kinds.includes('mark') ? kinds : null;
    });
    const historySum = (await page.textContent('#history-sum')).trim();
    await ctx.screenshot(page, 'marked');
    const states = await waitUntil(page, 'the states so far', () => window.__states);
    return { states, lost_text: lostText, back_text: backText, left_secs: m * 60 + s, marked_at: markedAt, sockets, history, history_sum: historySum };
  },
);
