'use strict';
// wsrelay --mode chat (the socket.io chat tutorial) driven by the official socket.io-client on
// one server: the welcome, re-emitting to the room with the sender included, acks, the room
// from the query or the auth payload, and connection-state recovery after a cut connection.
//
// The chat contract: a new client gets `connected` with "Welcome to the chat"; every event a
// client emits is re-emitted, arguments unchanged, to every client of its room, sender
// included; its ack callback is called once the event is committed; the room is
// `io(url, { query: { room } })` or the auth payload's `room`, default `main`. After a cut
// connection, the client's reconnect is recovered (`socket.recovered`), and what it missed is
// replayed exactly once, in order.
//
// With recovery on, a socket.io server appends each event's offset to its arguments (the client
// keeps the last one to resume from); `withoutOffset` takes it off before comparing.

const { test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');

const {
  WAIT_MS, Recorder, ack, connected, once, sleep, startBalancer, startServer, stop, withLogs,
  withoutOffset,
} = require('./harness');

const TEST_MS = 30_000;
const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
// Long enough for the server to have seen a silently cut session die (no pong in time).
const SESSION_DEATH_MS = PING_INTERVAL + PING_TIMEOUT + 700;

let server;
const open = new Set();

function client(url, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: WAIT_MS, ...opts });
  open.add(socket);
  return socket;
}

/** The texts of the "message" events `rec` recorded (one argument each, offset removed). */
const texts = (rec) => rec.calls.map((args) => withoutOffset(args, 1)[0]);

/** Every event `socket` gets but `connected`, as [name, ...args] with the offset removed. */
function everything(socket) {
  const got = [];
  socket.onAny((event, ...args) => {
    if (event !== 'connected') got.push([event, ...args]);
  });
  return got;
}

const run = (fn) => () => withLogs(() => [server], fn);

before(async () => {
  // Some tests say 20 things in a row from one client, past the default --max-message-rate
  // burst (20), which would end that client's socket (events count against the rate).
  server = await startServer(['--mode', 'chat', '--eio-ping-interval', String(PING_INTERVAL),
    '--eio-ping-timeout', String(PING_TIMEOUT), '--max-message-rate', '1000']);
}, { timeout: 20_000 });

afterEach(() => {
  for (const s of open) s.disconnect();
  open.clear();
});

after(async () => {
  await stop(server && server.proc);
});

for (const transports of [['websocket'], ['polling'], ['polling', 'websocket']]) {
  test(`transports ${transports.join('+')}: a new client gets "connected" with "Welcome to the chat", and is not recovered`, { timeout: TEST_MS }, run(async () => {
    const socket = client(server.url, { transports, query: { room: 'welcome' } });
    const welcome = new Recorder(socket, 'connected');
    await connected(socket);
    const [args] = await welcome.count(1);
    assert.equal(withoutOffset(args, 1)[0], 'Welcome to the chat');
    assert.ok(!socket.recovered, 'a first connection has nothing to recover');
  }));
}

test('every event is re-emitted to every client of the room, sender included, arguments unchanged', { timeout: TEST_MS }, run(async () => {
  const room = { room: 'reemit' };
  const a = client(server.url, { transports: ['websocket'], query: room });
  const b = client(server.url, { transports: ['polling'], query: room });
  const c = client(server.url, { query: room }); // polling, then upgraded
  const got = [a, b, c].map(everything);
  await Promise.all([a, b, c].map((s) => connected(s)));
  a.emit('message', 'hi from a');
  await Promise.all(got.map((g) => eventuallyLength(g, 1)));
  b.emit('chat', 1, '2', { 3: [true] }, null, ['x', 2.5]);
  await Promise.all(got.map((g) => eventuallyLength(g, 2)));
  c.emit('message', 'unicode é ✓ 😀 and "quotes" and \\ and \u2028');
  await Promise.all(got.map((g) => eventuallyLength(g, 3)));
  const want = [
    ['message', 'hi from a'],
    ['chat', 1, '2', { 3: [true] }, null, ['x', 2.5]],
    ['message', 'unicode é ✓ 😀 and "quotes" and \\ and \u2028'],
  ];
  for (const [i, g] of got.entries()) {
    const plain = g.map(([event, ...args], k) => [event, ...withoutOffset(args, want[k].length - 1)]);
    assert.deepEqual(plain, want, `client ${'abc'[i]}`);
  }
}));

