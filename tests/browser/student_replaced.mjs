// The student page whose seat is taken over: a reload of the tab first takes the seat back
// (RESUME with the token kept in sessionStorage), then the Rust test sends RESUME with that
// token from another client. The page says the student is checked in on another device and
// does not reconnect.
//
//     node student_replaced.mjs --url http://127.0.0.1:PORT --out DIR [--identity ID]
//
// Progress lines: "joined" {token} (reloaded and back: the Rust test resumes elsewhere).
//
// Result: { replaced_text, after_reload, sockets_before, sockets_after, token_after }.

import { open, scenario, waitFor, waitForText } from './lib.mjs';

const KEY = 'attendanced.seat';

await scenario(
  { identity: { type: 'string', default: 'ComputerNetworks_Div1_JayPatel_18BCP043' } },
  async (ctx) => {
    const { page, tolerate } = await ctx.newPage();
    let sockets = 0;
    page.on('websocket', () => { sockets += 1; });
    await open(page, `${ctx.url}/`);
    await waitFor(page, '#status[data-state="connected"]');
    await page.fill('#identity', ctx.args.identity);
    await page.press('#identity', 'Enter');
    await waitFor(page, '#status[data-state="joined"]');
    const seat = async () => page.evaluate((k) => JSON.parse(sessionStorage.getItem(k) || '{}'), KEY);
    const before = await seat();
    // A reload of the tab closes its WebSocket (a drop to the server) and resumes.
    tolerate(/WebSocket connection to 'ws:\/\/[^']+\/ws' failed/);
    await page.reload({ waitUntil: 'domcontentloaded' });
    const afterReload = (await waitForText(page, '#status', /^Back — \d+:\d\d left$/)).trim();
    const { token } = await seat();
    if (!/^[0-9a-f]{32}$/i.test(token ?? '') || token !== before.token) {
      throw new Error(`the token kept over a reload: ${JSON.stringify({ before, token })}`);
    }
    ctx.progress('joined', { token });

    await waitFor(page, '#status[data-state="replaced"]');
    const replacedText = (await waitForText(page, '#status', 'another device')).trim();
    const socketsBefore = sockets;
    await ctx.screenshot(page, 'replaced');
    // Longer than the first backoff steps (0.5 s, 1 s, 2 s): a page that reconnects would have.
    await page.waitForTimeout(4000);
    await waitFor(page, '#status[data-state="replaced"]');
    return {
      replaced_text: replacedText,
      after_reload: afterReload,
      sockets_before: socketsBefore,
      sockets_after: sockets,
      token_after: (await seat()).token ?? null,
    };
  },
);
