'use strict';
// Engine.IO v4 and Socket.IO v5 on the wire, against wsrelay --mode echo with the settings the
// socket.io protocol suite expects (--eio-ping-interval 300 --eio-ping-timeout 200
// --eio-max-payload 1000000 --sio-connect-timeout 1000): raw HTTP requests (fetch) and raw
// WebSocket frames (ws), no socket.io client, so each packet the server writes is checked as
// written. Covers the handshake and its refusals, heartbeats, closing, the upgrade from polling,
// polling payloads, size limits, namespaces, events, acks, binary attachments, and malformed
// packets. Written here from the protocols' specifications (socketio/socket.io-protocol's and
// socketio/engine.io-protocol's Readme).

const { test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');

const { WAIT_MS, sleep, startServer, stop, withLogs } = require('./harness');

const TEST_MS = 15_000;
const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const MAX_PAYLOAD = 1_000_000;
const CONNECT_TIMEOUT = 1_000;
const SLACK_MS = 1_000; // on top of a server deadline, for a loaded machine
const RS = '\x1e'; // the polling payload separator

let server;
const sockets = new Set();

const run = (fn) => () => withLogs(() => [server], fn);

before(async () => {
  server = await startServer(['--mode', 'echo', '--eio-ping-interval', String(PING_INTERVAL),
    '--eio-ping-timeout', String(PING_TIMEOUT), '--eio-max-payload', String(MAX_PAYLOAD),
    '--sio-connect-timeout', String(CONNECT_TIMEOUT)]);
}, { timeout: 20_000 });

afterEach(() => {
  for (const ws of sockets) ws.terminate();
  sockets.clear();
});

after(async () => {
  await stop(server && server.proc);
});

const path = (query) => `/socket.io/?${query}`;

/** An HTTP request to wsrelay; resolves with { status, body } (text), bounded. */
async function request(query, { method = 'GET', body } = {}) {
  const res = await fetch(`${server.url}${path(query)}`, {
    method, body, signal: AbortSignal.timeout(WAIT_MS),
  });
  return { status: res.status, body: await res.text() };
}

/** Opens a long-polling session; returns its handshake (sid, …). */
async function pollingSession() {
  const { status, body } = await request('EIO=4&transport=polling');
  assert.equal(status, 200, body);
  assert.equal(body[0], '0', `an open packet, got ${JSON.stringify(body)}`);
  return JSON.parse(body.slice(1));
}

/**
 * A WebSocket to `/socket.io/?QUERY` whose messages queue up: `next()` takes the next one
 * (text as a string, binary as a Buffer), `closed()` waits for the close. Each ping is answered
 * with a pong at once unless `autoPong` is false.
 */
function wsClient(query, { autoPong = true } = {}) {
  const ws = new WebSocket(`ws://${server.host}${path(query)}`);
  sockets.add(ws);
  const queue = [];
  const waiters = [];
  let closeInfo = null;
  const closeWaiters = [];
  ws.on('message', (data, isBinary) => {
    const m = isBinary ? Buffer.from(data) : data.toString('utf8');
    if (autoPong && m === '2') ws.send('3');
    const w = waiters.shift();
    if (w) w(m);
    else queue.push(m);
  });
  ws.on('error', () => {});
  ws.on('unexpected-response', (_req, res) => {
    closeInfo = { status: res.statusCode };
    ws.terminate();
  });
  ws.on('close', (code) => {
    closeInfo = closeInfo || { code };
    for (const w of closeWaiters.splice(0)) w(closeInfo);
  });
  const bounded = (p, what) => {
    let timer;
    const limit = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS);
    });
    return Promise.race([p, limit]).finally(() => clearTimeout(timer));
  };
  return {
    ws,
    opened: () => bounded(new Promise((resolve, reject) => {
      if (ws.readyState === WebSocket.OPEN) resolve();
      ws.once('open', resolve);
      ws.once('close', () => reject(new Error(`closed before opening: ${JSON.stringify(closeInfo)}`)));
    }), 'the WebSocket to open'),
    send: (m) => ws.send(m),
    /** The next message; pings ("2") are skipped unless `pings`. */
    next: async ({ pings = false } = {}) => {
      for (;;) {
        const m = queue.length ? queue.shift() : await bounded(new Promise((resolve, reject) => {
          if (closeInfo) reject(new Error(`closed (${JSON.stringify(closeInfo)}) while waiting for a message`));
          waiters.push(resolve);
          closeWaiters.push((info) => reject(new Error(`closed (${JSON.stringify(info)}) while waiting for a message`)));
        }), 'a message');
        if (pings || m !== '2') return m;
      }
    },
    closed: () => bounded(new Promise((resolve) => {
      if (closeInfo && ws.readyState === WebSocket.CLOSED) resolve(closeInfo);
      else closeWaiters.push(resolve);
    }), 'the WebSocket to close'),
  };
}

