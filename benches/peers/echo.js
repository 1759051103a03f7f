// The echo variant of the tutorial server: every message back to its sender.
// Usage: node echo.js [port] (listens on 127.0.0.1)
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? 8080);
const wss = new WebSocketServer({ host: '127.0.0.1', port });

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});

wss.on('listening', () => console.error(`listening on ws://127.0.0.1:${port}/`));
