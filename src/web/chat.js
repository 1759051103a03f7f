// wsrelay chat client. User-supplied text is only ever inserted with
// textContent / text nodes, never parsed as HTML.
(function () {
  "use strict";

  var MAX_NAME = 64;
  var MAX_MSG = 4000;
  var BACKOFF_MIN = 500;
  var BACKOFF_MAX = 10000;
  var MAX_LINES = 500;

  var log = document.getElementById("log");
  var form = document.getElementById("compose");
  var nameInput = document.getElementById("name");
  var msgInput = document.getElementById("msg");
  var statusEl = document.getElementById("status");
  var statusText = document.getElementById("status-text");
  var countEl = document.getElementById("count");

  var ws = null;
  var backoff = BACKOFF_MIN;
  var retryTimer = null;

  // Code-point aware truncation so a surrogate pair is never split.
  function clip(s, n) {
    var chars = Array.from(s);
    return chars.length > n ? chars.slice(0, n).join("") : s;
  }

  function setStatus(state, text) {
    statusEl.setAttribute("data-state", state);
    statusText.textContent = text;
  }

  function setCount(n) {
    countEl.textContent = typeof n === "number" && isFinite(n) ? "· " + n + " online" : "";
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  }

  function addLine(kind, build) {
    var stick = nearBottom();
    var line = document.createElement("div");
    line.className = "line " + kind;
    build(line);
    log.appendChild(line);
    while (log.children.length > MAX_LINES) log.removeChild(log.firstElementChild);
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function addText(kind, text) {
    addLine(kind, function (line) { line.textContent = text; });
  }

  function addMessage(name, msg) {
    addLine("message", function (line) {
      var who = document.createElement("span");
      who.className = "name";
      who.textContent = name;
      var body = document.createElement("span");
      body.className = "text";
      body.textContent = msg;
      line.appendChild(who);
      line.appendChild(document.createTextNode(": "));
      line.appendChild(body);
    });
  }

  function str(v) { return v == null ? "" : String(v); }

  // Remember the chosen name across reloads (best effort; storage may be off).
  try { nameInput.value = localStorage.getItem("wsrelay.name") || ""; } catch (e) { /* ignore */ }
  function saveName() {
    try { localStorage.setItem("wsrelay.name", nameInput.value.trim()); } catch (e) { /* ignore */ }
  }

  function currentName() {
    var n = nameInput.value.trim();
    return n ? clip(n, MAX_NAME) : "Anonymous";
  }

  function handle(data) {
    var m;
    try { m = JSON.parse(data); } catch (e) { return; }
    if (!m || typeof m !== "object") return;
    if (m.type === "message") {
      addMessage(str(m.name), str(m.msg));
    } else if (m.type === "notification") {
      if (typeof m.count === "number") setCount(m.count);
      addText("notice " + (m.event === "leave" ? "leave" : "join"), str(m.msg));
    } else if (m.type === "error") {
      addText("error", "Error: " + str(m.msg));
    }
  }

  function connect() {
    retryTimer = null;
    setStatus("connecting", "Connecting…");
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    try {
      ws = new WebSocket(proto + location.host + "/");
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws.addEventListener("open", function () {
      backoff = BACKOFF_MIN;
      setStatus("connected", "Connected");
    });
    ws.addEventListener("message", function (ev) {
      if (typeof ev.data === "string") handle(ev.data);
    });
    ws.addEventListener("close", function () {
      ws = null;
      setCount(null);
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    if (retryTimer) return;
    var delay = backoff + Math.floor(Math.random() * backoff / 2);
    backoff = Math.min(backoff * 2, BACKOFF_MAX);
    setStatus("disconnected", "Disconnected, retrying in " + Math.ceil(delay / 1000) + " s");
    retryTimer = setTimeout(connect, delay);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var msg = msgInput.value;
    if (!msg.trim()) return;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      addText("error", "Not connected; message not sent.");
      return;
    }
    ws.send(JSON.stringify({ name: currentName(), msg: clip(msg, MAX_MSG) }));
    saveName();
    msgInput.value = "";
    msgInput.focus();
    log.scrollTop = log.scrollHeight; // own message: jump to the newest line
  });

  connect();
})();
