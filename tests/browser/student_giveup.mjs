// The student page that cannot reconnect for the whole grace gives up, says so, and offers
// "Try again", which takes the seat back. The page's clock is Playwright's fake clock, run five
// and a half minutes ahead while the network is cut; the daemon's grace runs in real time, so
// the seat still waits when the student tries again.
//
//     node student_giveup.mjs --url http://127.0.0.1:PORT --out DIR [--identity ID]
//
// Progress lines: "joined" (the Rust test cuts the network), "gaveup" (the Rust test heals it).
//
// Result: { gaveup_text, back_text }.

import { open, scenario, waitFor, waitForText, checkIn } from './lib.mjs';

await scenario(
  { identity: { type: 'string', default: 'ComputerNetworks_Div1_JayPatel_18BCP043' } },
  async (ctx) => {
    const { context, page, tolerate } = await ctx.newPage();
    // Time flows as usual until the scenario runs it ahead.
    await context.clock.install();
    await open(page, `${ctx.url}/`);
    await checkIn(page, ctx.args.identity, tolerate);
    ctx.progress('joined');

    await waitFor(page, '#status[data-state="lost"]');
    const hidden = await page.isHidden('#retry');
    if (!hidden) throw new Error('"Try again" shows before the page gave up');
    // Each step fires the attempt due; its (real) failure schedules the next one.
    for (let i = 0; i < 60; i += 1) {
      if (await page.isVisible('#status[data-state="gaveup"]')) break;
      await page.clock.runFor(10_000);
      await page.waitForTimeout(50);
    }
    await waitFor(page, '#status[data-state="gaveup"]');
    await waitFor(page, '#retry');
    const gaveupText = (await page.textContent('#status')).trim();
    await ctx.screenshot(page, 'gaveup');
    ctx.progress('gaveup');

    // Healed by the Rust test: the page does nothing by itself any more.
    await page.waitForTimeout(1000);
    await waitFor(page, '#status[data-state="gaveup"]');
    await page.click('#retry');
    const backText = (await waitForText(page, '#status', /^Back — \d+:\d\d left$/)).trim();
    await waitFor(page, '#retry', { state: 'hidden' });
    return { gaveup_text: gaveupText, back_text: backText };
  },
);
