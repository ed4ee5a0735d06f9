// The softphone (docs/console.md, "Softphone"): microphone -> AudioWorklet -> PCM16 16 kHz binary
// frames over the browser provider's WebSocket; bot audio (base64 PCM16 16 kHz) is scheduled on the
// audio clock; marks are echoed when the audio before them has played; "clear" (barge-in) stops
// everything unplayed at once. Counters are shown on the page (and read by the browser test).
"use strict";
const $ = (id) => document.getElementById(id);
const RATE = 16000;
const MAX_UNSENT = 50; // frames held while the socket is busy (1 s, 32 KB): newer ones are dropped
const stats = {framesSent: 0, botAudioMs: 0, marksEchoed: 0, clears: 0, framesDropped: 0};
window.phoneStats = stats;
let ctx = null, ws = null, stream = null, node = null, playHead = 0;
let sources = new Set(), markTimers = new Set(), feed = null;

function show(text) { $("phone-status").textContent = text; }
function showStats() {
  $("sent").textContent = String(stats.framesSent);
  $("heard").textContent = String(Math.round(stats.botAudioMs));
  $("clears").textContent = String(stats.clears);
}

function play(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const buffer = ctx.createBuffer(1, pcm.length, RATE);
  const out = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  playHead = Math.max(playHead, ctx.currentTime);
  src.start(playHead);
  playHead += buffer.duration;
  sources.add(src);
  src.onended = () => sources.delete(src);
  stats.botAudioMs += buffer.duration * 1000;
  showStats();
}

function mark(name) {
  const wait = Math.max(0, playHead - ctx.currentTime) * 1000;
  const timer = setTimeout(() => {
    markTimers.delete(timer);
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({event: "mark", name}));
    stats.marksEchoed++;
  }, wait);
  markTimers.add(timer);
}

function clearPlayback() {
  for (const src of sources) { try { src.stop(); } catch (e) { /* already ended */ } }
  sources.clear();
  for (const t of markTimers) clearTimeout(t);
  markTimers.clear();
  playHead = ctx.currentTime;
  stats.clears++;
  showStats();
}

async function call() {
  $("call").disabled = true;
  show("connecting…");
  const r = await fetch("/console/api/phone/calls", {method: "POST"});
  if (!r.ok) { show(`refused (${r.status})`); $("call").disabled = false; return; }
  const issued = await r.json();
  ctx = new AudioContext({sampleRate: RATE});
  await ctx.audioWorklet.addModule("/console/static/phone-worklet.js");
  stream = await navigator.mediaDevices.getUserMedia(
    {audio: {channelCount: 1, echoCancellation: true, noiseSuppression: true}});
  const mic = ctx.createMediaStreamSource(stream);
  node = new AudioWorkletNode(ctx, "capture-processor");
  mic.connect(node);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${scheme}//${location.host}${issued.media_path}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    ws.send(JSON.stringify({event: "start", call_id: issued.call_id, token: issued.token, sample_rate: RATE}));
    node.port.onmessage = (e) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (ws.bufferedAmount > MAX_UNSENT * 641) { stats.framesDropped++; return; }
      ws.send(e.data);
      stats.framesSent++;
      if (stats.framesSent % 25 === 0) showStats();
    };
    follow(issued.call_id);
    const a = $("call-link");
    a.href = "/console/calls/" + encodeURIComponent(issued.call_id);
    a.textContent = issued.call_id;
    show("in call");
    $("hangup").disabled = false;
    $("hangup").focus();
  };
  ws.onmessage = (e) => {
    if (typeof e.data !== "string") return;
    const msg = JSON.parse(e.data);
    if (msg.event === "media") play(msg.payload);
    else if (msg.event === "mark") mark(msg.name);
    else if (msg.event === "clear") clearPlayback();
  };
  ws.onclose = (e) => { show(`call ended (${e.code})`); stop(false); };
}

// The call as the console sees it (state, escalation, transcript), from the call's event stream.
function follow(callId) {
  if (feed) feed.close();
  feed = new EventSource("/console/api/stream/calls/" + encodeURIComponent(callId));
  feed.addEventListener("call", (e) => {
    const d = JSON.parse(e.data);
    if (d.error) return;
    $("call-state").textContent = d.state || "–";
    const esc = d.escalation_detail;
    $("call-escalation").textContent = esc.status === "none" ? "none" : `${esc.status} (${esc.trigger})`;
    const turns = $("turns");
    turns.textContent = "";
    for (const t of d.transcript.slice(-8)) {
      const li = document.createElement("li");
      li.textContent = `${t.role}: ${t.text}`;
      turns.append(li);
    }
    if (d.ended && feed) { feed.close(); feed = null; }
  });
}

function stop(sendStop) {
  if (sendStop && ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify({event: "stop"})); ws.close(1000); }
  if (stream) for (const t of stream.getTracks()) t.stop();
  stream = null;
  if (node) node.port.onmessage = null;
  $("hangup").disabled = true;
  $("call").disabled = false;
}

$("call").addEventListener("click", () => call().catch((err) => { show("error: " + err.message); stop(false); }));
$("hangup").addEventListener("click", () => stop(true));
for (const b of document.querySelectorAll("button[data-digit]")) {
  b.addEventListener("click", () => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({event: "dtmf", digit: b.dataset.digit}));
  });
}
