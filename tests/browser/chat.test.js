'use strict';
// End-to-end test of the wsrelay chat page in Debian's headless Chromium.
//
//   WSRELAY_BIN  server binary (default ../../target/release/wsrelay, relative to this dir)
//   CHROMIUM     browser binary (default /usr/bin/chromium)
//   SCREENSHOT_DIR  where screenshots go (default: the OS temp dir); never committed
//
// The server is started as `$WSRELAY_BIN --listen 127.0.0.1:0 --mode chat` and the
// address is read from the `listening on ws://HOST:PORT/` line on its stderr.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const SERVER_BIN = path.resolve(
  process.env.WSRELAY_BIN || path.join(__dirname, '..', '..', 'target', 'release', 'wsrelay'),
);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOT_DIR = process.env.SCREENSHOT_DIR || os.tmpdir();
const STARTUP_MS = 10_000;
const WAIT_MS = 5_000; // default for every Playwright wait / action
const TEST_MS = 30_000;

const XSS_NAME = '<img src=x onerror=alert(1)>';
const XSS_MSG = '<b>hi</b>';

/** Start the server; resolve with { proc, host } once it prints its address. */
function startServer(listen) {
  return new Promise((resolve, reject) => {
    const proc = spawn(SERVER_BIN, ['--listen', listen, '--mode', 'chat'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let done = false;
    const finish = (err, val) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        proc.kill('SIGKILL');
        err.message += `\n--- server stderr ---\n${stderr}`;
        reject(err);
      } else resolve(val);
    };
    const timer = setTimeout(
      () => finish(new Error(`server did not print "listening on ws://…/" within ${STARTUP_MS} ms`)),
      STARTUP_MS,
    );
    proc.stdout.resume(); // drain, never block the child on a full pipe
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      stderr += chunk;
      if (process.env.WSRELAY_TEST_VERBOSE) process.stderr.write(chunk);
      const m = /listening on ws:\/\/([^\s/]+)\//.exec(stderr);
      if (m) finish(null, { proc, host: m[1] });
    });
    proc.on('error', (e) => finish(new Error(`cannot start ${SERVER_BIN}: ${e.message}`)));
    proc.on('exit', (code, sig) => finish(new Error(`server exited early (code ${code}, signal ${sig})`)));
  });
}

/** SIGTERM, then SIGKILL if the server has not exited within `ms`. */
function stopServer(proc, ms = 3_000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), ms);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

let server;
let baseURL;
let browser;
let ctxA;
let ctxB;
let pageA;
let pageB;
const dialogs = [];
const pageErrors = [];

/** A new page whose dialogs and errors are recorded (tests assert there are none). */
async function newPage(ctx, label) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.setDefaultNavigationTimeout(WAIT_MS);
  page.on('dialog', (d) => {
    dialogs.push(`${label}: ${d.type()} ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  return page;
}

/** A new page at `baseURL + query`, served 200 with the strict CSP, with CSP violations recorded. */
async function openPage(ctx, label, query = '') {
  const page = await newPage(ctx, label);
  // Record CSP violations (an inline script/style would show up here).
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`),
    );
  });
  const res = await page.goto(baseURL + query);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-security-policy'] || '', /default-src 'none'/);
  return page;
}

const log = (page) => page.getByRole('log');
const status = (page) => page.locator('#status');
const messages = (page) => log(page).locator('.message');
const notices = (page) => log(page).locator('.notice');

async function send(page, name, msg) {
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Message', { exact: true }).fill(msg);
  await page.getByLabel('Message', { exact: true }).press('Enter');
}

async function assertNoMarkup(page) {
  const bad = await log(page).evaluate((el) =>
    Array.from(el.querySelectorAll('img, b, script, iframe, svg')).map((n) => n.outerHTML),
  );
  assert.deepEqual(bad, [], 'user text must not become elements');
  assert.equal(await page.locator('img').count(), 0);
}

