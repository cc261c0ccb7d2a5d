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

// ------------------------------------------------------------------ transparency --
// A transparent session's tracks carry each picture packed side by side: colour on the left,
// the matte (white = avatar) on the right. MatteView draws such a video into a canvas with the
// matte as alpha (WebGL; a 2D canvas where WebGL is missing). Whether a track is packed is
// read from its geometry: twice as wide as the session's pictures (see isPacked).

export function isPacked(session, track, width, height) {
  if (!session || !session.size || session.size.length < 2 || !width || !height) return false;
  let [h, w] = session.size;
  if (track === "mosaic") {
    const v = session.views.length, cols = Math.ceil(Math.sqrt(v));
    w *= cols; h *= Math.ceil(v / cols);
  }
  return Math.abs(width / height - 2 * (w / h)) < 0.05 * (w / h);
}

const VERT = "attribute vec2 p; varying vec2 uv; void main(){ uv = vec2((p.x+1.0)/2.0, (1.0-p.y)/2.0); gl_Position = vec4(p,0.0,1.0); }";
const FRAG = "precision mediump float; uniform sampler2D t; varying vec2 uv;" +
  "void main(){ vec3 c = texture2D(t, vec2(uv.x*0.5, uv.y)).rgb; float a = texture2D(t, vec2(0.5+uv.x*0.5, uv.y)).r;" +
  " a = clamp((a-0.06)/0.88, 0.0, 1.0); gl_FragColor = vec4(c*a, a); }";

export class MatteView {
  constructor(video, canvas) {
    this.video = video; this.canvas = canvas; this.running = true;
    this.gl = canvas.getContext("webgl", { premultipliedAlpha: true, alpha: true });
    if (this.gl) this.setupGl(); else this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.scratch = this.gl ? null : document.createElement("canvas");
    this.loop();
  }
  setupGl() {
    const gl = this.gl;
    const shader = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; };
    const prog = gl.createProgram();
    gl.attachShader(prog, shader(gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    gl.useProgram(prog);
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const loc = gl.getAttribLocation(prog, "p");
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    gl.bindTexture(gl.TEXTURE_2D, gl.createTexture());
    for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
                          [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) gl.texParameteri(gl.TEXTURE_2D, k, v);
  }
  draw() {
    const v = this.video, w = v.videoWidth >> 1, h = v.videoHeight;
    if (!w || !h || v.readyState < 2) return;
    if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
    if (this.gl) {
      const gl = this.gl;
      gl.viewport(0, 0, w, h);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, v);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
      return;
    }
    const s = this.scratch;
    if (s.width !== 2 * w || s.height !== h) { s.width = 2 * w; s.height = h; }
    const sc = s.getContext("2d", { willReadFrequently: true });
    sc.drawImage(v, 0, 0);
    const colour = sc.getImageData(0, 0, w, h), matte = sc.getImageData(w, 0, w, h);
    for (let i = 0; i < colour.data.length; i += 4) {
      colour.data[i + 3] = Math.max(0, Math.min(255, (matte.data[i] - 15) * 1.14));
    }
    this.ctx.putImageData(colour, 0, 0);
  }
  loop() {
    if (!this.running) return;
    this.draw();
    if ("requestVideoFrameCallback" in this.video) this.video.requestVideoFrameCallback(() => this.loop());
    else requestAnimationFrame(() => this.loop());
  }
  stop() { this.running = false; }
}

// Show `stream` in `box`: a <video>, or a canvas composed from it when the track is packed.
function mount(box, stream, session, track) {
  const video = document.createElement("video");
  Object.assign(video, { autoplay: true, muted: true, playsInline: true, srcObject: stream });
  const canvas = document.createElement("canvas");
  canvas.hidden = true;
  box.append(video, canvas);
  let view = null;
  const check = () => {
    const packed = isPacked(session, track, video.videoWidth, video.videoHeight);
    if (packed && !view) { view = new MatteView(video, canvas); video.hidden = true; canvas.hidden = false; }
    if (!packed && view) { view.stop(); view = null; video.hidden = false; canvas.hidden = true; }
  };
  video.addEventListener("resize", check);
  video.addEventListener("loadedmetadata", check);
  video.play().catch(() => {});
  return video;
}

