// wsrelay chat client. User-supplied text is only ever inserted with
// textContent / text nodes, never parsed as HTML.
//
// Transports: a WebSocket to /<room>, or, where WebSocket is missing or keeps failing, HTTP long
// polling (GET /poll, POST /send). Either way the client keeps a cursor (the room's epoch and
// the last sequence number shown), resumes from it after a reconnect, and drops any event it
// has already shown, so nothing is lost or doubled across reconnects.
(function () {
  "use strict";

  var MAX_NAME = 64;
  var MAX_MSG = 4000;
  var BACKOFF_MIN = 500;
  var BACKOFF_MAX = 10000;
  var MAX_LINES = 500;
  // WebSocket attempts that fail without ever opening before falling back to long polling.
  var WS_FAILURES_BEFORE_POLLING = 3;
  var ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
  var BAD_ROOM = "Room names are 1-64 letters, digits, '.', '_' or '-' (not '.' or '..').";
  var DEFAULT_ROOM = "main";

  var log = document.getElementById("log");
  var form = document.getElementById("compose");
  var nameInput = document.getElementById("name");
  var msgInput = document.getElementById("msg");
  var statusEl = document.getElementById("status");
  var statusText = document.getElementById("status-text");
  var countEl = document.getElementById("count");
  var transportEl = document.getElementById("transport");
  var roomForm = document.getElementById("room-form");
  var roomInput = document.getElementById("room");

  var room = roomFromLocation();
  // The room the server's welcome named: what the status line shows, never the URL's guess.
  var welcomedRoom = "";
  var cursor = { epoch: null, seq: 0 };
  var usePolling = typeof window.WebSocket !== "function";
  var wsFailures = 0;
  var ws = null;
  var backoff = BACKOFF_MIN;
  var retryTimer = null;
  // Bumped whenever the room changes, so answers for the old room are ignored.
  var generation = 0;
  var clientId = randomId();
  // The long poll in flight, to abort when the room changes.
  var pollAbort = null;
  // The last close reason shown, so a server that keeps refusing is not repeated.
  var lastReason = "";

  function randomId() {
    var bytes = new Uint8Array(8);
    if (window.crypto && window.crypto.getRandomValues) window.crypto.getRandomValues(bytes);
    else for (var i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  // The server's rule; "." and ".." also because a URL path drops them (ws://host/.. is /).
  function validRoom(r) {
    return ROOM_RE.test(r) && r !== "." && r !== "..";
  }

  function roomFromLocation() {
    var r = new URLSearchParams(location.search).get("room");
    return r && validRoom(r) ? r : DEFAULT_ROOM;
  }

  // Code-point aware truncation so a surrogate pair is never split.
  function clip(s, n) {
    var chars = Array.from(s);
    return chars.length > n ? chars.slice(0, n).join("") : s;
  }

  function setStatus(state, text) {
    statusEl.setAttribute("data-state", state);
    statusText.textContent = text;
  }

  function setTransport(name) {
    transportEl.textContent = name ? "via " + name : "";
    statusEl.setAttribute("data-transport", name || "");
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

  function addMessage(name, msg, extra) {
    addLine("message" + extra, function (line) {
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

  // One event from either transport.
  function handle(m) {
    if (!m || typeof m !== "object") return;
    if (m.type === "welcome") {
      if (m.epoch !== cursor.epoch) cursor = { epoch: str(m.epoch), seq: 0 };
      welcomedRoom = str(m.room);
      if (statusEl.getAttribute("data-state") === "connected") {
        setStatus("connected", "Connected to " + welcomedRoom);
      }
      return;
    }
    if (typeof m.seq === "number") {
      if (m.seq <= cursor.seq) return; // shown already (before a reconnect)
      cursor.seq = m.seq;
    }
    var extra = m.history ? " history" : "";
    if (m.type === "message") {
      addMessage(str(m.name), str(m.msg), extra);
    } else if (m.type === "notification") {
      if (typeof m.count === "number" && !m.history) setCount(m.count);
      addText("notice " + (m.event === "leave" ? "leave" : "join") + extra, str(m.msg));
    } else if (m.type === "gap") {
      // With a range, events were lost for good (the cursor moves past them); without, the
      // room started over.
      if (typeof m.to === "number") cursor.seq = Math.max(cursor.seq, m.to);
      else cursor.seq = 0; // the history that follows is all new to this page
      addText(typeof m.from === "number" ? "notice gap" : "notice restart", str(m.msg));
    } else if (m.type === "error") {
      addText("error", "Error: " + str(m.msg));
    }
  }

  // Handles one WebSocket message; returns whether it was the welcome.
  function handleText(data) {
    var m;
    try { m = JSON.parse(data); } catch (e) { return false; }
    handle(m);
    return !!m && m.type === "welcome";
  }

  function cursorQuery(sep) {
    return cursor.epoch === null ? "" :
      sep + "since=" + cursor.seq + "&epoch=" + encodeURIComponent(cursor.epoch);
  }

  function connected(name) {
    backoff = BACKOFF_MIN;
    setTransport(name);
    setStatus("connected", welcomedRoom ? "Connected to " + welcomedRoom : "Connected");
  }

  function connect() {
    retryTimer = null;
    setStatus("connecting", "Connecting…");
    if (usePolling) {
      poll(generation);
      return;
    }
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    // Only a socket that got as far as the welcome counts as working.
    var welcomed = false;
    var socket;
    try {
      socket = new WebSocket(proto + location.host + "/" + encodeURIComponent(room) + cursorQuery("?"));
    } catch (e) {
      wsFailed();
      return;
    }
    ws = socket;
    socket.addEventListener("open", function () {
      connected("WebSocket");
    });
    socket.addEventListener("message", function (ev) {
      if (socket === ws && typeof ev.data === "string" && handleText(ev.data)) {
        welcomed = true;
        wsFailures = 0;
      }
    });
    socket.addEventListener("close", function (ev) {
      if (socket !== ws) return; // replaced after a room change
      ws = null;
      setCount(null);
      // A refusal after the upgrade (1008 bad room name, 1013 too many rooms) says why.
      if (ev.reason && ev.reason !== lastReason) {
        lastReason = ev.reason;
        addText("error", "Disconnected: " + ev.reason + " (" + ev.code + ")");
      }
      if (welcomed) scheduleReconnect();
      else wsFailed();
    });
  }

  function wsFailed() {
    wsFailures += 1;
    if (wsFailures >= WS_FAILURES_BEFORE_POLLING) usePolling = true;
    scheduleReconnect();
  }

  // One long poll; the next starts when it answers, so there is always one waiting.
  function poll(gen) {
    var url = "/poll?room=" + encodeURIComponent(room) + "&client=" + clientId + cursorQuery("&");
    var abort = typeof AbortController === "function" ? new AbortController() : null;
    pollAbort = abort;
    // A poll that is up to date waits for news: if it has not failed within a second, the
    // server is there.
    var settled = false;
    setTimeout(function () {
      if (!settled && gen === generation) connected("long polling");
    }, 1000);
    fetch(url, { cache: "no-store", signal: abort ? abort.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (events) {
        settled = true;
        if (gen !== generation) return;
        connected("long polling");
        if (Array.isArray(events)) events.forEach(handle);
        poll(gen);
      })
      .catch(function () {
        settled = true;
        if (gen !== generation) return;
        setCount(null);
        scheduleReconnect();
      });
  }

  function scheduleReconnect() {
    if (retryTimer) return;
    // Jittered exponential backoff, so a restarted server is not hit by every client at once.
    var delay = backoff + Math.floor(Math.random() * backoff);
    backoff = Math.min(backoff * 2, BACKOFF_MAX);
    setStatus("disconnected", "Disconnected, reconnecting in " + Math.ceil(delay / 1000) + " s");
    retryTimer = setTimeout(connect, delay);
  }

  function send(payload) {
    if (usePolling) {
      fetch("/send?room=" + encodeURIComponent(room), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      })
        .then(function (r) {
          if (r.ok) return null;
          return r.json().then(handle, function () { addText("error", "Error: HTTP " + r.status); });
        })
        .catch(function () { addText("error", "Not connected; message not sent."); });
      return true;
    }
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(payload));
    return true;
  }

  function showRoom() {
    roomInput.value = room;
    document.title = room === DEFAULT_ROOM ? "wsrelay chat" : room + " · wsrelay chat";
  }

  function switchRoom(next) {
    if (next === room) return;
    room = next;
    welcomedRoom = "";
    generation += 1;
    cursor = { epoch: null, seq: 0 };
    var url = new URL(location.href);
    if (room === DEFAULT_ROOM) url.searchParams.delete("room");
    else url.searchParams.set("room", room);
    history.pushState(null, "", url);
    showRoom();
    while (log.firstChild) log.removeChild(log.firstChild);
    setCount(null);
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    var old = ws;
    ws = null;
    if (old) old.close();
    // A held poll of the old room would keep a connection (browsers allow six per host).
    if (pollAbort) pollAbort.abort();
    pollAbort = null;
    lastReason = "";
    backoff = BACKOFF_MIN;
    connect();
  }

  roomForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var next = roomInput.value.trim() || DEFAULT_ROOM;
    if (!validRoom(next)) {
      addText("error", BAD_ROOM);
      return;
    }
    switchRoom(next);
  });

  window.addEventListener("popstate", function () { switchRoom(roomFromLocation()); });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var msg = msgInput.value;
    if (!msg.trim()) return;
    if (!send({ name: currentName(), msg: clip(msg, MAX_MSG) })) {
      addText("error", "Not connected; message not sent.");
      return;
    }
    saveName();
    msgInput.value = "";
    msgInput.focus();
    log.scrollTop = log.scrollHeight; // own message: jump to the newest line
  });

  var asked = new URLSearchParams(location.search).get("room");
  if (asked && !validRoom(asked)) addText("error", BAD_ROOM + " Showing " + DEFAULT_ROOM + ".");
  showRoom();
  connect();
})();
