// broadcast.js over TLS, as the `ws` README shows for wss://: an `https.createServer` with the
// certificate and key, the WebSocketServer on it, every message to every open client.
// Usage: node broadcast-tls.js PORT CERT KEY (listens on 127.0.0.1).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { WebSocketServer, WebSocket } from 'ws';

const [port, cert, key] = [Number(process.argv[2] ?? 8443), process.argv[3], process.argv[4]];
const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) });
const wss = new WebSocketServer({ server });

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

server.listen(port, '127.0.0.1', () => console.error(`listening on wss://127.0.0.1:${port}/`));