/** An Engine.IO session over WebSocket, connected to namespace `/`: its first auth event taken. */
async function sioSocket() {
  const c = wsClient('EIO=4&transport=websocket');
  assert.equal((await c.next())[0], '0');
  c.send('40');
  assert.match(await c.next(), /^40\{"sid":"[^"]+"\}$/);
  assert.equal(await c.next(), '42["auth",{}]');
  return c;
}

// --- Engine.IO: handshake -------------------------------------------------------------------

function checkHandshake(h, upgrades) {
  assert.deepEqual(Object.keys(h).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
  assert.equal(typeof h.sid, 'string');
  assert.ok(h.sid.length > 0);
  assert.deepEqual(h.upgrades, upgrades);
  assert.equal(h.pingInterval, PING_INTERVAL);
  assert.equal(h.pingTimeout, PING_TIMEOUT);
  assert.equal(h.maxPayload, MAX_PAYLOAD);
}

test('polling handshake: 200, an open packet with sid, upgrades ["websocket"], and the configured timings and limit', { timeout: TEST_MS }, run(async () => {
  const a = await pollingSession();
  checkHandshake(a, ['websocket']);
  const b = await pollingSession();
  assert.notEqual(a.sid, b.sid, 'each session its own sid');
}));

test('WebSocket handshake: the first message is the open packet, upgrades []', { timeout: TEST_MS }, run(async () => {
  const c = wsClient('EIO=4&transport=websocket');
  const m = await c.next();
  assert.equal(m[0], '0');
  checkHandshake(JSON.parse(m.slice(1)), []);
}));

test('polling requests with a bad EIO, transport, method or sid are answered 400', { timeout: TEST_MS }, run(async () => {
  const bad = [
    ['transport=polling', 'GET'],
    ['EIO=abc&transport=polling', 'GET'],
    ['EIO=3&transport=polling', 'GET'],
    ['EIO=4', 'GET'],
    ['EIO=4&transport=abc', 'GET'],
    ['EIO=4&transport=polling', 'POST'],
    ['EIO=4&transport=polling', 'PUT'],
    ['EIO=4&transport=polling&sid=no-such-session', 'GET'],
    ['EIO=4&transport=polling&sid=no-such-session', 'POST'],
  ];
  for (const [query, method] of bad) {
    const { status } = await request(query, { method, body: method === 'GET' ? undefined : '3' });
    assert.equal(status, 400, `${method} ${path(query)}`);
  }
}));

test('WebSocket upgrades with a bad EIO or transport, or an unknown sid, are refused', { timeout: TEST_MS }, run(async () => {
  for (const query of ['transport=websocket', 'EIO=abc&transport=websocket', 'EIO=4', 'EIO=4&transport=abc',
    'EIO=4&transport=websocket&sid=no-such-session']) {
    const c = wsClient(query);
    const info = await c.closed();
    assert.ok(info.status === 400 || info.code !== undefined, `${query}: refused (${JSON.stringify(info)})`);
    await assert.rejects(c.next(), /closed/, `${query}: no open packet`);
  }
}));

// --- Engine.IO: heartbeat and close ---------------------------------------------------------

test('polling heartbeat: a held GET is answered with a ping each interval; the pong keeps the session', { timeout: TEST_MS }, run(async () => {
  const { sid } = await pollingSession();
  for (let i = 0; i < 3; i++) {
    const t0 = Date.now();
    const poll = await request(`EIO=4&transport=polling&sid=${sid}`);
    assert.equal(poll.status, 200);
    assert.equal(poll.body, '2');
    assert.ok(Date.now() - t0 < PING_INTERVAL + SLACK_MS, 'the ping comes on time');
    const pong = await request(`EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body: '3' });
    assert.equal(pong.status, 200);
    assert.equal(pong.body, 'ok');
  }
}));

test('polling: a session that does not answer a ping is closed (its sid then gets 400)', { timeout: TEST_MS }, run(async () => {
  const { sid } = await pollingSession();
  await sleep(PING_INTERVAL + PING_TIMEOUT + SLACK_MS);
  const { status } = await request(`EIO=4&transport=polling&sid=${sid}`);
  assert.equal(status, 400);
}));

test('WebSocket heartbeat: a ping each interval; answered, the session lives; unanswered, it is closed', { timeout: TEST_MS }, run(async () => {
  const c = wsClient('EIO=4&transport=websocket', { autoPong: false });
  await c.next();
  for (let i = 0; i < 3; i++) {
    assert.equal(await c.next({ pings: true }), '2');
    c.send('3');
  }
  assert.equal(c.ws.readyState, WebSocket.OPEN);
  const silent = wsClient('EIO=4&transport=websocket', { autoPong: false });
  await silent.next();
  const t0 = Date.now();
  await silent.closed();
  assert.ok(Date.now() - t0 < PING_INTERVAL + PING_TIMEOUT + SLACK_MS, `closed after ${Date.now() - t0} ms`);
}));

test('polling close packet: the held GET is answered with a noop, then the sid is gone', { timeout: TEST_MS }, run(async () => {
  const { sid } = await pollingSession();
  const held = request(`EIO=4&transport=polling&sid=${sid}`);
  await sleep(50);
  const post = await request(`EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body: '1' });
  assert.equal(post.status, 200);
  const poll = await held;
  assert.equal(poll.status, 200);
  assert.equal(poll.body, '6');
  assert.equal((await request(`EIO=4&transport=polling&sid=${sid}`)).status, 400);
}));

test('WebSocket close packet: the server closes the connection', { timeout: TEST_MS }, run(async () => {
  const c = wsClient('EIO=4&transport=websocket');
  await c.next();
  c.send('1');
  await c.closed();
}));

test('polling: a second GET while one is held is refused with 400', { timeout: TEST_MS }, run(async () => {
  const { sid } = await pollingSession();
  const held = request(`EIO=4&transport=polling&sid=${sid}`);
  await sleep(50);
  const second = await request(`EIO=4&transport=polling&sid=${sid}`);
  assert.equal(second.status, 400);
  await held.catch(() => {});
}));

// --- Engine.IO: upgrade ---------------------------------------------------------------------

test('upgrade: 2probe is answered 3probe; the held GET gets a noop; after 5, polling and a second WebSocket for the sid are refused', { timeout: TEST_MS }, run(async () => {
  const { sid } = await pollingSession();
  const held = request(`EIO=4&transport=polling&sid=${sid}`);
  await sleep(50);
  const c = wsClient(`EIO=4&transport=websocket&sid=${sid}`);
  await c.opened();
  c.send('2probe');
  assert.equal(await c.next(), '3probe');
  const poll = await held;
  assert.equal(poll.status, 200);
  assert.equal(poll.body, '6', 'the held poll is let go with a noop');
  c.send('5');
  // The session now lives on the WebSocket: Socket.IO traffic goes there.
  c.send('40');
  assert.match(await c.next(), /^40\{"sid":"[^"]+"\}$/);
  assert.equal(await c.next(), '42["auth",{}]');
  assert.equal((await request(`EIO=4&transport=polling&sid=${sid}`)).status, 400);
  const again = wsClient(`EIO=4&transport=websocket&sid=${sid}`);
  await again.closed();
  c.send('42["message","still here"]');
  assert.equal(await c.next(), '42["message-back","still here"]');
}));

// --- Engine.IO: polling payloads and limits -------------------------------------------------

/** Polls session `q` until `n` packets other than pings came (each ping answered); returns them. */
async function polled(q, n) {
  const got = [];
  const deadline = Date.now() + WAIT_MS;
  while (got.length < n) {
    assert.ok(Date.now() < deadline, `timed out: ${n} packets wanted, got ${JSON.stringify(got)}`);
    const { status, body } = await request(q);
    assert.equal(status, 200, body);
    for (const p of body.split(RS)) {
      if (p === '2') await request(q, { method: 'POST', body: '3' });
      else got.push(p);
    }
  }
  return got;
}

test('polling payloads: packets joined by \\x1e in a POST, read back from GET payloads, binary as b + base64', { timeout: TEST_MS }, run(async () => {
  const { sid } = await pollingSession();
  const q = `EIO=4&transport=polling&sid=${sid}`;
  assert.equal((await request(q, { method: 'POST', body: '40' })).status, 200);
  const connect = await polled(q, 2);
  assert.match(connect[0], /^40\{"sid":"[^"]+"\}$/);
  assert.equal(connect[1], '42["auth",{}]');
  const post = await request(q, { method: 'POST', body: ['42["message","one"]', '42["message","two"]'].join(RS) });
  assert.equal(post.status, 200);
  assert.equal(post.body, 'ok');
  assert.deepEqual(await polled(q, 2), ['42["message-back","one"]', '42["message-back","two"]']);
  const bin = await request(q, {
    method: 'POST',
    body: ['451-["message",{"_placeholder":true,"num":0}]', `b${Buffer.from([1, 2, 3, 255]).toString('base64')}`].join(RS),
  });
  assert.equal(bin.status, 200);
  assert.deepEqual(await polled(q, 2), ['451-["message-back",{"_placeholder":true,"num":0}]', `b${Buffer.from([1, 2, 3, 255]).toString('base64')}`]);
}));

test('a POST over --eio-max-payload is answered 413; a WebSocket message over it closes the connection', { timeout: TEST_MS }, run(async () => {
  const { sid } = await pollingSession();
  const big = `4${'x'.repeat(MAX_PAYLOAD + 1)}`;
  const { status } = await request(`EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body: big });
  assert.equal(status, 413);
  const c = wsClient('EIO=4&transport=websocket');
  await c.next();
  c.send(big);
  await c.closed();
}));

// --- Socket.IO: namespaces --------------------------------------------------------------------

test('CONNECT to / and to /custom, with and without a payload: the sid, then the auth event', { timeout: TEST_MS }, run(async () => {
  const cases = [
    ['40', /^40\{"sid":"[^"]+"\}$/, '42["auth",{}]'],
    ['40{"token":"123"}', /^40\{"sid":"[^"]+"\}$/, '42["auth",{"token":"123"}]'],
    ['40/custom,', /^40\/custom,\{"sid":"[^"]+"\}$/, '42/custom,["auth",{}]'],
    ['40/custom,{"token":"abc"}', /^40\/custom,\{"sid":"[^"]+"\}$/, '42/custom,["auth",{"token":"abc"}]'],
  ];
  for (const [connect, reply, auth] of cases) {
    const c = wsClient('EIO=4&transport=websocket');
    await c.next();
    c.send(connect);
    assert.match(await c.next(), reply, connect);
    assert.equal(await c.next(), auth, connect);
  }
}));

test('CONNECT to an unknown namespace: CONNECT_ERROR "Invalid namespace"', { timeout: TEST_MS }, run(async () => {
  const c = wsClient('EIO=4&transport=websocket');
  await c.next();
  c.send('40/random');
  assert.equal(await c.next(), '44/random,{"message":"Invalid namespace"}');
}));

test('no CONNECT within --sio-connect-timeout: the connection is closed', { timeout: TEST_MS }, run(async () => {
  const c = wsClient('EIO=4&transport=websocket');
  await c.next();
  const t0 = Date.now();
  await c.closed(); // pings answered: only the missing CONNECT closes it
  const took = Date.now() - t0;
  assert.ok(took < CONNECT_TIMEOUT + SLACK_MS, `closed after ${took} ms`);
}));

test('DISCONNECT from /: the session stays (pings go on); from /custom: / still answers', { timeout: TEST_MS }, run(async () => {
  const c = await sioSocket();
  c.send('41');
  assert.equal(await c.next({ pings: true }), '2');
  const d = await sioSocket();
  d.send('40/custom,');
  assert.match(await d.next(), /^40\/custom,/);
  assert.equal(await d.next(), '42/custom,["auth",{}]');
  d.send('41/custom,');
  d.send('42["message","to main"]');
  assert.equal(await d.next(), '42["message-back","to main"]');
}));

// --- Socket.IO: events, acks, binary ----------------------------------------------------------

test('EVENT "message" is answered with "message-back", arguments as sent', { timeout: TEST_MS }, run(async () => {
  const c = await sioSocket();
  c.send('42["message",1,"2",{"3":[true]}]');
  assert.equal(await c.next(), '42["message-back",1,"2",{"3":[true]}]');
}));

test('EVENT with an ack id: the ACK carries the id and the arguments', { timeout: TEST_MS }, run(async () => {
  const c = await sioSocket();
  c.send('42456["message-with-ack",1,"2",{"3":[false]}]');
  assert.equal(await c.next(), '43456[1,"2",{"3":[false]}]');
}));

test('BINARY_EVENT and BINARY_ACK: placeholders in the text packet, the attachments after it, in order', { timeout: TEST_MS }, run(async () => {
  const c = await sioSocket();
  const placeholders = '{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}';
  c.send(`452-["message",${placeholders}]`);
  c.send(Uint8Array.from([1, 2, 3]));
  c.send(Uint8Array.from([4, 5, 6]));
  assert.equal(await c.next(), `452-["message-back",${placeholders}]`);
  assert.deepEqual(await c.next(), Buffer.from([1, 2, 3]));
  assert.deepEqual(await c.next(), Buffer.from([4, 5, 6]));
  c.send(`452-789["message-with-ack",${placeholders}]`);
  c.send(Uint8Array.from([7]));
  c.send(Uint8Array.from([8, 9]));
  assert.equal(await c.next(), `462-789[${placeholders}]`);
  assert.deepEqual(await c.next(), Buffer.from([7]));
  assert.deepEqual(await c.next(), Buffer.from([8, 9]));
}));

for (const [what, packet] of [
  ['an unknown packet type', '4abc'],
  ['an EVENT whose payload is not an array', '42{}'],
  ['an EVENT with a bad ack id', '42abc["message-with-ack",1]'],
  ['an EVENT that is not JSON', '42["message",'],
]) {
  test(`${what} closes the connection`, { timeout: TEST_MS }, run(async () => {
    const c = await sioSocket();
    c.send(packet);
    await c.closed();
  }));
}

test('a malformed CONNECT closes the connection', { timeout: TEST_MS }, run(async () => {
  const c = wsClient('EIO=4&transport=websocket');
  await c.next();
  c.send('4abc');
  await c.closed();
}));