// ----------------------------------------------------------------------- OBS page --
// obs.html?channel=main&view=front follows whichever session holds the channel;
// obs.html?session=ID&view=front shows one session. Text says what is wrong when nothing shows.

export function watchOne(box, query) {
  const channel = query.get("channel"), fixed = query.get("session");
  const wanted = query.get("view") || "";
  const say = (text) => {
    box.innerHTML = "";
    if (text) { const p = document.createElement("p"); p.className = "notice"; p.textContent = text; box.append(p); }
  };
  if (!channel && !fixed) { say("Add ?channel=main&view=front (or ?session=ID&view=front) to this page's URL."); return; }
  let viewer = null, current = null, timer = null;
  const resolve = async () => {
    if (channel) {
      const held = await api("GET", `/api/channels/${encodeURIComponent(channel)}`);
      return held.session ? api("GET", `/api/sessions/${held.session}`) : null;
    }
    return api("GET", `/api/sessions/${encodeURIComponent(fixed)}`);
  };
  const later = (ms) => { clearTimeout(timer); timer = setTimeout(tick, ms); };
  const drop = () => { if (viewer) viewer.close(); viewer = null; current = null; };
  const tick = async () => {
    let session;
    try {
      session = await resolve();
    } catch (err) {
      drop();
      if (err.status === 404 && fixed) say(`No session ${fixed} on this server: it ended, or the link is old. Use a channel link instead: obs.html?channel=main&view=front`);
      else if (err.status === 401) say("This server needs its access token: add &token=TOKEN to this page's URL.");
      else if (err.status === 422) say(err.message);
      else say(`flamecast is not reachable (${err.message}); retrying...`);
      return later(3000);
    }
    if (!session) { drop(); say(`Nothing is live on channel "${channel}". Start a session on channel "${channel}" in the flamecast client.`); return later(2000); }
    const track = wanted || session.views[0];
    if (!session.tracks.includes(track)) { drop(); say(`Session ${session.id} has no view "${track}"; it has ${session.tracks.join(", ")}.`); return later(5000); }
    if (!current || current.id !== session.id) await show(session, track);
    later(channel ? 3000 : 10000);
  };
  const show = async (session, track) => {
    drop();
    current = session;
    const v = new Viewer(session.id, [track], {
      onState: (s) => { if ((s === "failed" || s === "closed") && viewer === v) { drop(); later(1000); } },
    });
    viewer = v;
    try {
      const streams = await v.connect();
      say("");
      mount(box, streams.get(track), session, track);
    } catch (err) {
      drop();
      say(`Cannot show session ${session.id}: ${err.message}`);
    }
  };
  window.flamecastObs = { get session() { return current && current.id; } };
  tick();
}

// ------------------------------------------------------------------------ main page --

const $ = (id) => document.getElementById(id);
const state = { plugins: null, portraitId: "", session: null, viewer: null, socket: null, mic: false, cam: false,
                media: null, stopping: false, retries: 0 };
const EMOTIONS = ["happy", "sad", "angry", "surprised", "disgusted", "fearful", "neutral"];
const HOTKEYS_KEY = "flamecast-hotkeys";
const CHANNEL_KEY = "flamecast-channel";
// Options a driver marks {"advanced": true} in its schema go under "Advanced"; these names too.
const ADVANCED = new Set(["steps", "guidance", "weights", "encoder", "clip_path", "seed"]);

// One line for the person at the keyboard: what went wrong, or what the driver answered.
function say(text, kind = "ok") {
  const el = $("message");
  el.textContent = text || "";
  el.className = `message ${kind}`;
  el.hidden = !text;
}

function showError(err) { say(err ? (err.message || String(err)) : "", "error"); }

