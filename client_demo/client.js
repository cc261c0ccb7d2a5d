// flamecast browser client: no build step, no dependencies.
// The API is documented in docs/api.md. A token (servers bound off loopback) comes from the
// page URL (#token=... or ?token=...) and is kept in localStorage.

const params = new URLSearchParams(location.search + "&" + location.hash.slice(1));
const TOKEN_KEY = "flamecast-token";
if (params.get("token")) localStorage.setItem(TOKEN_KEY, params.get("token"));
const token = () => localStorage.getItem(TOKEN_KEY) || "";

// ---------------------------------------------------------------------------------- API --

async function api(method, path, body) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let payload;
  if (body instanceof FormData || body instanceof Blob) payload = body;
  else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const resp = await fetch(path, { method, headers, body: payload });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(data.error || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function withToken(path) {
  return token() ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token())}` : path;
}

function waitIceGathering(pc, ms = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms); // loopback/LAN candidates come at once; do not hang on STUN
  });
}

// ------------------------------------------------------------------- latency matching --
// The server sends {"type":"frame","pts","capture_ns"} per driving frame; a video frame's RTP
// timestamp is pts plus a constant the sender picked. The constant is the one offset every
// frame agrees on; once found, each frame maps back to its capture time.

class LatencyMatcher {
  constructor() { this.sent = new Map(); this.offset = null; this.votes = new Map(); this.samples = []; this.all = []; }
  onSent(pts, captureNs) {
    this.sent.set(pts, captureNs);
    if (this.sent.size > 512) this.sent.delete(this.sent.keys().next().value);
  }
  onFrame(rtpTimestamp, wallMs) {
    if (rtpTimestamp === undefined) return null;
    if (this.offset === null) { this.vote(rtpTimestamp); return null; }
    const pts = (rtpTimestamp - this.offset) >>> 0;
    // one tick of rounding may separate the sent pts from the RTP timestamp
    const capture = this.sent.get(pts) ?? this.sent.get((pts - 1) >>> 0) ?? this.sent.get((pts + 1) >>> 0);
    if (capture === undefined) return null;
    const ms = wallMs - capture / 1e6;
    this.samples.push(ms);
    this.all.push(ms);
    if (this.samples.length > 256) this.samples.shift();
    if (this.all.length > 100000) this.all.length = 0;
    return ms;
  }
  vote(rtp) {
    for (const pts of this.sent.keys()) {
      const off = (rtp - pts) >>> 0;
      this.votes.set(off, (this.votes.get(off) || 0) + 1);
    }
    const ranked = [...this.votes.entries()].sort((a, b) => b[1] - a[1]);
    if (ranked.length && ranked[0][1] >= 3 && (ranked.length < 2 || ranked[0][1] > ranked[1][1])) this.offset = ranked[0][0];
  }
  percentile(q) {
    if (!this.samples.length) return null;
    const s = [...this.samples].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
  }
}

// --------------------------------------------------------------------------- viewer --
// One peer connection to one session, receiving `tracks`, optionally sending mic/camera.

export class Viewer {
  constructor(sessionId, tracks, { codec = "", send = null, audio = false, onState = () => {}, onEvent = () => {} } = {}) {
    Object.assign(this, { sessionId, tracks, codec, send, audio, onState, onEvent });
    this.videos = new Map(); // track name -> MediaStream
    this.matchers = new Map(tracks.map((t) => [t, new LatencyMatcher()]));
    this.frameCounts = new Map(tracks.map((t) => [t, 0]));
    this.pendingReport = [];
    this.closed = false;
  }

  async connect() {
    const pc = (this.pc = new RTCPeerConnection());
    const transceivers = this.tracks.map(() => pc.addTransceiver("video", { direction: "recvonly" }));
    // live video: ask the browser's jitter buffer to hold as little as it can
    for (const t of transceivers) {
      if ("jitterBufferTarget" in t.receiver) t.receiver.jitterBufferTarget = 0;
      else if ("playoutDelayHint" in t.receiver) t.receiver.playoutDelayHint = 0;
    }
    // the session's audio (drivers that pass audio through), before any sending transceiver
    const audio = this.audio ? pc.addTransceiver("audio", { direction: "recvonly" }) : null;
    if (this.send) for (const track of this.send.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
    this.channel = pc.createDataChannel("flamecast");
    this.channel.onmessage = (ev) => this.onMessage(ev.data);
    pc.onconnectionstatechange = () => this.onState(pc.connectionState);
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc);
    const body = { sdp: pc.localDescription.sdp, type: "offer", tracks: this.tracks };
    if (this.codec) body.codec = this.codec;
    const answer = await api("POST", `/api/sessions/${this.sessionId}/offer`, body);
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    this.tracks.forEach((name, i) => this.videos.set(name, new MediaStream([transceivers[i].receiver.track])));
    this.audioStream = audio ? new MediaStream([audio.receiver.track]) : null;
    this.reportTimer = setInterval(() => this.flushReport(), 1000);
    return this.videos;
  }

  onMessage(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (msg.type === "frame") for (const m of this.matchers.values()) m.onSent(msg.pts, msg.capture_ns);
    else this.onEvent(msg);
  }

  // Count decoded frames and measure latency on a <video> playing track `name`.
  watch(name, video) {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const matcher = this.matchers.get(name);
    const onFrame = (now, meta) => {
      if (this.closed) return;
      this.frameCounts.set(name, this.frameCounts.get(name) + 1);
      const wall = performance.timeOrigin + (meta.presentationTime || now);
      const ms = matcher.onFrame(meta.rtpTimestamp, wall);
      if (ms !== null && ms >= 0 && ms < 60000) this.pendingReport.push(ms);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  flushReport() {
    if (this.pendingReport.length && this.channel.readyState === "open") {
      this.channel.send(JSON.stringify({ type: "latency", ms: this.pendingReport.splice(0, 256) }));
    }
    this.pendingReport.length = 0;
  }

  latency() {
    const all = new LatencyMatcher();
    for (const m of this.matchers.values()) all.samples.push(...m.samples.slice(-64));
    return { p50: all.percentile(0.5), p95: all.percentile(0.95) };
  }

  close() {
    this.closed = true;
    clearInterval(this.reportTimer);
    if (this.pc) this.pc.close();
  }
}

// ----------------------------------------------------------------------- OBS page --

export function watchOne(video, query) {
  const session = query.get("session");
  const view = query.get("view") || "mosaic";
  if (!session) { document.body.textContent = "add ?session=ID&view=NAME to the URL"; return; }
  let viewer = null;
  const start = async () => {
    try {
      viewer = new Viewer(session, [view], {
        onState: (state) => { if (state === "failed" || state === "closed") retry(); },
      });
      const streams = await viewer.connect();
      video.srcObject = streams.get(view);
      await video.play().catch(() => {});
    } catch (err) {
      console.warn("flamecast:", err.message);
      retry();
    }
  };
  let timer = null;
  const retry = () => {
    if (timer) return;
    if (viewer) viewer.close();
    timer = setTimeout(() => { timer = null; start(); }, 2000);
  };
  start();
}

// ------------------------------------------------------------------------ main page --

const $ = (id) => document.getElementById(id);
const state = { plugins: null, portraitId: "", session: null, viewer: null, socket: null, mic: false, cam: false,
                media: null, stopping: false, retries: 0 };

function showError(err) {
  const el = $("error");
  el.hidden = !err;
  el.textContent = err ? (err.message || String(err)) : "";
}

function setStatus(text, live = false) {
  $("status").textContent = text;
  $("status").classList.toggle("live", live);
}

async function loadPlugins() {
  state.plugins = await api("GET", "/api/plugins");
  const select = $("driver");
  select.innerHTML = "";
  for (const d of state.plugins.drivers) select.add(new Option(d.name, d.name, d.name === "idle", d.name === "idle"));
  select.onchange = renderDriverOptions;
  renderDriverOptions();
}

function currentDriver() {
  return state.plugins.drivers.find((d) => d.name === $("driver").value);
}

// Render the driver's JSON schema (pydantic) as form fields.
function renderDriverOptions() {
  const driver = currentDriver();
  $("driver-description").textContent = driver ? driver.description : "";
  const form = $("driver-options");
  form.innerHTML = "";
  if (!driver) return;
  const schema = driver.options || {};
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const label = document.createElement("label");
    label.title = prop.description || "";
    label.append(prop.title || name);
    const input = fieldFor(prop, schema);
    input.name = name;
    label.append(input);
    form.append(label);
  }
  $("mic").disabled = !(driver.needs_audio && state.session);
  $("cam").disabled = !(driver.needs_video && state.session);
}

function fieldFor(prop, schema) {
  const ref = prop.$ref || (prop.allOf && prop.allOf[0] && prop.allOf[0].$ref);
  if (ref) prop = { ...schema.$defs[ref.split("/").pop()], ...prop };
  let input;
  if (prop.enum) {
    input = document.createElement("select");
    for (const v of prop.enum) input.add(new Option(v, v, v === prop.default, v === prop.default));
  } else if (prop.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = !!prop.default;
  } else if (prop.type === "number" || prop.type === "integer") {
    input = document.createElement("input");
    input.type = "number";
    input.step = prop.type === "integer" ? "1" : "any";
    for (const [k, attr] of [["minimum", "min"], ["exclusiveMinimum", "min"], ["maximum", "max"], ["exclusiveMaximum", "max"]]) {
      if (prop[k] !== undefined) input[attr] = prop[k];
    }
    if (prop.default !== undefined) input.value = prop.default;
  } else {
    input = document.createElement("input");
    input.type = "text";
    if (prop.default !== undefined && prop.default !== null) input.value = prop.default;
  }
  input.dataset.type = prop.enum ? "enum" : prop.type || "string";
  return input;
}

function driverOptions() {
  const out = {};
  for (const input of $("driver-options").elements) {
    const t = input.dataset.type;
    if (t === "boolean") out[input.name] = input.checked;
    else if (input.value === "") continue;
    else if (t === "number" || t === "integer") out[input.name] = Number(input.value);
    else out[input.name] = input.value;
  }
  return out;
}

async function loadPortraits() {
  const { portraits } = await api("GET", "/api/portraits");
  const box = $("portraits");
  box.querySelectorAll("[data-id]:not([data-id=''])").forEach((el) => el.remove());
  for (const p of portraits) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "portrait";
    b.dataset.id = p.id;
    const img = document.createElement("img");
    img.src = withToken(`/api/portraits/${p.id}`);
    img.alt = `portrait ${p.id}`;
    b.append(img);
    box.append(b);
  }
  selectPortrait(state.portraitId);
}

function selectPortrait(id) {
  state.portraitId = id;
  for (const el of $("portraits").querySelectorAll("[data-id]")) el.classList.toggle("selected", el.dataset.id === id);
}

async function uploadPortrait(file) {
  $("portrait-error").hidden = true;
  try {
    const p = await api("POST", "/api/portraits", file);
    state.portraitId = p.id;
    await loadPortraits();
  } catch (err) {
    $("portrait-error").hidden = false;
    $("portrait-error").textContent = err.message;
  }
}

function requestedTracks(session) {
  const layout = $("layout").value;
  if (layout === "mosaic") return ["mosaic"];
  if (layout === "single") return [$("view").value || session.views[0]];
  return session.views;
}

async function start() {
  showError(null);
  $("start").disabled = true;
  try {
    const body = { driver: $("driver").value, options: driverOptions() };
    if (state.portraitId) body.portrait_id = state.portraitId;
    if (params.get("views")) body.views = params.get("views").split(","); // e.g. ?views=front: render only that
    setStatus("opening the session...");
    state.session = await api("POST", "/api/sessions", body);
    state.stopping = false;
    fillViews(state.session.views);
    await connect();
    openEvents();
    for (const id of ["stop", "apply-driver", "send-prompt", "interrupt"]) $(id).disabled = false;
    renderDriverOptions();
    $("obs-link").textContent = `OBS: ${location.origin}/obs.html?session=${state.session.id}&view=${state.session.views[0]}`;
  } catch (err) {
    showError(err);
    setStatus("not connected");
    state.session = null;
    $("start").disabled = false;
  }
}

function fillViews(views) {
  const select = $("view");
  const keep = select.value;
  select.innerHTML = "";
  for (const v of views) select.add(new Option(v, v, v === keep, v === keep));
}

async function connect() {
  if (state.viewer) state.viewer.close();
  const tracks = requestedTracks(state.session);
  const viewer = new Viewer(state.session.id, tracks, {
    codec: $("codec").value,
    send: state.media,
    audio: !!(currentDriver() && currentDriver().provides_audio),
    onState: (s) => onConnectionState(viewer, s),
    onEvent: showEvent,
  });
  state.viewer = viewer;
  setStatus("connecting...");
  const streams = await viewer.connect();
  const box = $("videos");
  box.innerHTML = "";
  for (const [name, stream] of streams) {
    const fig = document.createElement("figure");
    const video = document.createElement("video");
    Object.assign(video, { autoplay: true, muted: true, playsInline: true, srcObject: stream });
    video.dataset.track = name;
    const cap = document.createElement("figcaption");
    cap.textContent = name;
    fig.append(video, cap);
    box.append(fig);
    viewer.watch(name, video);
    video.play().catch(() => {});
  }
  if (viewer.audioStream) {
    const audio = document.createElement("audio");
    Object.assign(audio, { autoplay: true, srcObject: viewer.audioStream });
    box.append(audio);
    audio.play().catch(() => {});
  }
  $("overlay").hidden = false;
}

function onConnectionState(viewer, s) {
  if (viewer !== state.viewer) return;
  if (s === "connected") { setStatus(`live: session ${state.session.id}`, true); state.retries = 0; }
  else setStatus(s);
  if ((s === "failed" || s === "disconnected" || s === "closed") && !state.stopping) scheduleReconnect();
}

// Reconnect after a failure: a new offer to the same session, or a new session if it ended.
function scheduleReconnect() {
  if (state.reconnectTimer) return;
  const delay = Math.min(10000, 1000 * 2 ** state.retries++);
  setStatus(`reconnecting in ${Math.round(delay / 1000)} s...`);
  state.reconnectTimer = setTimeout(async () => {
    state.reconnectTimer = null;
    try {
      await api("GET", `/api/sessions/${state.session.id}`);
      await connect();
    } catch (err) {
      if (err.status === 404) { closeSession(false); await start(); }
      else scheduleReconnect();
    }
  }, delay);
}

function openEvents() {
  if (state.socket) state.socket.close();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(withToken(`${proto}://${location.host}/api/sessions/${state.session.id}/events`));
  state.socket = ws;
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "stats") renderStats(msg);
    else if (msg.type === "reply") $("input-reply").textContent = msg.error || "ok";
    else showEvent(msg);
  };
  ws.onclose = () => {
    if (state.socket === ws && state.session && !state.stopping) setTimeout(() => state.session && openEvents(), 2000);
  };
}