before(async () => {
  assert.ok(fs.existsSync(SERVER_BIN), `server binary not found: ${SERVER_BIN} (build it or set WSRELAY_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `chromium not found: ${CHROMIUM} (apt-get install chromium)`);
  server = await startServer('127.0.0.1:0');
  baseURL = `http://${server.host}/`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  // Separate contexts = separate users. B is phone-sized.
  ctxA = await browser.newContext({ viewport: { width: 900, height: 640 } });
  ctxB = await browser.newContext({ viewport: { width: 390, height: 700 }, isMobile: true, hasTouch: true });
}, { timeout: 45_000 });

after(async () => {
  // Each step bounded; failures here must not mask the test result.
  const bounded = (p, ms) => {
    let timer;
    const limit = new Promise((r) => { timer = setTimeout(r, ms); });
    return Promise.race([p, limit]).catch(() => {}).finally(() => clearTimeout(timer));
  };
  if (browser) await bounded(browser.close(), 10_000);
  if (server) await stopServer(server.proc);
}, { timeout: 20_000 });

// Last resort if the runner is torn down without after().
process.on('exit', () => {
  if (server && server.proc.exitCode === null) server.proc.kill('SIGKILL');
});

test('page A connects and sees its own join with count 1', { timeout: TEST_MS }, async () => {
  pageA = await openPage(ctxA, 'A');
  await assertEventually(() => status(pageA).getAttribute('data-state'), 'connected');
  await notices(pageA).filter({ hasText: '1 online' }).first().waitFor();
  await assertEventually(() => pageA.locator('#count').textContent(), /\b1 online/);
});

test('page B joins; A sees count 2', { timeout: TEST_MS }, async () => {
  pageB = await openPage(ctxB, 'B');
  await assertEventually(() => status(pageB).getAttribute('data-state'), 'connected');
  await notices(pageA).filter({ hasText: '2 online' }).first().waitFor();
  await assertEventually(() => pageA.locator('#count').textContent(), /\b2 online/);
  await assertEventually(() => pageB.locator('#count').textContent(), /\b2 online/);
  const joinsA = await log(pageA).locator('.notice.join').allTextContents();
  assert.equal(joinsA.length, 2, `A join notices: ${JSON.stringify(joinsA)}`);
  assert.match(joinsA[0], /\b1\b/);
  assert.match(joinsA[1], /\b2\b/);
});

test('markup in name and message is rendered as literal text on both pages', { timeout: TEST_MS }, async () => {
  await send(pageA, XSS_NAME, XSS_MSG);
  for (const page of [pageA, pageB]) {
    const line = messages(page).first();
    await line.waitFor();
    const text = await line.textContent();
    assert.ok(text.includes(XSS_NAME), `literal name missing in ${JSON.stringify(text)}`);
    assert.ok(text.includes(XSS_MSG), `literal msg missing in ${JSON.stringify(text)}`);
    assert.equal(await line.locator('.name').textContent(), XSS_NAME);
    assert.equal(await line.locator('.text').textContent(), XSS_MSG);
    await assertNoMarkup(page);
  }
  assert.equal(await pageA.getByLabel('Message', { exact: true }).inputValue(), '', 'message box cleared after send');
  // Give a would-be onerror handler a moment to fire before checking.
  await pageA.waitForTimeout(300);
  assert.deepEqual(dialogs, [], 'no dialog may open');
});

test('B replies (empty name -> Anonymous, empty message not sent); A sees it', { timeout: TEST_MS }, async () => {
  // An empty submit must send nothing; if it did, the server's error reply
  // would reach B before the echo of the reply below (same connection).
  await send(pageB, '', '');
  await send(pageB, '', 'hello back & <i>welcome</i>');
  const lineA = messages(pageA).nth(1);
  await lineA.waitFor();
  assert.equal(await lineA.textContent(), 'Anonymous: hello back & <i>welcome</i>');
  await messages(pageB).nth(1).waitFor();
  assert.equal(await messages(pageA).count(), 2);
  assert.equal(await messages(pageB).count(), 2);
  assert.equal(await log(pageB).locator('.error').count(), 0, 'empty message must not be sent');
  await assertNoMarkup(pageA);
});

test('phone layout has no horizontal overflow; screenshots for manual review', { timeout: TEST_MS }, async () => {
  const overflow = await pageB.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  assert.ok(overflow <= 0, `phone page overflows horizontally by ${overflow}px`);
  const box = await pageB.getByRole('button', { name: 'Send' }).boundingBox();
  assert.ok(box && box.x + box.width <= 390, 'Send button visible on a phone');
  fs.mkdirSync(SHOT_DIR, { recursive: true });
  await pageA.screenshot({ path: path.join(SHOT_DIR, 'wsrelay-chat-A.png') });
  await pageB.screenshot({ path: path.join(SHOT_DIR, 'wsrelay-chat-B-phone.png') });
});

test('B leaves; A sees a leave notice with count 1', { timeout: TEST_MS }, async () => {
  await ctxB.close();
  ctxB = null;
  await log(pageA).locator('.notice.leave').filter({ hasText: '1 online' }).first().waitFor();
  await assertEventually(() => pageA.locator('#count').textContent(), /\b1 online/);
});

test('log auto-scrolls to the newest line', { timeout: TEST_MS }, async () => {
  const before = await messages(pageA).count();
  const n = 30;
  for (let i = 0; i < n; i++) {
    await send(pageA, 'scroller', `line ${i}`);
    // Paced under --max-message-rate (10 a second, 20 in a row), as a person would be.
    if (i % 10 === 9) await pageA.waitForTimeout(1000);
  }
  await messages(pageA).nth(before + n - 1).waitFor();
  await assertEventually(
    () => log(pageA).evaluate((el) => el.scrollHeight > el.clientHeight && el.scrollHeight - el.scrollTop - el.clientHeight <= 2),
    true,
  );
  await assertEventually(() => messages(pageA).last().isVisible(), true);
});

test('no CSP violations or page errors', { timeout: TEST_MS }, async () => {
  assert.deepEqual(await pageA.evaluate(() => window.__csp), []);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(dialogs, []);
});

test('client frame shape and error rendering (socket mocked by Playwright)', { timeout: TEST_MS }, async () => {
  const ctx = await browser.newContext();
  try {
    const page = await newPage(ctx, 'M');
    const sent = [];
    // Page-side socket only; never reaches the real server.
    await page.routeWebSocket(/.*/, (ws) => {
      ws.onMessage((data) => {
        sent.push(JSON.parse(String(data)));
        ws.send('not json'); // must be ignored without a page error
        ws.send(JSON.stringify({ type: 'bogus' }));
        ws.send(JSON.stringify({ type: 'error', msg: '<img src=x onerror=alert(2)> too long' }));
      });
    });
    await page.goto(baseURL);
    await assertEventually(() => status(page).getAttribute('data-state'), 'connected');
    await send(page, '  Zoë  ', 'one\u{1F600}');
    await send(page, 'Zoë', '   '); // whitespace only: not sent
    const err = log(page).locator('.error').first();
    await err.waitFor();
    assert.equal(await err.textContent(), 'Error: <img src=x onerror=alert(2)> too long');
    await send(page, 'Zoë', 'sentinel'); // frames are ordered: a whitespace frame would precede this
    await assertEventually(() => sent.length, 2);
    assert.deepEqual(sent, [{ name: 'Zoë', msg: 'one\u{1F600}' }, { name: 'Zoë', msg: 'sentinel' }]);
    await assertNoMarkup(page);
    await assertEventually(() => log(page).locator('.error').count(), 2);
    assert.equal(await log(page).locator('.line').count(), 2);
    // The name is remembered across a reload.
    await page.reload();
    assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'Zoë');
  } finally {
    await ctx.close();
  }
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(dialogs, []);
});

