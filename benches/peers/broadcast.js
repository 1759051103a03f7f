// The broadcast server of the Node `ws` tutorials: every message to every open client, the
// sender included. Kept as plain as they write it: it is the baseline, not a tuned server.
// Usage: node broadcast.js [port] [deflate] (listens on 127.0.0.1). With `deflate`, ws's
// permessage-deflate is on with its defaults (`perMessageDeflate: true`, as its README shows):
// context takeover and a zlib stream per connection, messages of 1 KiB and up compressed.
import { WebSocketServer, WebSocket } from 'ws';

const port = Number(process.argv[2] ?? 8080);
const perMessageDeflate = process.argv[3] === 'deflate';
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate });

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

wss.on('listening', () => console.error(`listening on ws://127.0.0.1:${port}/`));