async function eventuallyLength(list, n) {
  const deadline = Date.now() + WAIT_MS;
  while (list.length < n) {
    if (Date.now() > deadline) assert.fail(`timed out: ${n} events wanted, got ${JSON.stringify(list)}`);
    await sleep(20);
  }
}

test('an ack is called once the event is committed, and the event reaches the room', { timeout: TEST_MS }, run(async () => {
  const room = { room: 'acks' };
  const a = client(server.url, { transports: ['websocket'], query: room });
  const b = client(server.url, { transports: ['polling'], query: room });
  const ra = new Recorder(a, 'message');
  const rb = new Recorder(b, 'message');
  await Promise.all([connected(a), connected(b)]);
  await ack(a, 'message', 'acked from a');
  await ack(b, 'message', 'acked from b');
  // Acks in flight together are each answered once.
  await Promise.all(Array.from({ length: 10 }, (_, i) => ack(a, 'message', `burst ${i}`)));
  const want = ['acked from a', 'acked from b', ...Array.from({ length: 10 }, (_, i) => `burst ${i}`)];
  await ra.count(want.length);
  await rb.count(want.length);
  assert.deepEqual(texts(ra), want);
  assert.deepEqual(texts(rb), want);
}));

test('the room comes from the query or the auth payload, default "main"; rooms do not hear each other', { timeout: TEST_MS }, run(async () => {
  const byQuery = client(server.url, { transports: ['websocket'], query: { room: 'q-or-auth' } });
  const byAuth = client(server.url, { transports: ['polling'], auth: { room: 'q-or-auth' } });
  const byDefault = client(server.url, { transports: ['websocket'] });
  const main = client(server.url, { transports: ['websocket'], auth: { room: 'main' } });
  const other = client(server.url, { transports: ['websocket'], query: { room: 'q-or-auth-other' } });
  const all = { byQuery, byAuth, byDefault, main, other };
  const rec = Object.fromEntries(Object.entries(all).map(([k, s]) => [k, new Recorder(s, 'message')]));
  await Promise.all(Object.values(all).map((s) => connected(s)));
  await ack(byQuery, 'message', 'said by query');
  await ack(byAuth, 'message', 'said by auth');
  await ack(byDefault, 'message', 'said by default');
  await ack(other, 'message', 'said in other');
  // Each client then hears its own last word: anything its room had was sent to it before.
  for (const [k, s] of Object.entries(all)) {
    s.emit('message', `end ${k}`);
    await rec[k].until(`end ${k}`);
  }
  const heard = (k) => texts(rec[k]).filter((t) => !t.startsWith('end '));
  assert.deepEqual(heard('byQuery'), ['said by query', 'said by auth']);
  assert.deepEqual(heard('byAuth'), ['said by query', 'said by auth']);
  assert.deepEqual(heard('byDefault'), ['said by default']);
  assert.deepEqual(heard('main'), ['said by default']);
  assert.deepEqual(heard('other'), ['said in other']);
}));

// --- connection-state recovery ---------------------------------------------------------------

/**
 * The recovery scenario: X and Y in one room; X hears m1-m3; X's connection is cut (`cut`) and
 * X waits, not reconnecting; Y says m4-m6 and each is acked (committed); X reconnects with the
 * same Socket; X is recovered and hears m4-m6, then m7, each exactly once, in order.
 */
