'use strict';
// wsrelay --mode chat --redis: several nodes on one redis-server (started here), driven by the
// official socket.io-client. Rooms span nodes (a polling client on one node and a WebSocket
// client on another hear each other); a polling client's requests may reach any node (a
// round-robin balancer sends each to the next one); a client that loses its node (its
// connection cut, or the node killed) reconnects through a balancer to another node and is
// recovered, missing nothing and hearing nothing twice.

const { test, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');

const {
  WAIT_MS, Recorder, ack, connected, once, sleep, startBalancer, startRedis, startServer, stop, stopRedis,
  withLogs, withoutOffset,
} = require('./harness');

const TEST_MS = 40_000;
const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const REJOIN_MS = 500; // socket.io-client's shortest default reconnection delay

let redis;
let nodeA;
let nodeB;
const extra = new Set(); // nodes a test starts (and kills)
const open = new Set(); // sockets and balancers a test opened

const nodeArgs = () => ['--mode', 'chat', '--redis', redis.url,
  '--eio-ping-interval', String(PING_INTERVAL), '--eio-ping-timeout', String(PING_TIMEOUT)];

function client(url, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: WAIT_MS, ...opts });
  open.add(socket);
  return socket;
}

const texts = (rec) => rec.calls.map((args) => withoutOffset(args, 1)[0]);

const run = (fn) => () => withLogs(() => [nodeA, nodeB, ...extra, redis], fn);

before(async () => {
  redis = await startRedis();
  nodeA = await startServer(nodeArgs());
  nodeB = await startServer(nodeArgs());
}, { timeout: 30_000 });

afterEach(async () => {
  for (const s of open) {
    if (s.disconnect) s.disconnect();
    else await s.close();
  }
  open.clear();
  for (const n of extra) await stop(n.proc);
  extra.clear();
});

after(async () => {
  await stop(nodeA && nodeA.proc);
  await stop(nodeB && nodeB.proc);
  await stopRedis(redis);
});

test('a polling client on node A and a WebSocket client on node B hear each other, in one order', { timeout: TEST_MS }, run(async () => {
  const room = { room: 'across' };
  const pa = client(nodeA.url, { transports: ['polling'], query: room });
  const wb = client(nodeB.url, { transports: ['websocket'], auth: room });
  const ua = client(nodeA.url, { query: room }); // default transports: upgraded on node A
  const elsewhere = client(nodeB.url, { transports: ['websocket'], query: { room: 'across-other' } });
  const recs = [pa, wb, ua].map((s) => new Recorder(s, 'message'));
  const quiet = new Recorder(elsewhere, 'message');
  await Promise.all([pa, wb, ua, elsewhere].map((s) => connected(s)));
  const want = [];
  for (let i = 0; i < 5; i++) {
    for (const [who, s] of [['A polling', pa], ['B websocket', wb], ['A upgraded', ua]]) {
      const m = `${who} ${i}`;
      await ack(s, 'message', m);
      want.push(m);
    }
  }
  for (const r of recs) await r.count(want.length);
  for (const r of recs) assert.deepEqual(texts(r), want);
  assert.equal(ua.io.engine.transport.name, 'websocket', 'the default client upgraded');
  await ack(elsewhere, 'message', 'other room');
  await quiet.until('other room');
  assert.deepEqual(texts(quiet), ['other room'], 'the other room heard only itself');
}));

// No sticky sessions: a polling session lives on the node that opened it (its sid names the
// node), and a request that reaches another node is passed on to it through Redis.
test('a polling client whose every request goes to the next node keeps its session and chats', {
  timeout: TEST_MS,
}, run(async () => {
  const lb = await startBalancer([nodeA.host, nodeB.host], 'round-robin');
  open.add(lb);
  const room = { room: 'round-robin' };
  const p = client(lb.url, { transports: ['polling'], query: room });
  const w = client(nodeA.url, { transports: ['websocket'], query: room });
  const rp = new Recorder(p, 'message');
  const rw = new Recorder(w, 'message');
  let drops = 0;
  p.on('disconnect', () => { drops += 1; });
  await Promise.all([connected(p), connected(w)]);
  const sid = p.io.engine.id;
  const want = [];
  for (let i = 0; i < 6; i++) {
    await ack(p, 'message', `p ${i}`);
    await ack(w, 'message', `w ${i}`);
    want.push(`p ${i}`, `w ${i}`);
  }
  await rp.count(want.length);
  await rw.count(want.length);
  assert.deepEqual(texts(rp), want);
  assert.deepEqual(texts(rw), want);
  assert.equal(p.io.engine.id, sid, 'one Engine.IO session throughout');
  assert.equal(drops, 0);
  assert.ok(lb.hits[0] > 2 && lb.hits[1] > 2, `requests reached both nodes: ${lb.hits}`);
}));

