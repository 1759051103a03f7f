// The socket.io tutorial's chat server, one process, no adapter: socket.io 4 as its "get
// started" writes it, every "message" event re-emitted to every connected client (io.emit, the
// sender included). socketio-cluster.js is the same with the Redis adapter.
// Usage: node socketio.js PORT (listens on 127.0.0.1)
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2] ?? 3000);

const httpServer = createServer();
const io = new Server(httpServer);

io.on('connection', (socket) => {
  socket.on('message', (m) => {
    io.emit('message', m);
  });
});

httpServer.listen(port, '127.0.0.1', () =>
  console.error(`listening on ws://127.0.0.1:${port}/socket.io/`));