export function formatReply(reply) {
  if (!reply || typeof reply !== "object") return String(reply ?? "");
  const parts = [];
  for (const [k, v] of Object.entries(reply)) {
    if (k === "layer") continue;
    const value = typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(2))
      : Array.isArray(v) ? v.join(", ") : v && typeof v === "object" ? formatReply(v) : String(v);
    parts.push(`${k.replace(/_/g, " ")}: ${value}`);
  }
  const who = reply.layer ? `${reply.layer} layer` : "driver";
  return parts.length ? `${who}: ${parts.join(" · ")}` : `${who}: ok`;
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
  select.onchange = () => { say(""); renderDriverOptions(); };
  renderDriverOptions();
  renderOutputs();
  const layerDriver = $("layer-driver");
  layerDriver.innerHTML = "";
  for (const d of state.plugins.drivers) if (d.name !== "idle") layerDriver.add(new Option(d.name, d.name));
  layerDriver.onchange = renderLayerChannels;
  renderLayerChannels();
}

function currentDriver() {
  return state.plugins.drivers.find((d) => d.name === $("driver").value);
}

// Render the driver's JSON schema (pydantic) as form fields; internal settings under Advanced.
function renderDriverOptions() {
  const driver = currentDriver();
  $("driver-description").textContent = driver ? driver.description : "";
  const form = $("driver-options"), advanced = $("advanced-options");
  form.querySelectorAll("label").forEach((el) => el.remove());
  advanced.innerHTML = "";
  if (!driver) return;
  const schema = driver.options || {};
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const label = document.createElement("label");
    label.title = prop.description || "";
    const text = document.createElement("span");
    text.textContent = prop.title || name;
    label.append(text);
    const input = fieldFor(prop, schema);
    input.name = name;
    label.append(input);
    (prop.advanced || ADVANCED.has(name) ? advanced : form.querySelector(".basic")).append(label);
  }
  $("advanced").hidden = !advanced.children.length;
  $("mic").disabled = !(driver.needs_audio && state.session);
  $("cam").disabled = !(driver.needs_video && state.session);
}

