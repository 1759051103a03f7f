'use strict';
// wsrelay --mode echo (the socket.io protocol suite's reference server) driven by the official
// socket.io-client: each transport (WebSocket only, long polling only, polling upgraded to
// WebSocket), heartbeats, acks, binary attachments, auth payloads, namespaces.
//
// The echo contract (the server the protocol suite's Readme gives): on connecting to `/` or
// `/custom` a socket gets an "auth" event carrying its auth payload ({} without one); on `/`,
// "message" is answered with "message-back" and the same arguments, and "message-with-ack" is
// acknowledged with its arguments. Every `--sio-namespace` is a namespace too; any other
// namespace is refused with "Invalid namespace".

const { test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { io, Manager } = require('socket.io-client');

const {
  WAIT_MS, Recorder, ack, connected, once, sleep, startServer, stop, withLogs,
} = require('./harness');

const TEST_MS = 20_000;
const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const TRANSPORTS = {
  websocket: ['websocket'],
  polling: ['polling'],
};

let server; // --mode echo
let admin; // --mode echo --sio-namespace /admin
const open = new Set(); // every socket and manager a test opened, closed after it

function client(path = '/', opts = {}) {
  const socket = io(`${server.url}${path}`, {
    forceNew: true,
    reconnection: false, // a drop is a failure here, not something to ride out
    timeout: WAIT_MS,
    ...opts,
  });
  open.add(socket);
  return socket;
}

const run = (fn) => () => withLogs(() => [server, admin], fn);

before(async () => {
  const common = ['--mode', 'echo', '--eio-ping-interval', String(PING_INTERVAL),
    '--eio-ping-timeout', String(PING_TIMEOUT), '--eio-max-payload', '1000000', '--sio-connect-timeout', '1000'];
  server = await startServer(common);
  admin = await startServer([...common, '--sio-namespace', '/admin']);
}, { timeout: 30_000 });

afterEach(() => {
  for (const s of open) (s.disconnect || s._close).call(s);
  open.clear();
});

after(async () => {
  await stop(server && server.proc);
  await stop(admin && admin.proc);
});

for (const [name, transports] of Object.entries(TRANSPORTS)) {
  test(`${name} only: connects, stays on ${name}, and "message" comes back as "message-back" with the same arguments`, { timeout: TEST_MS }, run(async () => {
    const socket = client('/', { transports });
    const auth = new Recorder(socket, 'auth');
    const back = new Recorder(socket, 'message-back');
    await connected(socket);
    assert.equal(socket.io.engine.transport.name, name);
    assert.deepEqual(await auth.count(1), [[{}]], 'the auth payload, {} without one');
    socket.emit('message', 1, '2', { 3: [true] });
    socket.emit('message', 'second', null, [1.5, 'x'], { nested: { deep: 'é ✓ 😀' } });
    assert.deepEqual(await back.count(2), [
      [1, '2', { 3: [true] }],
      ['second', null, [1.5, 'x'], { nested: { deep: 'é ✓ 😀' } }],
    ]);
    assert.equal(socket.io.engine.transport.name, name, 'no upgrade was asked for');
  }));

  test(`${name} only: an ack brings the arguments back, each ack once, in any order of asking`, { timeout: TEST_MS }, run(async () => {
    const socket = await connected(client('/', { transports }));
    assert.deepEqual(await ack(socket, 'message-with-ack', 1, '2', { 3: [false] }), [1, '2', { 3: [false] }]);
    const many = await Promise.all(Array.from({ length: 20 }, (_, i) => ack(socket, 'message-with-ack', i, `n${i}`)));
    assert.deepEqual(many, Array.from({ length: 20 }, (_, i) => [i, `n${i}`]));
  }));

  test(`${name} only: binary attachments (Buffers, nested, with and without an ack) round-trip byte for byte`, { timeout: TEST_MS }, run(async () => {
    const socket = await connected(client('/', { transports }));
    const back = new Recorder(socket, 'message-back');
    const big = Buffer.alloc(100_000, 0xab);
    const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    socket.emit('message', bytes, { nested: [Buffer.from([4, 5, 6]), 'text'], big }, Buffer.alloc(0));
    const [[a, b, c]] = await back.count(1);
    assert.ok(Buffer.isBuffer(a), `a Buffer, got ${typeof a}`);
    assert.deepEqual(a, bytes);
    assert.deepEqual(b.nested[0], Buffer.from([4, 5, 6]));
    assert.equal(b.nested[1], 'text');
    assert.ok(big.equals(b.big), 'the 100 kB attachment is unchanged');
    assert.deepEqual(c, Buffer.alloc(0));
    const resp = await ack(socket, 'message-with-ack', Buffer.from([1, 2, 3]), { x: Buffer.from([4, 5, 6]) });
    assert.deepEqual(resp, [Buffer.from([1, 2, 3]), { x: Buffer.from([4, 5, 6]) }]);
  }));

  test(`${name} only: idle for several ping intervals, the session lives on (pings answered by the client)`, { timeout: TEST_MS }, run(async () => {
    const socket = await connected(client('/', { transports }));
    let drops = 0;
    socket.on('disconnect', () => { drops += 1; });
    let pings = 0;
    socket.io.on('ping', () => { pings += 1; });
    await sleep(4 * (PING_INTERVAL + PING_TIMEOUT));
    assert.equal(drops, 0, 'no disconnect while idle');
    assert.ok(pings >= 3, `the server pings every ${PING_INTERVAL} ms: ${pings} pings in ${4 * (PING_INTERVAL + PING_TIMEOUT)} ms`);
    assert.deepEqual(await ack(socket, 'message-with-ack', 'still here'), ['still here']);
  }));
}

test('default transports: starts on polling, upgrades to websocket, nothing lost or doubled across the upgrade', { timeout: TEST_MS }, run(async () => {
  const socket = client('/', { transports: ['polling', 'websocket'], autoConnect: false });
  const back = new Recorder(socket, 'message-back');
  // The probe starts as soon as the engine opens: listen from then on.
  let first;
  const upgraded = new Promise((resolve, reject) => socket.io.once('open', () => {
    first = socket.io.engine.transport.name;
    once(socket.io.engine, 'upgrade', WAIT_MS, 'the engine to upgrade').then(resolve, reject);
  }));
  socket.connect();
  await connected(socket);
  assert.equal(first, 'polling');
  // Emit all along the upgrade: before the probe, during it, and after it.
  const n = 60;
  for (let i = 0; i < n; i++) {
    socket.emit('message', i);
    await sleep(5);
  }
  await upgraded;
  assert.equal(socket.io.engine.transport.name, 'websocket');
  socket.emit('message', 'after');
  const calls = await back.count(n + 1);
  assert.deepEqual(calls, [...Array.from({ length: n }, (_, i) => [i]), ['after']]);
  await sleep(100);
  assert.equal(back.calls.length, n + 1, 'no duplicates');
  assert.deepEqual(await ack(socket, 'message-with-ack', 'on websocket'), ['on websocket']);
}));

test('the auth payload comes back as the "auth" event, on / and on /custom', { timeout: TEST_MS }, run(async () => {
  const main = client('/', { auth: { token: '123' }, transports: ['websocket'] });
  const custom = client('/custom', { auth: { token: 'abc' }, transports: ['polling'] });
  const a = new Recorder(main, 'auth');
  const c = new Recorder(custom, 'auth');
  await Promise.all([connected(main), connected(custom)]);
  assert.deepEqual(await a.count(1), [[{ token: '123' }]]);
  assert.deepEqual(await c.count(1), [[{ token: 'abc' }]]);
}));

test('two namespaces on one connection: each gets its own auth event; leaving /custom leaves / working', { timeout: TEST_MS }, run(async () => {
  const manager = new Manager(server.url, { reconnection: false, timeout: WAIT_MS, transports: ['websocket'] });
  open.add(manager);
  const main = manager.socket('/');
  const custom = manager.socket('/custom', { auth: { who: 'custom' } });
  const mainBack = new Recorder(main, 'message-back');
  const mainAuth = new Recorder(main, 'auth');
  const customAuth = new Recorder(custom, 'auth');
  await Promise.all([connected(main), connected(custom)]);
  assert.equal(main.io.engine, custom.io.engine, 'one Engine.IO session');
  assert.notEqual(main.id, custom.id, 'a socket id per namespace');
  assert.deepEqual(await customAuth.count(1), [[{ who: 'custom' }]]);
  assert.deepEqual(await mainAuth.count(1), [[{}]]);
  main.emit('message', 'to main');
  await mainBack.until('to main');
  custom.disconnect();
  main.emit('message', 'main again');
  await mainBack.until('main again');
  assert.deepEqual(mainBack.calls, [['to main'], ['main again']]);
  assert.deepEqual(await ack(main, 'message-with-ack', 'ok'), ['ok']);
  assert.ok(main.connected);
  assert.deepEqual(mainAuth.calls, [[{}]], "/custom's auth event stayed on /custom");
}));

test('an unknown namespace is refused with connect_error "Invalid namespace"; / on the same connection is not affected', { timeout: TEST_MS }, run(async () => {
  const manager = new Manager(server.url, { reconnection: false, timeout: WAIT_MS, transports: ['websocket'] });
  open.add(manager);
  const main = manager.socket('/');
  await connected(main);
  const random = manager.socket('/random');
  let connects = 0;
  random.on('connect', () => { connects += 1; });
  const [err] = await once(random, 'connect_error', WAIT_MS, 'connect_error on /random');
  assert.equal(err.message, 'Invalid namespace');
  assert.equal(random.connected, false);
  assert.equal(connects, 0);
  assert.deepEqual(await ack(main, 'message-with-ack', 'fine'), ['fine']);
}));

test('--sio-namespace /admin adds /admin to that server only', { timeout: TEST_MS }, run(async () => {
  const ok = io(`${admin.url}/admin`, { forceNew: true, reconnection: false, timeout: WAIT_MS, auth: { a: 1 } });
  open.add(ok);
  await connected(ok);
  const refused = client('/admin');
  const [err] = await once(refused, 'connect_error', WAIT_MS, 'connect_error on /admin without --sio-namespace');
  assert.equal(err.message, 'Invalid namespace');
}));