/**
 * Client X reaches node C through a failover balancer in front of C and B, and loses it: node C
 * is killed (`kill`, so it can save nothing on the way out), or X's connection is cut and the
 * balancer sends no more to C (`cut`, node C lives on). Y on node B says m4-m6 while X is away;
 * X reconnects through the balancer to node B and is recovered, hearing m4-m6 and then m7, each
 * once, in order. `auto`: X's own reconnection brings it back (the missed events may then arrive
 * before or after it is back); otherwise X waits and reconnects when they are all acked.
 */
async function moveNode({ room, transports, how, auto }) {
  const nodeC = await startServer(nodeArgs());
  extra.add(nodeC);
  const lb = await startBalancer([nodeC.host, nodeB.host], 'failover');
  open.add(lb);
  const x = client(lb.url, {
    transports, query: { room }, reconnection: auto, reconnectionDelay: REJOIN_MS, reconnectionDelayMax: REJOIN_MS,
  });
  const y = client(nodeB.url, { transports: ['websocket'], query: { room } });
  const rx = new Recorder(x, 'message');
  await Promise.all([connected(x), connected(y)]);
  assert.deepEqual(lb.hits, [lb.hits[0], 0], 'X is on node C');
  for (const m of ['m1', 'm2', 'm3']) await ack(y, 'message', m);
  await rx.count(3);
  const disconnected = once(x, 'disconnect', WAIT_MS, 'X to lose node C');
  const back = auto ? once(x.io, 'reconnect', WAIT_MS, 'X to reconnect') : null;
  if (how === 'kill') {
    await stop(nodeC.proc, 1_000, 'SIGKILL');
  } else {
    lb.down(0);
    lb.cut();
  }
  await disconnected;
  // Away as long as socket.io-client's shortest default reconnection delay (1 s, less up to 50%
  // at random), so node C has had the time a real client gives it to notice. A cut polling
  // session has no socket to lose: node C learns it is gone when no pong comes, and only a
  // session that is over is recovered.
  const polling = transports[0] === 'polling';
  const away = sleep(how === 'cut' && polling ? PING_INTERVAL + PING_TIMEOUT + 700 : REJOIN_MS);
  for (const m of ['m4', 'm5', 'm6']) await ack(y, 'message', m);
  await away;
  if (auto) await back;
  else x.connect();
  await connected(x);
  assert.ok(lb.hits[1] > 0, 'X is on node B now');
  assert.equal(x.recovered, true, 'recovered on another node');
  await ack(y, 'message', 'm7');
  await rx.until('m7');
  assert.deepEqual(texts(rx), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'], 'each once, in order');
}

for (const transports of [['websocket'], ['polling']]) {
  const name = transports[0];
  test(`recovery across nodes, ${name}: X's connection to node C is cut, X reconnects to node B, recovered, nothing missed or doubled`, { timeout: TEST_MS }, run(async () => {
    await moveNode({ room: `moves-${name}`, transports, how: 'cut', auto: false });
  }));

  test(`recovery across nodes, ${name}: X's node dies, X reconnects to node B, recovered, nothing missed or doubled`, { timeout: TEST_MS }, run(async () => {
    await moveNode({ room: `dies-${name}`, transports, how: 'kill', auto: false });
  }));
}

test('recovery across nodes, automatic reconnection (websocket): node C dies, X is back on node B by itself', { timeout: TEST_MS }, run(async () => {
  await moveNode({ room: 'dies-auto', transports: ['websocket'], how: 'kill', auto: true });
}));
