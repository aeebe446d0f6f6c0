// The student page through a network drop and a server shutdown: the drop is shown at once,
// the page reconnects by itself and checks the student in again (the server hears the same
// student, the countdown restarts from the server's new time), and a shutdown is shown as
// such — not as a drop.
//
//     node student_drop.mjs --url http://127.0.0.1:PORT --out DIR [--identity ID]
//
// Progress lines: "joined" (the Rust test cuts the network), "lost" (the page shows the drop:
// the Rust test heals it), "rejoined" (the Rust test stops the daemon).
//
// Result: { states, lost_text, shutdown_text }.

import { open, scenario, waitFor, waitUntil } from './lib.mjs';

await scenario(
  { identity: { type: 'string', default: 'ComputerNetworks_Div1_JayPatel_18BCP043' } },
  async (ctx) => {
    const { page, tolerate } = await ctx.newPage();
    await open(page, `${ctx.url}/`);
    await page.evaluate(() => {
      const st = document.querySelector('#status');
      window.__states = [st.dataset.state];
      new MutationObserver(() => {
        if (window.__states.at(-1) !== st.dataset.state) window.__states.push(st.dataset.state);
      }).observe(st, { attributes: true, attributeFilter: ['data-state'] });
    });
    await waitFor(page, '#status[data-state="connected"]');
    await page.fill('#identity', ctx.args.identity);
    await page.press('#identity', 'Enter');
    await waitFor(page, '#status[data-state="joined"]');
    // The drop and the shutdown make the browser log failed WebSocket connections to /ws.
    tolerate(/WebSocket connection to 'ws:\/\/[^']+\/ws' failed/);
    tolerate(/^Failed to load resource: net::ERR_[A-Z_]+ \(ws:\/\/[^ ]+\/ws\)$/);
    ctx.progress('joined');

    await waitFor(page, '#status[data-state="lost"]');
    const lostText = (await page.textContent('#status')).trim();
    await ctx.screenshot(page, 'lost');
    ctx.progress('lost');

    // Healed: the page reconnects by itself (backoff of a few seconds at most) and checks in.
    await waitFor(page, '#status[data-state="joined"]', { timeout: 40_000 });
    await waitFor(page, '#class-view');
    ctx.progress('rejoined');

    await waitFor(page, '#status[data-state="shutdown"]');
    const shutdownText = (await page.textContent('#status')).trim();
    await ctx.screenshot(page, 'shutdown');
    const states = await waitUntil(page, 'the states so far', () => window.__states);
    return { states, lost_text: lostText, shutdown_text: shutdownText };
  },
);