test('A shows disconnected when the server stops, then reconnects with no duplicate and no gap', { timeout: TEST_MS }, async () => {
  const host = server.host;
  const before = await messages(pageA).allTextContents();
  await stopServer(server.proc);
  await assertEventually(() => status(pageA).getAttribute('data-state'), 'disconnected');
  assert.match(await status(pageA).textContent(), /reconnecting in \d+ s/);
  server = await startServer(host); // same port: the page reconnects to location.host
  await assertEventually(() => status(pageA).getAttribute('data-state'), 'connected', 15_000);
  await assertEventually(() => pageA.locator('#count').textContent(), /\b1 online/);
  // The new server's room starts over: said once, nothing shown twice, nothing claimed lost.
  await log(pageA).locator('.notice.restart').first().waitFor();
  assert.equal(await log(pageA).locator('.notice.gap').count(), 0);
  await send(pageA, 'A', 'after the restart');
  await messages(pageA).filter({ hasText: 'after the restart' }).first().waitFor();
  await pageA.waitForTimeout(200);
  assert.deepEqual(await messages(pageA).allTextContents(), [...before, 'A: after the restart']);
});

test('rooms: ?room= keeps traffic apart, late joiners get history, the form switches rooms', { timeout: TEST_MS }, async () => {
  const ctx = await browser.newContext();
  try {
    const side = await openPage(ctx, 'S', '?room=side');
    await assertEventually(() => status(side).getAttribute('data-state'), 'connected');
    assert.equal(await side.locator('#room').inputValue(), 'side');
    await send(side, 'S', 'only in side');
    await messages(side).filter({ hasText: 'only in side' }).first().waitFor();
    await send(pageA, 'A', 'only in main');
    await messages(pageA).filter({ hasText: 'only in main' }).first().waitFor();
    await side.waitForTimeout(300);
    assert.equal(await messages(side).filter({ hasText: 'only in main' }).count(), 0);
    assert.equal(await messages(pageA).filter({ hasText: 'only in side' }).count(), 0);
    // A late joiner of "side" is shown its history, marked as such.
    const late = await openPage(ctx, 'L', '?room=side');
    await log(late).locator('.message.history').filter({ hasText: 'only in side' }).first().waitFor();
    await assertEventually(() => late.locator('#count').textContent(), /\b2 online/);
    // The room form moves a page to another room and puts it in the URL, to share.
    await late.locator('#room').fill('other');
    await late.locator('#room').press('Enter');
    await assertEventually(() => new URL(late.url()).searchParams.get('room'), 'other');
    await assertEventually(() => late.locator('#count').textContent(), /\b1 online/);
    assert.equal(await messages(late).count(), 0, 'the old room\'s lines are cleared');
    await log(side).locator('.notice.leave').filter({ hasText: '1 online' }).first().waitFor();
  } finally {
    await ctx.close();
  }
});

