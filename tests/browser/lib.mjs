// Shared helpers of the browser scenarios: Debian's Chromium driven by playwright-core, kept off
// the network, every wait bounded, results as JSON lines on stdout.
//
// A scenario is one script, run by tests/src/browser.rs (or by hand) as
//     node <scenario>.mjs --url http://127.0.0.1:PORT --out DIR [its own options]
// It calls `scenario(options, async (ctx) => { ... return result })`; lib prints
//     {"progress":"<name>", ...}   whenever the scenario calls ctx.progress(name, data)
//     {"ok":true, ...result}       as its last line on success (exit 0)
//     {"ok":false,"error":"..."}   as its last line on failure (exit 1)
// Everything else it prints (console errors of the page, notes) is free text, one line each.
//
// Nothing leaves the machine: Chromium runs with its background services off and with a proxy
// that is a recorder on loopback (Chromium still goes direct to loopback, its implicit bypass
// rule), so any request to another host — from a page or from Chromium itself — reaches the
// recorder, is refused, and fails the scenario. Page requests are also watched per context.
//
// Pages that hold a connection open (WebSocket, Server-Sent Events) never reach "network
// idle": `open` waits for the DOM only, and scenarios wait for DOM states (`waitFor`,
// `waitForText`, `waitUntil`), never for the network or for time.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

// Debian's chromium; no browser is ever downloaded.
export const CHROMIUM = '/usr/bin/chromium';

// Longest single wait (selector, text, navigation), in milliseconds.
export const WAIT_MS = 15_000;

// Chromium's own network traffic off: background networking, component updates, QUIC, sync,
// DNS prefetch, and the features that phone home. `--no-sandbox`: the tests may run as root.
//
// One `--disable-features` only: Chromium keeps the last one given, and ours comes after
// playwright-core's own, so it repeats playwright's list (as of 1.65: its network-time,
// optimization-hint and search-preconnect entries among them) and adds ours.
export const CHROMIUM_ARGS = [
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-quic',
  '--no-first-run',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-domain-reliability',
  '--disable-breakpad',
  '--disable-client-side-phishing-detection',
  '--dns-prefetch-disable',
  '--metrics-recording-only',
  '--disable-features=' +
    [
      // playwright-core's
      'AvoidUnnecessaryBeforeUnloadCheckSync',
      'DestroyProfileOnBrowserClose',
      'HttpsUpgrades',
      'HttpsFirstBalancedModeAutoEnable',
      'LensOverlay',
      'MediaRouter',
      'PaintHolding',
      'ThirdPartyStoragePartitioning',
      'AvoidCorsURLLoaderRestartOnRedirect',
      'OptimizationHints',
      'NetworkTimeServiceQuerying',
      'AimEnabled',
      'PreconnectToSearch',
      // ours
      'Translate',
      'AutofillServerCommunication',
      'InterestFeedContentSuggestions',
      'CertificateTransparencyComponentUpdater',
    ].join(','),
  '--no-sandbox',
];

