// The student page on a phone (375×667 CSS pixels at 2×, touch): laid out for the phone's width
// with no horizontal scrolling, before joining and in the class view once classmates' events
// (a long unbroken chat word among them) are shown, nor any part of it; every input has a
// label.
//
//     node phone_viewport.mjs --url http://127.0.0.1:PORT --out DIR
//          [--identity COURSE_DIV_NAME_ROLL] [--expect-event TEXT]
//
// Prints {"progress":"joined"} once the class view is up: the Rust test then has a classmate
// join and chat, and the scenario waits for `--expect-event` in #events.
//
// Result: { before, joined: { innerWidth, scrollWidth }, labels, events }.

import { PHONE, check, open, scenario, waitFor, waitForText, waitUntil } from './lib.mjs';

// The page's width against the phone's. scrollWidth <= innerWidth alone is not enough: a page
// without a viewport meta is laid out 980 px wide on a phone and would pass while the student
// zooms and pans.
async function widths(page, when) {
  const w = await page.evaluate((phone) => {
    const name = (el) =>
      el.tagName.toLowerCase() +
      (el.id ? `#${el.id}` : '') +
      (typeof el.className === 'string' && el.className.trim() ? `.${el.className.trim().split(/\s+/).join('.')}` : '');
    const all = [...document.querySelectorAll('body *')];
    // The elements that stick out on the right of the phone's screen, for a failure message.
    const wide = all.filter((el) => el.getBoundingClientRect().right > phone + 0.5).slice(0, 5).map(name);
    // A box of the page that scrolls sideways (a long word in an overflow: auto list) is as
    // bad on a phone as the page doing it. Text fields scroll their own text: not counted.
    const sideways = all
      .filter((el) => !['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName))
      .filter((el) => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX) && el.scrollWidth > el.clientWidth + 1)
      .map((el) => `${name(el)} (${el.scrollWidth} > ${el.clientWidth})`);
    return { innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth, wide, sideways };
  }, PHONE.viewport.width);
  const out = `sticking out: ${w.wide.join(', ') || 'none found'}`;
  // A phone widens the layout viewport to fit content wider than the screen, so overflow
  // shows here as often as in scrollWidth.
  check(
    w.innerWidth <= PHONE.viewport.width,
    `${when}: laid out ${w.innerWidth} px wide on a ${PHONE.viewport.width} px phone (no viewport meta, or content wider than the screen; ${out})`,
  );
  check(w.scrollWidth <= w.innerWidth, `${when}: scrolls sideways (scrollWidth ${w.scrollWidth} > innerWidth ${w.innerWidth}; ${out})`);
  check(w.sideways.length === 0, `${when}: parts of the page scroll sideways: ${w.sideways.join(', ')}`);
  return w;
}

// Every form control that a student types into or picks from, and whether a
// <label> (or aria-labelledby) with text names it.
async function labels(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea')]
      .filter((el) => !['hidden', 'submit', 'button', 'reset', 'image'].includes(el.type))
      .map((el) => {
        const byLabel = [...(el.labels ?? [])].some((l) => l.textContent.trim());
        const byIds = (el.getAttribute('aria-labelledby') ?? '')
          .split(/\s+/)
          .some((id) => id && document.getElementById(id)?.textContent.trim());
        return { id: el.id || el.name || el.outerHTML.slice(0, 60), labelled: byLabel || byIds };
      }),
  );
}

await scenario(
  {
    identity: { type: 'string', default: 'ComputerNetworks_Div1_JayPatel_18BCP043' },
    'expect-event': { type: 'string' },
  },
  async (ctx) => {
    const { page } = await ctx.newPage(PHONE);
    await open(page, `${ctx.url}/`);
    await waitFor(page, '#status[data-state="connected"]');
    const before = await widths(page, 'before joining');
    await ctx.screenshot(page, 'phone-start');

    const controls = await labels(page);
    for (const id of ['identity', 'chat-input']) {
      check(controls.some((c) => c.id === id), `no #${id} among the page's inputs`);
    }
    const unlabelled = controls.filter((c) => !c.labelled).map((c) => c.id);
    check(unlabelled.length === 0, `inputs without a label: ${unlabelled.join(', ')}`);

    // Join with the thumb: type, then tap the button.
    await page.fill('#identity', ctx.args.identity);
    await page.tap('#join');
    await waitFor(page, '#class-view');
    await waitFor(page, '#status[data-state="joined"]');
    ctx.progress('joined');

    if (ctx.args['expect-event'] !== undefined) {
      await waitForText(page, '#events', ctx.args['expect-event']);
    }
    const events = await waitUntil(page, '#events lists what happened in the class', () => {
      const items = [...document.querySelectorAll('#events > li')].map((li) => li.textContent.trim());
      return items.length > 0 ? items : false;
    });
    const joined = await widths(page, 'in the class view');
    await ctx.screenshot(page, 'phone-joined');
    return { before, joined, labels: controls, events };
  },
);
