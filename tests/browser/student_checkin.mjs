// Student check-in on the student page `/`, as a student at a laptop does it: a mistyped ID is
// refused on the page, the right one joins the class, and once the (short) class is over the
// page shows the mark. The Rust test then finds exactly that mark in the CSV.
//
//     node student_checkin.mjs --url http://127.0.0.1:PORT --out DIR
//          [--identity COURSE_DIV_NAME_ROLL] [--bad-identity TEXT] [--mark-wait MS]
//
// Result: { marked_at, marked_text, refusal, class_name, student_name, states }.

import { check, open, scenario, waitFor, waitForText, waitUntil } from './lib.mjs';

await scenario(
  {
    identity: { type: 'string', default: 'ComputerNetworks_Div1_JayPatel_18BCP043' },
    'bad-identity': { type: 'string', default: 'nounderscores' },
    'mark-wait': { type: 'string', default: '15000' },
  },
  async (ctx) => {
    const [course, , name] = ctx.args.identity.split('_');
    const { page } = await ctx.newPage();
    await open(page, `${ctx.url}/`);
    // The states #status goes through from here on, in order, for the result.
    await page.evaluate(() => {
      const st = document.querySelector('#status');
      window.__states = [st?.dataset.state];
      const seen = () => {
        if (window.__states.at(-1) !== st.dataset.state) window.__states.push(st.dataset.state);
      };
      if (st) new MutationObserver(seen).observe(st, { attributes: true, attributeFilter: ['data-state'] });
    });
    await waitFor(page, '#status[data-state="connected"]');
    check(
      await page.evaluate(() => {
        const v = document.querySelector('#class-view');
        return v && (v.hidden || getComputedStyle(v).display === 'none');
      }),
      '#class-view is not hidden before the student joins',
    );

    // A mistyped ID: refused with a message, and no class view.
    await page.fill('#identity', ctx.args['bad-identity']);
    await page.press('#identity', 'Enter');
    const refusal = await waitUntil(page, `#error explains why ${ctx.args['bad-identity']} is refused`, () =>
      document.querySelector('#error')?.textContent.trim() || false,
    );
    check(
      (await page.getAttribute('#error', 'role')) === 'alert',
      '#error has no role="alert": a screen reader would not announce the refusal',
    );
    check(
      await page.evaluate(() => document.querySelector('#status').dataset.state !== 'joined'),
      `the bad ID ${ctx.args['bad-identity']} joined`,
    );
    await ctx.screenshot(page, 'refused');

    // The right ID: joins, the class view shows who and where.
    await page.fill('#identity', ctx.args.identity);
    await page.press('#identity', 'Enter');
    await waitFor(page, '#class-view');
    const className = await waitForText(page, '#class-name', course);
    const studentName = await waitForText(page, '#student-name', name);
    check(
      await page.evaluate(() => !document.querySelector('#error')?.textContent.trim() || document.querySelector('#error').hidden),
      `#error still shows ${JSON.stringify(await page.textContent('#error'))} after a successful join`,
    );
    ctx.progress('joined');
    await ctx.screenshot(page, 'joined');

    // The class ends; the page asks for the mark and shows it.
    await waitFor(page, '#status[data-state="marked"]', { timeout: Number(ctx.args['mark-wait']) });
    await waitFor(page, '#marked');
    const markedAt = await page.getAttribute('#marked', 'data-marked-at');
    check(markedAt && !Number.isNaN(Date.parse(markedAt)), `#marked has data-marked-at=${JSON.stringify(markedAt)}, not a time`);
    const markedText = (await page.textContent('#marked')).trim();
    check(markedText, '#marked is empty');
    await ctx.screenshot(page, 'marked');
    return {
      marked_at: markedAt,
      marked_text: markedText,
      refusal,
      class_name: className.trim(),
      student_name: studentName.trim(),
      states: await page.evaluate(() => window.__states),
    };
  },
);