test('without window.WebSocket the page chats over long polling with a WebSocket page', { timeout: TEST_MS }, async () => {
  const ctx = await browser.newContext();
  try {
    const lp = await newPage(ctx, 'LP');
    await lp.addInitScript(() => { delete window.WebSocket; window.WebSocket = undefined; });
    await lp.goto(baseURL + '?room=lp');
    await assertEventually(() => status(lp).getAttribute('data-state'), 'connected');
    assert.match(await lp.locator('#transport').textContent(), /long polling/);
    const wsPage = await openPage(ctx, 'W', '?room=lp');
    assert.match(await wsPage.locator('#transport').textContent(), /WebSocket/);
    // The polling page counts as present.
    await assertEventually(() => wsPage.locator('#count').textContent(), /\b2 online/);
    await send(lp, 'LP', 'from polling');
    await messages(wsPage).filter({ hasText: 'from polling' }).first().waitFor();
    await send(wsPage, 'WS', 'from websocket <b>x</b>');
    await messages(lp).filter({ hasText: 'from websocket' }).first().waitFor();
    await send(lp, 'LP', 'again');
    await messages(wsPage).filter({ hasText: 'again' }).first().waitFor();
    await messages(lp).filter({ hasText: 'again' }).first().waitFor();
    const seenLp = await messages(lp).allTextContents();
    const seenWs = await messages(wsPage).allTextContents();
    assert.deepEqual(seenLp, seenWs, 'same messages in the same order');
    assert.equal(seenLp.length, 3);
    await assertNoMarkup(lp);
  } finally {
    await ctx.close();
  }
  assert.deepEqual(pageErrors, []);
});

test('a dropped WebSocket resumes from its cursor: missed lines once, a replayed one dropped', { timeout: TEST_MS }, async () => {
  const ctx = await browser.newContext();
  try {
    const page = await newPage(ctx, 'R');
    // The page's socket goes through Playwright to the real server, so the test can cut it
    // and, on the second connection, slip in an event the page has shown already.
    let connections = 0;
    let cut = null;
    let dup = null; // set from the first connection's traffic
    const resumedWith = [];
    await page.routeWebSocket(/\/resume/, (ws) => {
      connections += 1;
      const n = connections;
      resumedWith.push(ws.url());
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        ws.send(m);
        const v = JSON.parse(m);
        // The event the page shows first, again under its own seq but with other text.
        if (n === 1 && v.msg === 'one') dup = JSON.stringify({ ...v, msg: 'one (again)' });
        if (n === 2 && dup && v.type === 'welcome') ws.send(dup);
      });
      cut = () => { ws.close(); server.close(); };
    });
    const other = await openPage(ctx, 'O', '?room=resume');
    await page.goto(baseURL + '?room=resume');
    await assertEventually(() => status(page).getAttribute('data-state'), 'connected');
    await send(other, 'O', 'one');
    await messages(page).filter({ hasText: 'one' }).first().waitFor();
    assert.ok(dup, 'saw the first message go through');
    cut();
    await assertEventually(() => status(page).getAttribute('data-state'), 'disconnected');
    await send(other, 'O', 'two');
    await send(other, 'O', 'three');
    await assertEventually(() => status(page).getAttribute('data-state'), 'connected', 10_000);
    await messages(page).filter({ hasText: 'three' }).first().waitFor();
    await page.waitForTimeout(300);
    assert.equal(connections, 2);
    assert.match(resumedWith[1], /\?since=\d+&epoch=/, 'the second socket resumes from a cursor');
    assert.deepEqual(await messages(page).allTextContents(), ['O: one', 'O: two', 'O: three']);
    assert.equal(await log(page).locator('.notice.gap, .notice.restart').count(), 0);
    // The lines it missed are live lines, not dimmed history.
    assert.equal(await log(page).locator('.message.history').count(), 0);
  } finally {
    await ctx.close();
  }
  assert.deepEqual(pageErrors, []);
});

