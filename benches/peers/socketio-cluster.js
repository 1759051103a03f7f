// The socket.io tutorials' scale-out: socket.io 4 with @socket.io/redis-adapter over the
// `redis` client, one process per port; run two of them on one Redis and a message sent to
// either reaches the clients of both. Kept as plain as the tutorials write it: every "message"
// event goes to every connected client (io.emit, the sender included), across processes
// through Redis pub/sub. Clients here are WebSocket-only, so no sticky sessions are needed.
// Usage: node socketio-cluster.js PORT REDIS_URL (listens on 127.0.0.1)
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';

const port = Number(process.argv[2] ?? 3000);
const url = process.argv[3] ?? 'redis://127.0.0.1:6379';

const pubClient = createClient({ url });
const subClient = pubClient.duplicate();
pubClient.on('error', console.error);
subClient.on('error', console.error);
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = createServer();
const io = new Server(httpServer, { adapter: createAdapter(pubClient, subClient) });

io.on('connection', (socket) => {
  socket.on('message', (m) => {
    io.emit('message', m);
  });
});

httpServer.listen(port, '127.0.0.1', () =>
  console.error(`listening on ws://127.0.0.1:${port}/socket.io/ (redis ${url})`));