// A phone: 375×667 CSS pixels at 2× with touch (an iPhone SE-sized screen).
export const PHONE = { viewport: { width: 375, height: 667 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

// A laptop screen.
export const DESKTOP = { viewport: { width: 1280, height: 800 } };

// Whether `url` stays on this machine (loopback, or a URL with no host: data:, about:, blob:).
export function isLocal(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (['data:', 'about:', 'blob:', 'chrome:', 'chrome-error:'].includes(u.protocol)) return true;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

// Prints one JSON line on stdout.
export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Fails the scenario with `message` (thrown; `scenario` reports it).
export function fail(message) {
  throw new Error(message);
}

// Asserts `cond`, failing with `message` otherwise.
export function check(cond, message) {
  if (!cond) fail(message);
}

// A proxy on 127.0.0.1 that records what was asked and refuses it. A request for an absolute
// URL (or a CONNECT) came through it as a proxy: it was on its way off the machine. A request
// for a path came to it directly: one of Chromium's services pointed at it (see `launch`),
// kept as `local`.
async function startRecorder() {
  const asked = [];
  const local = [];
  const server = http.createServer((req, res) => {
    (req.url.startsWith('/') ? local : asked).push(req.url);
    res.writeHead(403, { connection: 'close' }).end('attendanced browser tests: no request leaves the machine\n');
  });
  server.on('connect', (req, socket) => {
    asked.push(`CONNECT ${req.url}`);
    socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return { asked, local, port: server.address().port, close: () => new Promise((r) => server.close(r)) };
}

// Launches headless Chromium with `CHROMIUM_ARGS` behind the recording proxy. Returns
// `{ browser, recorder, watched, offMachine, close }`: `offMachine()` lists every request that
// tried to leave the machine so far (`recorder.asked` and the pages' `watched` together).
export async function launch() {
  check(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (cargo xtask test does)`);
  const recorder = await startRecorder();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      ...CHROMIUM_ARGS,
      // Raw flags, not playwright's `proxy` option: that one adds `<-loopback>`, which would
      // send the daemon's own loopback traffic to the recorder too.
      `--proxy-server=http://127.0.0.1:${recorder.port}`,
      // Chromium 156 still asks update.googleapis.com (component updater, despite
      // --disable-component-update) and accounts.google.com (sign-in) at start: their
      // servers are the recorder, on loopback.
      `--component-updater=url-source=http://127.0.0.1:${recorder.port}/component-updater`,
      `--gaia-url=http://127.0.0.1:${recorder.port}/`,
    ],
    timeout: WAIT_MS * 2,
  });
  const watched = [];
  return {
    browser,
    recorder,
    watched,
    offMachine: () => [...recorder.asked.map((u) => `proxy: ${u}`), ...watched.map((u) => `page: ${u}`)],
    close: async () => {
      await browser.close().catch(() => {});
      await recorder.close();
    },
  };
}

// A new context and page with `device` (e.g. `PHONE`, `DESKTOP`), its default timeouts
// set to `WAIT_MS`, and its requests and page errors watched.
export async function newPage(b, device = DESKTOP) {
  const context = await b.browser.newContext({ ...device, serviceWorkers: 'block' });
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  context.on('request', (req) => {
    if (!isLocal(req.url())) b.watched.push(req.url());
  });
  const page = await context.newPage();
  const errors = [];
  // Console errors a scenario causes on purpose (a network drop it makes), matched on the
  // message and its URL together; added by `tolerate`.
  const tolerated = [];
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    const url = m.location()?.url ?? '';
    // Chromium asks every origin for /favicon.ico on its own; a page that has none is fine.
    if (m.type() !== 'error' || /\/favicon\.ico$/.test(url)) return;
    const line = `${m.text()} (${url || 'no url'})`;
    if (!tolerated.some((re) => re.test(line))) errors.push(`console.error: ${line}`);
  });
  return { context, page, errors, tolerate: (re) => tolerated.push(re) };
}

// Navigates to `url` and waits for the DOM (not the network: see the top of this file).
export async function open(page, url) {
  const res = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: WAIT_MS });
  check(res, `no response for ${url}`);
  check(res.ok(), `${url} answered ${res.status()}`);
  return res;
}

// Waits for `selector` to be in `state` (visible, attached, hidden, detached), bounded.
export async function waitFor(page, selector, { state = 'visible', timeout = WAIT_MS } = {}) {
  try {
    return await page.waitForSelector(selector, { state, timeout });
  } catch (e) {
    fail(`${selector} not ${state} within ${timeout} ms${cause(e)}${await describe(page)}`);
  }
}

// Waits until `selector`'s text contains `text` (a string) or matches it (a RegExp); returns
// the text.
export async function waitForText(page, selector, text, { timeout = WAIT_MS } = {}) {
  const pattern = text instanceof RegExp ? { source: text.source, flags: text.flags } : null;
  try {
    const handle = await page.waitForFunction(
      ({ selector, text, pattern }) => {
        const el = document.querySelector(selector);
        if (!el) return false;
        const t = el.textContent ?? '';
        const hit = pattern ? new RegExp(pattern.source, pattern.flags).test(t) : t.includes(text);
        return hit ? t : false;
      },
      { selector, text: pattern ? null : text, pattern },
      { timeout },
    );
    return await handle.jsonValue();
  } catch (e) {
    const now = await page.textContent(selector).catch(() => null);
    fail(`${selector} did not show ${text} within ${timeout} ms (it shows ${JSON.stringify(now)})${cause(e)}${await describe(page)}`);
  }
}

// Waits until `fn(arg)`, run in the page, returns something truthy; returns it.
// `what` names the condition in the failure message.
export async function waitUntil(page, what, fn, arg, { timeout = WAIT_MS } = {}) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout });
    return await handle.jsonValue();
  } catch (e) {
    fail(`${what}: not within ${timeout} ms${cause(e)}${await describe(page)}`);
  }
}