function renderStats(msg) {
  const s = msg.stats;
  const fmt = (v) => (v === null || v === undefined ? "-" : `${Math.round(v)}`);
  const local = state.viewer ? state.viewer.latency() : {};
  $("overlay").textContent =
    `fps ${s.fps_out.toFixed(1)}  drops ${s.dropped}\n` +
    `latency p50 ${fmt(local.p50 ?? s.client_latency_ms.p50)} p95 ${fmt(local.p95 ?? s.client_latency_ms.p95)} ms\n` +
    `server  p50 ${fmt(s.latency_ms.p50)} p95 ${fmt(s.latency_ms.p95)} ms\n` +
    `driver ${msg.driver} (${s.driver_state})  restarts ${s.driver_restarts}` +
    (s.last_error ? `\nlast error: ${s.last_error}` : "");
}

function showEvent(msg) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${msg.type}: ${JSON.stringify(msg.event || msg.error || msg.driver || msg.reason || "")}`;
  $("events").prepend(li);
  while ($("events").children.length > 30) $("events").lastChild.remove();
  if (msg.type === "closed" && !state.stopping) { showError(new Error(`the session ended (${msg.reason})`)); closeSession(false); }
}

function closeSession(remote = true) {
  state.stopping = true;
  const session = state.session;
  if (state.viewer) state.viewer.close();
  if (state.socket) state.socket.close();
  state.viewer = state.socket = state.session = null;
  if (remote && session) api("DELETE", `/api/sessions/${session.id}`).catch(() => {});
  $("start").disabled = false;
  for (const id of ["stop", "apply-driver", "send-prompt", "interrupt", "mic", "cam"]) $(id).disabled = true;
  $("overlay").hidden = true;
  setStatus("not connected");
}

async function sendInput(message) {
  try {
    const reply = await api("POST", `/api/sessions/${state.session.id}/input`, message);
    $("input-reply").textContent = reply.reply && Object.keys(reply.reply).length ? JSON.stringify(reply.reply) : "ok";
  } catch (err) {
    $("input-reply").textContent = err.message;
  }
}

// Microphone / camera: a new offer that also sends the device's track.
async function toggleDevice(kind) {
  state[kind] = !state[kind];
  $(kind).setAttribute("aria-pressed", String(state[kind]));
  if (state.media) state.media.getTracks().forEach((t) => t.stop());
  state.media = null;
  try {
    if (state.mic || state.cam) state.media = await navigator.mediaDevices.getUserMedia({ audio: state.mic, video: state.cam });
    await connect();
  } catch (err) {
    showError(err);
  }
}

function main() {
  window.flamecast = state; // for debugging and bench/browser_latency.py
  $("start").onclick = start;
  $("stop").onclick = () => closeSession(true);
  $("apply-driver").onclick = async () => {
    await sendInput({ kind: "driver", driver: $("driver").value, options: driverOptions() });
    renderDriverOptions();
    // a driver that passes audio through needs an audio track: renegotiate when that changes
    if (state.viewer && state.viewer.audio !== !!currentDriver().provides_audio) await connect();
  };
  $("prompt-form").onsubmit = (ev) => { ev.preventDefault(); sendInput({ kind: "prompt", text: $("prompt").value }); };
  $("interrupt").onclick = () => sendInput({ kind: "interrupt" });
  $("mic").onclick = () => toggleDevice("mic");
  $("cam").onclick = () => toggleDevice("cam");
  $("layout").onchange = () => { $("view-label").hidden = $("layout").value !== "single"; if (state.session) connect(); };
  $("view").onchange = () => { if (state.session) connect(); };
  $("portrait-file").onchange = (ev) => ev.target.files[0] && uploadPortrait(ev.target.files[0]);
  $("portraits").onclick = (ev) => { const b = ev.target.closest("[data-id]"); if (b) selectPortrait(b.dataset.id); };
  window.addEventListener("beforeunload", () => closeSession(true));
  Promise.all([loadPlugins(), loadPortraits()]).catch(showError);
}

if (document.getElementById("controls")) main();
