// A class with a rotating code, from the student page: the link of the teacher's QR code
// (?class=…&code=…) fills in the class and the code, and the student checks in with them; a
// student who opened the page without the code is asked for it after ERR BADCODE.
//
//     node student_code.mjs --url http://127.0.0.1:PORT --out DIR --code 123456
//          [--class CN_D1] [--name Ann --roll 1] [--other-name Bob --other-roll 2]
//
// Result: { prefilled, asked, joined_by_link, joined_after_asking }.

import { check, open, scenario, waitFor, waitForText } from './lib.mjs';

await scenario(
  {
    code: { type: 'string' },
    class: { type: 'string', default: 'CN_D1' },
    name: { type: 'string', default: 'Ann' },
    roll: { type: 'string', default: '1' },
    'other-name': { type: 'string', default: 'Bob' },
    'other-roll': { type: 'string', default: '2' },
  },
  async (ctx) => {
    const { code, class: cls } = ctx.args;
    check(/^[0-9]{6}$/.test(code || ''), `--code ${code} is not 6 digits`);

    // The QR code's link: class and code filled in.
    const { page } = await ctx.newPage();
    await open(page, `${ctx.url}/?class=${cls}&code=${code}`);
    await waitFor(page, '#status[data-state="connected"]');
    const prefilled = await page.inputValue('#identity');
    check(prefilled === `${cls}_`, `#identity is ${JSON.stringify(prefilled)}, not the class from the link`);
    check((await page.inputValue('#code')) === code, '#code is not the code from the link');
    await page.fill('#identity', `${cls}_${ctx.args.name}_${ctx.args.roll}`);
    await page.press('#identity', 'Enter');
    await waitForText(page, '#student-name', ctx.args.name);
    ctx.progress('joined by link');

    // The page without the link: BADCODE asks for the code, then the check-in goes through.
    const other = (await ctx.newPage()).page;
    await open(other, `${ctx.url}/`);
    await waitFor(other, '#status[data-state="connected"]');
    check(await other.evaluate(() => document.querySelector('#code').hidden), '#code shows before it is needed');
    await other.fill('#identity', `${cls}_${ctx.args['other-name']}_${ctx.args['other-roll']}`);
    await other.press('#identity', 'Enter');
    await waitFor(other, '#code');
    const asked = (await other.textContent('#error')).trim();
    await other.fill('#code', code);
    await other.press('#code', 'Enter');
    await waitForText(other, '#student-name', ctx.args['other-name']);
    await ctx.screenshot(other, 'joined after asking');
    return { prefilled, asked, joined_by_link: true, joined_after_asking: true };
  },
);