// What went wrong in a wait, unless it is the timeout the message already says.
function cause(e) {
  return e?.name === 'TimeoutError' ? '' : ` (${e?.message?.split('\n')[0]})`;
}

// A short description of the page for failure messages: `#status`'s state and `#error`.
async function describe(page) {
  const s = await page
    .evaluate(() => {
      const st = document.querySelector('#status');
      const er = document.querySelector('#error');
      return `; #status data-state=${st?.dataset.state ?? '(none)'} text=${JSON.stringify(st?.textContent?.trim() ?? null)}, #error=${JSON.stringify(er?.textContent?.trim() ?? null)}`;
    })
    .catch(() => '');
  return s;
}

// Saves a full-page PNG `<out>/<name>.png` and returns its path.
export async function screenshot(page, out, name) {
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: WAIT_MS });
  return file;
}

// Runs a scenario: parses `--url`, `--out`, `--timeout` (ms, whole scenario) and `options`
// (node:util parseArgs options, all strings), launches Chromium, calls `body(ctx)` with
// `ctx = { args, url, out, b, newPage, progress, screenshot }`, checks that nothing left the
// machine and that no page threw, prints the result line and exits.
export async function scenario(options, body) {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        url: { type: 'string' },
        out: { type: 'string' },
        timeout: { type: 'string', default: '60000' },
        ...options,
      },
      strict: true,
    }));
    check(args.url, '--url <base> is required');
    check(args.out, '--out <dir> is required');
  } catch (e) {
    emit({ ok: false, error: e.message });
    process.exit(2);
  }
  const url = args.url.replace(/\/$/, '');
  const out = args.out;
  const started = Date.now();
  const budget = Number(args.timeout);
  // The last resort: whatever hangs, the scenario ends within its budget.
  const guard = setTimeout(() => {
    emit({ ok: false, error: `scenario did not finish within ${budget} ms` });
    process.exit(1);
  }, budget);
  let b;
  const pages = [];
  try {
    b = await launch();
    const ctx = {
      args,
      url,
      out,
      b,
      screenshots: [],
      newPage: async (device) => {
        const p = await newPage(b, device);
        pages.push(p);
        return p;
      },
      progress: (name, data = {}) => emit({ progress: name, ...data }),
      screenshot: async (page, name) => {
        const file = await screenshot(page, out, name);
        ctx.screenshots.push(file);
        return file;
      },
    };
    const result = (await body(ctx)) ?? {};
    const off = b.offMachine();
    check(off.length === 0, `requests tried to leave the machine: ${off.join(', ')}`);
    const errors = pages.flatMap((p) => p.errors);
    check(errors.length === 0, `the page reported errors: ${errors.join(' | ')}`);
    // Requests of Chromium's own services, sent to the recorder on loopback: reported, not failures.
    emit({ ok: true, ms: Date.now() - started, screenshots: ctx.screenshots, chromium_internal: b.recorder.local, ...result });
    await b.close();
    clearTimeout(guard);
    process.exit(0);
  } catch (e) {
    const errors = pages.flatMap((p) => p.errors);
    // What each page looked like when it failed, for the artefacts.
    const shots = [];
    for (const [i, p] of pages.entries()) {
      shots.push(await screenshot(p.page, out, `failure-${i}`).catch(() => null));
    }
    emit({ ok: false, ms: Date.now() - started, error: e.message, page_errors: errors, screenshots: shots.filter(Boolean) });
    if (b) await b.close();
    clearTimeout(guard);
    process.exit(1);
  }
}

// Records every `data-state` the student page's #status goes through, in window.__states.
export async function recordStates(page) {
  await page.evaluate(() => {
    const st = document.querySelector('#status');
    window.__states = [st.dataset.state];
    new MutationObserver(() => {
      if (window.__states.at(-1) !== st.dataset.state) window.__states.push(st.dataset.state);
    }).observe(st, { attributes: true, attributeFilter: ['data-state'] });
  });
}

// Checks in as `identity` on the student page and waits for the seat; from then on the
// browser's log of failed WebSocket connections to /ws (a drop, a shutdown) is expected.
export async function checkIn(page, identity, tolerate) {
  await waitFor(page, '#status[data-state="connected"]');
  await page.fill('#identity', identity);
  await page.press('#identity', 'Enter');
  await waitFor(page, '#status[data-state="joined"]');
  tolerate(/WebSocket connection to 'ws:\/\/[^']+\/ws' failed/);
  tolerate(/^Failed to load resource: net::ERR_[A-Z_]+ \(ws:\/\/[^ ]+\/ws\)$/);
}
