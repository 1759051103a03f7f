'use strict';
// Headless Chromium chats through the page with `--deflate`: Chromium offers
// permessage-deflate (RFC 7692), wsrelay accepts it, and /metrics shows that compressed frames
// went both ways: the browser compresses what it sends, wsrelay what it broadcasts (messages
// of at least --deflate-threshold bytes). The CDP log of the handshake shows the answer.
//
//   WSRELAY_BIN  server binary (default ../../target/release/wsrelay, relative to this dir)
//   CHROMIUM     browser binary (default /usr/bin/chromium)

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const SERVER_BIN = path.resolve(
  process.env.WSRELAY_BIN || path.join(__dirname, '..', '..', 'target', 'release', 'wsrelay'),
);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 5_000;
const TEST_MS = 30_000;

let server;
let browser;

/** Starts `wsrelay --mode chat --deflate`; resolves with { proc, host }. */
function startServer() {
  return new Promise((resolve, reject) => {
    const proc = spawn(SERVER_BIN, ['--listen', '127.0.0.1:0', '--mode', 'chat', '--deflate'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`no "listening on" line within 10 s:\n${stderr}`));
    }, 10_000);
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      stderr += chunk;
      const m = /listening on ws:\/\/([^\s/]+)\//.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, host: m[1] });
      }
    });
    proc.on('error', (e) => reject(new Error(`cannot start ${SERVER_BIN}: ${e.message}`)));
  });
}

/** The server's counters, `name{labels}` -> value. */
async function metrics() {
  const text = await (await fetch(`http://${server.host}/metrics`)).text();
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

before(async () => {
  assert.ok(fs.existsSync(SERVER_BIN), `server binary not found: ${SERVER_BIN}`);
  assert.ok(fs.existsSync(CHROMIUM), `chromium not found: ${CHROMIUM}`);
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) server.proc.kill('SIGTERM');
});

process.on('exit', () => {
  if (server && server.proc.exitCode === null) server.proc.kill('SIGKILL');
});

test('two pages chat over compressed frames', { timeout: TEST_MS }, async () => {
  const before = await metrics();
  const pages = [];
  const answers = [];
  for (const label of ['A', 'B']) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(WAIT_MS);
    // The 101 as the browser saw it, from the DevTools protocol.
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
      const h = e.response.headers;
      answers.push(h['Sec-WebSocket-Extensions'] || h['sec-websocket-extensions'] || '');
    });
    await page.goto(`http://${server.host}/?room=zipped`);
    await page.locator('#status[data-state="connected"]').waitFor();
    pages.push(page);
  }
  assert.deepEqual(answers, [
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
  ]);
  const [a, b] = pages;
  // Long enough to be compressed on the way out (over the 128-byte threshold), and one short.
  const long = 'the quick brown fox jumps over the lazy dog; '.repeat(8).trim();
  await a.getByLabel('Name', { exact: true }).fill('ann');
  await a.getByLabel('Message', { exact: true }).fill(long);
  await a.getByLabel('Message', { exact: true }).press('Enter');
  await a.getByLabel('Message', { exact: true }).fill('short');
  await a.getByLabel('Message', { exact: true }).press('Enter');
  for (const page of pages) {
    const lines = page.getByRole('log').locator('.message');
    await lines.filter({ hasText: 'short' }).waitFor();
    assert.equal(await lines.filter({ hasText: long }).count(), 1);
  }
  const after = await metrics();
  const grew = (name) => (after[name] || 0) - (before[name] || 0);
  assert.equal(grew('wsrelay_deflate_upgrades_total'), 2, 'both pages negotiated it');
  // Chromium compresses every message it sends once the extension is on.
  assert.ok(grew('wsrelay_deflate_messages_received_total') >= 2, JSON.stringify(after));
  // The long line was compressed once, and sent compressed to both pages.
  assert.ok(grew('wsrelay_deflate_compressions_total') >= 1, JSON.stringify(after));
  assert.ok(grew('wsrelay_deflate_deliveries_total') >= 2, JSON.stringify(after));
  const plain = grew('wsrelay_deflate_payload_bytes_total{form="plain"}');
  const packed = grew('wsrelay_deflate_payload_bytes_total{form="compressed"}');
  assert.ok(packed > 0 && packed < plain / 2, `${plain} bytes compressed to ${packed}`);
});