test('?room=.. is refused by the page, and the status names the room the welcome names', { timeout: TEST_MS }, async () => {
  const ctx = await browser.newContext();
  try {
    const page = await openPage(ctx, 'D', '?room=..');
    await assertEventually(() => status(page).getAttribute('data-state'), 'connected');
    // The browser would send ws://HOST/.. to "/": the page must not claim to be in "..".
    await assertEventually(() => page.locator('#status-text').textContent(), 'Connected to main');
    await log(page).locator('.error').filter({ hasText: "not '.' or '..'" }).first().waitFor();
    const other = await openPage(ctx, 'L', '?room=lobby.1');
    await assertEventually(() => other.locator('#status-text').textContent(), 'Connected to lobby.1');
  } finally {
    await ctx.close();
  }
  assert.deepEqual(pageErrors, []);
});

test('a page on another site cannot make its visitors present in a room', { timeout: TEST_MS }, async () => {
  const http = require('node:http');
  const ctx = await browser.newContext();
  // The other site: another loopback address, so another origin and another site.
  let evilHtml = '';
  const evil = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(evilHtml);
  });
  await new Promise((r) => evil.listen(0, '127.0.0.2', r));
  try {
    const victim = await openPage(ctx, 'V', '?room=victim');
    await assertEventually(() => victim.locator('#count').textContent(), /\b1 online/);
    // The attacker learns the room's cursor the way anyone can (the page's own poll).
    const welcome = (await (await fetch(`${baseURL}poll?room=victim`)).json())[0];
    const cursor = `since=${welcome.seq}&epoch=${encodeURIComponent(welcome.epoch)}`;
    const metrics = async () => {
      const text = await (await fetch(`${baseURL}metrics`)).text();
      return Number(/^wsrelay_http_requests_total (\d+)/m.exec(text)[1]);
    };
    const before = await metrics();
    const poll = (client) => `${baseURL}poll?room=victim&client=${client}&${cursor}`;
    evilHtml = `<!doctype html><title>other site</title>
      <img id="i" src="${poll('img1')}">
      <script>
        window.done = 0;
        document.getElementById('i').onerror = document.getElementById('i').onload = () => { window.done += 1; };
        fetch(${JSON.stringify(poll('fetch1'))}, { mode: 'no-cors' }).finally(() => { window.done += 1; });
      </script>`;
    const page = await newPage(ctx, 'E');
    await page.goto(`http://127.0.0.2:${evil.address().port}/`);
    // Both requests reached the server and were answered (a held poll would not be).
    await assertEventually(() => page.evaluate(() => window.done), 2);
    assert.ok((await metrics()) >= before + 2, 'the requests reached wsrelay');
    await victim.waitForTimeout(500);
    assert.match(await victim.locator('#count').textContent(), /\b1 online/);
    assert.equal(await notices(victim).filter({ hasText: 'joined' }).count(), 1, 'only its own join');
  } finally {
    await ctx.close();
    evil.close();
  }
});

/** Poll `fn` until its value equals / matches `want`, or fail after `ms`. */
async function assertEventually(fn, want, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let got;
  for (;;) {
    got = await fn();
    const ok = want instanceof RegExp ? want.test(String(got)) : got === want;
    if (ok) return got;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms: got ${JSON.stringify(got)}, want ${want}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
