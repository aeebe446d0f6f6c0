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

import { open, scenario, waitFor, waitUntil, checkIn, recordStates } from './lib.mjs';

await scenario(
  { identity: { type: 'string', default: 'ComputerNetworks_Div1_JayPatel_18BCP043' } },
  async (ctx) => {
    const { page, tolerate } = await ctx.newPage();
    await open(page, `${ctx.url}/`);
    await recordStates(page);
    await checkIn(page, ctx.args.identity, tolerate);
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
