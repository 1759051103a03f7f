'use strict';
// Headless Chromium loads the chat page over https:// from `wsrelay --tls-cert` and two pages
// chat over wss:// (the page picks wss:// on an https:// page). The certificate is a leaf made
// here with openssl, signed by a CA made here; Chromium is told to accept exactly that leaf
// with --ignore-certificate-errors-spki-list=<base64 SHA-256 of its public key>, nothing
// broader. The CDP log shows the WebSocket went to wss://.
//
//   WSRELAY_BIN  server binary (default ../../target/release/wsrelay, relative to this dir)
//   CHROMIUM     browser binary (default /usr/bin/chromium)

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const SERVER_BIN = path.resolve(
  process.env.WSRELAY_BIN || path.join(__dirname, '..', '..', 'target', 'release', 'wsrelay'),
);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 5_000;
const TEST_MS = 30_000;

let dir;
let server;
let browser;

/** A CA and a leaf for localhost in a scratch dir; returns the leaf's SPKI hash for Chromium. */
function makeCerts() {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsrelay-browser-tls-'));
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  fs.writeFileSync(path.join(dir, 'ca.ext'), 'basicConstraints=critical,CA:TRUE\n');
  fs.writeFileSync(path.join(dir, 'leaf.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=wsrelay browser CA');
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost');
  ssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'leaf.pem', '-days', '2', '-extfile', 'leaf.ext');
  fs.writeFileSync(path.join(dir, 'chain.pem'),
    fs.readFileSync(path.join(dir, 'leaf.pem')) + fs.readFileSync(path.join(dir, 'ca.pem')));
  const leaf = new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'leaf.pem')));
  const spki = leaf.publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

/** Starts `wsrelay --mode chat --tls-cert … --tls-key …`; resolves with { proc, port }. */
function startServer() {
  return new Promise((resolve, reject) => {
    const proc = spawn(SERVER_BIN, ['--listen', '127.0.0.1:0', '--mode', 'chat',
      '--tls-cert', path.join(dir, 'chain.pem'), '--tls-key', path.join(dir, 'key.pem')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`no "listening on wss://" line within 10 s:\n${stderr}`));
    }, 10_000);
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      stderr += chunk;
      const m = /listening on wss:\/\/127\.0\.0\.1:(\d+)\//.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, port: m[1] });
      }
    });
    proc.on('error', (e) => reject(new Error(`cannot start ${SERVER_BIN}: ${e.message}`)));
  });
}

before(async () => {
  assert.ok(fs.existsSync(SERVER_BIN), `server binary not found: ${SERVER_BIN}`);
  assert.ok(fs.existsSync(CHROMIUM), `chromium not found: ${CHROMIUM}`);
  const spki = makeCerts();
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      `--ignore-certificate-errors-spki-list=${spki}`],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) server.proc.kill('SIGTERM');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

process.on('exit', () => {
  if (server && server.proc.exitCode === null) server.proc.kill('SIGKILL');
});

test('the page over https:// and two pages chatting over wss://', { timeout: TEST_MS }, async () => {
  const pages = [];
  const sockets = [];
  for (const label of ['A', 'B']) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on('websocket', (ws) => sockets.push(ws.url()));
    const response = await page.goto(`https://localhost:${server.port}/?room=tls`);
    assert.equal(response.status(), 200, `${label}: the page`);
    const security = await response.securityDetails();
    assert.ok(['TLS 1.3', 'TLS 1.2'].includes(security.protocol), JSON.stringify(security));
    await page.locator('#status[data-state="connected"]').waitFor();
    pages.push(page);
  }
  assert.ok(sockets.length >= 2 && sockets.every((u) => u.startsWith('wss://localhost:')), sockets.join(' '));
  const [a, b] = pages;
  await a.getByLabel('Name', { exact: true }).fill('ann');
  await a.getByLabel('Message', { exact: true }).fill('hello over wss');
  await a.getByLabel('Message', { exact: true }).press('Enter');
  for (const page of pages) {
    await page.getByRole('log').locator('.message').filter({ hasText: 'hello over wss' }).waitFor();
  }
  // /healthz over https from the page's own origin.
  const health = await a.evaluate(async () => (await fetch('/healthz')).status);
  assert.equal(health, 200);
});
