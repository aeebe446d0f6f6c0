// Smoke: the infrastructure itself. Chromium starts, loads the daemon's /healthz over real HTTP
// and reads its JSON; and nothing leaves the machine — checked, then proved catchable by a
// page that asks for a host on TEST-NET-1 (192.0.2.0/24, never routed), which the recorder
// must see and refuse.
//
//     node smoke.mjs --url http://127.0.0.1:PORT --out DIR [--expect-joined N]

import { check, open, scenario, waitUntil } from './lib.mjs';

const PROBE = 'http://192.0.2.1/attendanced-probe.png';

await scenario({ 'expect-joined': { type: 'string' } }, async (ctx) => {
  const { page } = await ctx.newPage();
  const res = await open(page, `${ctx.url}/healthz`);
  check(/json/.test(res.headers()['content-type'] ?? ''), `/healthz is ${res.headers()['content-type']}, not JSON`);
  const health = JSON.parse(await res.text());
  check(health.status === 'ok', `/healthz says ${JSON.stringify(health)}`);
  if (ctx.args['expect-joined'] !== undefined) {
    const want = Number(ctx.args['expect-joined']);
    check(health.joined === want, `/healthz joined=${health.joined}, expected ${want}`);
  }
  // The page shows the JSON too (what a person opening it sees).
  await waitUntil(page, 'the body shows the status', () => document.body.textContent.includes('"status"'));
  await ctx.screenshot(page, 'healthz');

  const before = ctx.b.offMachine();
  check(before.length === 0, `requests tried to leave the machine: ${before.join(', ')}`);

  // The guard catches what it must: without it, this check could not fail.
  const probe = await ctx.newPage();
  await probe.page.setContent(`<img src="${PROBE}" alt="probe">`, { waitUntil: 'domcontentloaded' });
  const deadline = Date.now() + 10_000;
  const seen = (by) => ctx.b.offMachine().some((u) => u.startsWith(by) && u.includes('192.0.2.1'));
  while (!(seen('proxy: ') && seen('page: ')) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const caught = ctx.b.offMachine();
  check(
    caught.some((u) => u.startsWith('proxy: ') && u.includes('192.0.2.1')),
    `the recorder did not see the probe request (saw ${JSON.stringify(caught)})`,
  );
  check(
    caught.some((u) => u.startsWith('page: ') && u.includes('192.0.2.1')),
    `the page watcher did not see the probe request (saw ${JSON.stringify(caught)})`,
  );
  const other = caught.filter((u) => !u.includes('192.0.2.1'));
  check(other.length === 0, `requests tried to leave the machine: ${other.join(', ')}`);
  // The probe was expected: clear it so the final check sees only the unexpected.
  ctx.b.recorder.asked.length = 0;
  ctx.b.watched.length = 0;
  // The refused image is a console error of the probe page, expected too.
  probe.errors.length = 0;
  return { health, probe_caught: caught };
});