async function recoveryScenario({ room, transports, cut, via }) {
  const x = client(via.url, { transports, query: { room } });
  const y = client(server.url, { transports: ['websocket'], query: { room } });
  const rx = new Recorder(x, 'message');
  await Promise.all([connected(x), connected(y)]);
  for (const m of ['m1', 'm2', 'm3']) await ack(y, 'message', m);
  await rx.count(3);
  assert.equal(typeof x._lastOffset, 'string', 'the server sends offsets: recovery needs them');
  const disconnected = once(x, 'disconnect', WAIT_MS, 'X to see its connection cut');
  await cut(x);
  const [reason] = await disconnected;
  assert.ok(!x.connected, `X is disconnected (${reason})`);
  for (const m of ['m4', 'm5', 'm6']) await ack(y, 'message', m);
  x.connect();
  await connected(x);
  assert.equal(x.recovered, true, 'the reconnect is recovered');
  await ack(y, 'message', 'm7');
  await rx.until('m7');
  assert.deepEqual(texts(rx), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'], 'each once, in order');
}

for (const transports of [['websocket'], ['polling']]) {
  const name = transports[0];
  test(`recovery, ${name}: socket.io.engine.close(), then reconnect: recovered, missed events once each, in order`, { timeout: TEST_MS }, run(async () => {
    await recoveryScenario({
      room: `rec-close-${name}`,
      transports,
      via: server,
      cut: (x) => x.io.engine.close(),
    });
  }));

  test(`recovery, ${name}: the network drops (TCP cut, no close), then reconnect: recovered, missed events once each, in order`, { timeout: TEST_MS }, run(async () => {
    const net = await startBalancer([server.host], 'failover');
    try {
      await recoveryScenario({
        room: `rec-cut-${name}`,
        transports,
        via: net,
        cut: async () => {
          net.cut();
          // A polling session has no socket to lose: the server learns it is gone when no pong
          // comes. socket.io recovers only a session that is over; wait until this one is.
          if (name === 'polling') await sleep(SESSION_DEATH_MS);
        },
      });
    } finally {
      await net.close();
    }
  }));
}

test('recovery, automatic: the client reconnects by itself after a network drop and misses nothing', { timeout: TEST_MS }, run(async () => {
  const net = await startBalancer([server.host], 'failover');
  try {
    const room = 'rec-auto';
    const x = client(net.url, {
      transports: ['websocket'], query: { room }, reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 200,
    });
    const y = client(server.url, { transports: ['websocket'], query: { room } });
    const rx = new Recorder(x, 'message');
    let connects = 0;
    x.on('connect', () => { connects += 1; });
    await Promise.all([connected(x), connected(y)]);
    await ack(y, 'message', 'before');
    await rx.until('before');
    const back = once(x.io, 'reconnect', WAIT_MS, 'X to reconnect');
    net.cut();
    // Said right away: before, during or after X's reconnect, X hears each once.
    const said = Array.from({ length: 20 }, (_, i) => `while away ${i}`);
    for (const m of said) await ack(y, 'message', m);
    await back;
    await connected(x);
    assert.equal(x.recovered, true);
    await ack(y, 'message', 'after');
    await rx.until('after');
    assert.deepEqual(texts(rx), ['before', ...said, 'after']);
    assert.equal(connects, 2);
  } finally {
    await net.close();
  }
}));

test('a reconnect with a session id the server never gave is an ordinary new connection', { timeout: TEST_MS }, run(async () => {
  const room = 'rec-bogus';
  const x = client(server.url, { transports: ['websocket'], query: { room }, autoConnect: false });
  const welcome = new Recorder(x, 'connected');
  const rx = new Recorder(x, 'message');
  // What socket.io-client sends on a reconnect: { pid, offset } in the CONNECT packet's payload.
  x._pid = 'not-a-session-of-this-server';
  x._lastOffset = 'not-an-offset';
  x.connect();
  await connected(x);
  assert.ok(!x.recovered);
  await welcome.count(1);
  await ack(x, 'message', 'fresh');
  await rx.until('fresh');
  assert.deepEqual(texts(rx), ['fresh']);
}));