function fieldFor(prop, schema) {
  const ref = prop.$ref || (prop.allOf && prop.allOf[0] && prop.allOf[0].$ref);
  if (ref) prop = { ...schema.$defs[ref.split("/").pop()], ...prop };
  const options = prop.enum || (prop.anyOf || []).flatMap((a) => a.enum || []);
  let input;
  if (options.length) {
    input = document.createElement("select");
    if (prop.default === null || prop.default === undefined) input.add(new Option("(default)", ""));
    for (const v of options) input.add(new Option(v, v, v === prop.default, v === prop.default));
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
  input.dataset.type = options.length ? "enum" : prop.type || "string";
  return input;
}

// The options the person changed (a value equal to the schema's default is left to the driver).
function driverOptions() {
  const out = {};
  const props = ((currentDriver() || {}).options || {}).properties || {};
  for (const input of [...$("driver-options").elements].filter((el) => el.name)) {
    const t = input.dataset.type;
    let value;
    if (t === "boolean") value = input.checked;
    else if (input.value === "") continue;
    else if (t === "number" || t === "integer") value = Number(input.value);
    else value = input.value;
    if (props[input.name] && props[input.name].default === value) continue;
    out[input.name] = value;
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
  say("");
  $("portrait-error").hidden = true;
  try {
    const form = new FormData();
    form.append("portrait", file, file.name || "portrait");
    const p = await api("POST", "/api/portraits", form);
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

function backgroundValue() {
  const v = $("background").value;
  return v === "custom" ? $("background-color").value : v;
}

function placeholder(text) {
  const box = $("videos");
  box.innerHTML = "";
  box.className = "videos";
  const p = document.createElement("p");
  p.className = "placeholder";
  p.textContent = text;
  box.append(p);
}

async function start() {
  say("");
  $("portrait-error").hidden = true;
  $("start").disabled = true;
  try {
    const body = { driver: $("driver").value, options: driverOptions(), background: backgroundValue() };
    const channel = $("channel").value.trim();
    if (channel) body.channel = channel;
    if (state.portraitId) body.portrait_id = state.portraitId;
    if (params.get("views")) body.views = params.get("views").split(","); // e.g. ?views=front: render only that
    setStatus("opening the session...");
    placeholder("Opening the session...");
    state.session = await api("POST", "/api/sessions", body);
    state.stopping = false;
    fillViews(state.session.views);
    await connect();
    openEvents();
    for (const id of ["stop", "apply-driver", "send-prompt", "interrupt", "add-layer"]) $(id).disabled = false;
    setSessionControls(true);
    renderDriverOptions();
    renderObsLink();
    renderOutputs();
    refreshLayers();
  } catch (err) {
    showError(err);
    setStatus("not connected");
    if (state.viewer) state.viewer.close();
    state.viewer = null;
    state.session = null;
    placeholder("No session is running. Fix what the message says, then press Start.");
    $("start").disabled = false;
  }
}

function renderObsLink() {
  const s = state.session;
  const box = $("obs-link");
  box.innerHTML = "";
  if (!s) return;
  const view = s.views[0];
  const url = s.channel ? `${location.origin}/obs.html?channel=${s.channel}&view=${view}` : `${location.origin}/obs.html?session=${s.id}&view=${view}`;
  const a = document.createElement("a");
  a.href = url; a.target = "_blank"; a.textContent = url;
  box.append("OBS browser source: ", a);
  if (s.channel) box.append(` (follows channel "${s.channel}" across sessions)`);
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
    onEvent: () => {}, // events are shown once, from the events socket
  });
  state.viewer = viewer;
  setStatus("connecting...");
  const streams = await viewer.connect();
  const box = $("videos");
  box.innerHTML = "";
  box.className = `videos layout-${$("layout").value}` + (state.session.background === "transparent" ? " checker" : "");
  for (const [name, stream] of streams) {
    const fig = document.createElement("figure");
    const video = mount(fig, stream, state.session, name);
    video.dataset.track = name;
    const cap = document.createElement("figcaption");
    cap.textContent = name;
    fig.append(cap);
    box.append(fig);
    viewer.watch(name, video);
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
    else if (msg.type === "reply") { if (msg.ok === false) say(msg.error, "error"); }
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
    (s.matte_missing ? `\nthis generator gives no matte: the background stays the portrait's` : "") +
    (s.last_error ? `\nlast error: ${s.last_error}` : "");
}

function describeEvent(msg) {
  switch (msg.type) {
    case "driver": return `driver switched to ${msg.driver}`;
    case "layer": return `layer ${msg.layer} ${msg.event}${msg.error ? `: ${msg.error}` : ""}`;
    case "output": return `output ${msg.output} ${msg.event}${msg.error ? `: ${msg.error}` : ""}`;
    case "channel": return `channel ${msg.channel} ${msg.event}`;
    case "background": return `background ${msg.background}`;
    case "error": return `error: ${msg.error}`;
    case "closed": return `session ended (${msg.reason})`;
    case "driver-event": return `${msg.layer}: ${formatReply(msg.event).replace(/^driver: /, "")}`;
    default: return `${msg.type} ${JSON.stringify(msg.event || msg.error || "")}`;
  }
}

function showEvent(msg) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${describeEvent(msg)}`;
  if (msg.type === "error" || msg.error) li.className = "error";
  $("events").prepend(li);
  while ($("events").children.length > 30) $("events").lastChild.remove();
  if (msg.type === "layer" || msg.type === "driver") refreshLayers();
  if (msg.type === "output") renderOutputs();
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
  for (const id of ["stop", "apply-driver", "send-prompt", "interrupt", "mic", "cam", "add-layer"]) $(id).disabled = true;
  setSessionControls(false);
  $("overlay").hidden = true;
  $("layers").innerHTML = "";
  renderObsLink();
  renderOutputs();
  placeholder("Pick a portrait and a driver, then press Start.");
  setStatus("not connected");
}

function setSessionControls(on) {
  for (const b of document.querySelectorAll("#emotions button")) b.disabled = !on;
}

async function sendInput(message) {
  say("");
  if (!state.session) { say("Start a session first.", "error"); return; }
  try {
    const reply = await api("POST", `/api/sessions/${state.session.id}/input`, message);
    say(reply.driver ? `now driven by ${reply.driver}` : formatReply(reply.reply), "ok");
  } catch (err) {
    showError(err);
  }
}

// ---------------------------------------------------------------- expressions --

function loadHotkeys() {
  const saved = JSON.parse(localStorage.getItem(HOTKEYS_KEY) || "null");
  return saved || Object.fromEntries(EMOTIONS.map((e, i) => [e, String(i + 1)]));
}

function renderEmotions() {
  const keys = loadHotkeys();
  const box = $("emotions"), table = $("hotkeys");
  box.innerHTML = ""; table.innerHTML = "";
  for (const emotion of EMOTIONS) {
    const b = document.createElement("button");
    b.type = "button";
    b.disabled = !state.session;
    b.dataset.emotion = emotion;
    b.innerHTML = "";
    b.append(emotion);
    if (keys[emotion]) { const k = document.createElement("kbd"); k.textContent = keys[emotion]; b.append(" ", k); }
    b.onclick = () => sendInput({ kind: "emotion", text: emotion });
    box.append(b);
    const label = document.createElement("label");
    label.append(emotion);
    const input = document.createElement("input");
    Object.assign(input, { value: keys[emotion] || "", maxLength: 1, placeholder: "-" });
    input.dataset.emotion = emotion;
    input.onchange = () => {
      const next = loadHotkeys();
      next[emotion] = input.value.trim().toLowerCase();
      localStorage.setItem(HOTKEYS_KEY, JSON.stringify(next));
      renderEmotions();
    };
    label.append(input);
    table.append(label);
  }
}

function onHotkey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !state.session) return;
  if (ev.target.closest && ev.target.closest("input, textarea, select")) return;
  const key = ev.key.toLowerCase();
  const hit = Object.entries(loadHotkeys()).find(([, k]) => k && k === key);
  if (!hit) return;
  ev.preventDefault();
  const button = document.querySelector(`#emotions [data-emotion="${hit[0]}"]`);
  if (button) { button.classList.add("flash"); setTimeout(() => button.classList.remove("flash"), 250); }
  sendInput({ kind: "emotion", text: hit[0] });
}

// --------------------------------------------------------------------- layers --

async function refreshLayers() {
  if (!state.session) return;
  let data;
  try { data = await api("GET", `/api/sessions/${state.session.id}/layers`); } catch { return; }
  const list = $("layers");
  list.innerHTML = "";
  for (const layer of [...data.layers].reverse()) {
    const li = document.createElement("li");
    const owns = Object.entries(data.owners || {}).filter(([, who]) => who === layer.name).map(([g]) => g);
    const info = document.createElement("span");
    info.className = "layer-info";
    info.textContent = `${layer.name} (${layer.driver || "?"}) · ${layer.state || ""}${layer.muted ? " · muted" : ""}`;
    info.title = `drives: ${(layer.channels || []).join(", ")}; owns now: ${owns.join(", ") || "nothing"}` +
      (layer.last_error ? `\nlast error: ${layer.last_error}` : "");
    li.append(info);
    if (layer.name !== "base") {
      const mute = document.createElement("button");
      mute.type = "button";
      mute.textContent = layer.muted ? "unmute" : "mute";
      mute.onclick = () => layerCall("PATCH", layer.name, { muted: !layer.muted });
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "remove";
      remove.onclick = () => layerCall("DELETE", layer.name);
      li.append(mute, remove);
    }
    list.append(li);
  }
}

async function layerCall(method, name, body) {
  say("");
  try {
    await api(method, `/api/sessions/${state.session.id}/layers/${encodeURIComponent(name)}`, body);
  } catch (err) { showError(err); }
  refreshLayers();
}

function renderLayerChannels() {
  const driver = state.plugins && state.plugins.drivers.find((d) => d.name === $("layer-driver").value);
  const box = $("layer-channels");
  box.innerHTML = "";
  for (const c of (driver && driver.channels) || []) {
    const label = document.createElement("label");
    label.className = "inline";
    const input = document.createElement("input");
    Object.assign(input, { type: "checkbox", checked: true, value: c });
    label.append(input, ` ${c}`);
    box.append(label);
  }
}

async function addLayer(ev) {
  ev.preventDefault();
  say("");
  const channels = [...$("layer-channels").querySelectorAll("input:checked")].map((i) => i.value);
  const body = { driver: $("layer-driver").value, channels };
  const name = $("layer-name").value.trim();
  if (name) body.name = name;
  try {
    await api("POST", `/api/sessions/${state.session.id}/layers`, body);
    $("layer-name").value = "";
  } catch (err) { showError(err); }
  refreshLayers();
}

// -------------------------------------------------------------------- outputs --

async function renderOutputs() {
  const box = $("outputs");
  box.innerHTML = "";
  const available = (state.plugins && state.plugins.outputs) || [];
  if (!available.length) { box.textContent = "no outputs installed"; return; }
  let attached = [];
  if (state.session) {
    try { attached = (await api("GET", `/api/sessions/${state.session.id}/outputs`)).outputs; } catch { attached = []; }
  }
  for (const out of available) {
    const on = attached.find((a) => a.name === out.name);
    const b = document.createElement("button");
    b.type = "button";
    b.title = out.description;
    b.disabled = !state.session;
    b.setAttribute("aria-pressed", String(!!on));
    b.textContent = { virtualcam: "Virtual camera", record: "Record on server" }[out.name] || out.name;
    b.onclick = () => toggleOutput(out.name, !!on);
    box.append(b);
    if (on && (on.device || on.path)) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = ` ${on.device || on.path}`;
      box.append(hint);
    }
  }
}

async function toggleOutput(name, on) {
  say("");
  try {
    if (on) await api("DELETE", `/api/sessions/${state.session.id}/outputs/${name}`);
    else await api("POST", `/api/sessions/${state.session.id}/outputs`, { name });
  } catch (err) { showError(err); }
  renderOutputs();
}

// Microphone / camera: a new offer that also sends the device's track.
async function toggleDevice(kind) {
  say("");
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

async function changeBackground() {
  $("background-color").hidden = $("background").value !== "custom";
  if (!state.session) return;
  say("");
  try {
    state.session = await api("PATCH", `/api/sessions/${state.session.id}`, { background: backgroundValue() });
    await connect();
  } catch (err) { showError(err); }
}

function main() {
  window.flamecast = state; // for debugging and bench/browser_latency.py
  $("channel").value = localStorage.getItem(CHANNEL_KEY) ?? "main";
  $("channel").onchange = () => localStorage.setItem(CHANNEL_KEY, $("channel").value.trim());
  $("start").onclick = start;
  $("stop").onclick = () => { say(""); closeSession(true); };
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
  $("layout").onchange = () => { say(""); $("view-label").hidden = $("layout").value !== "single"; if (state.session) connect(); };
  $("view").onchange = () => { if (state.session) connect(); };
  $("background").onchange = changeBackground;
  $("background-color").onchange = changeBackground;
  $("layer-form").onsubmit = addLayer;
  $("portrait-file").onchange = (ev) => ev.target.files[0] && uploadPortrait(ev.target.files[0]);
  $("portraits").onclick = (ev) => { const b = ev.target.closest("[data-id]"); if (b) { say(""); selectPortrait(b.dataset.id); } };
  document.addEventListener("keydown", onHotkey);
  window.addEventListener("beforeunload", () => closeSession(true));
  renderEmotions();
  Promise.all([loadPlugins(), loadPortraits()]).catch(showError);
}

if (document.getElementById("controls")) main();
