// The stemsplit mixer page: every stem on one clock, stretched and shifted by Signalsmith Stretch.
//
// Audio graph: the stems are fetched in parts at the device's rate (/api/pcm) and fed to one Signalsmith
// Stretch node per group (pitched stems in one, unpitched ones such as drums in another, so a Key change
// never reaches the drums); every node gets the same schedule at the same context time, so all stems stay
// sample-locked. Each node's 2·k channels are split back into stereo stems, each through its own gain.
// Parts are fetched ahead of the playhead and dropped behind it, so a 60-minute set is never held whole.
import SignalsmithStretch from "/static/SignalsmithStretch.mjs";

const AHEAD_S = 40; // keep this much audio loaded ahead of the playhead
const BEHIND_S = 10; // and this much behind it
const PART_S = 6; // seconds per fetched part
const SEEK_STEP_S = 5;

const $ = (id) => document.getElementById(id);
const state = {
  track: null,
  ctx: null,
  rate: 0,
  grid: 1, // parts start on multiples of this many frames (the two rates' common grid)
  totalFrames: 0,
  groups: [], // {pitched, indices, node}
  stems: [], // {name, color, pitched, volume, mute, solo, gain, row, canvas, peaks, image}
  playing: false,
  position: 0, // track seconds while paused
  origin: 0, // track seconds at the nodes' buffer time 0
  loadedTo: 0, // absolute frame (device rate) loaded up to
  dropped: 0, // buffer seconds dropped so far
  generation: 0, // bumped by each seek; stale parts are thrown away
  chain: Promise.resolve(), // buffer operations, one at a time
  loop: { a: null, b: null },
  speed: 1,
  key: 0,
};

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  const rest = s - 60 * m;
  return `${m}:${rest < 10 ? "0" : ""}${rest.toFixed(1)}`;
}

function status(text) {
  $("status").textContent = text;
}

async function getJSON(url) {
  const reply = await fetch(url, { credentials: "same-origin" });
  if (!reply.ok) throw new Error(`${url}: ${reply.status} ${await reply.text()}`);
  return reply.json();
}

function serial(task) {
  const run = state.chain.then(task);
  state.chain = run.catch(() => {});
  return run;
}

// --- position and loading ----------------------------------------------------------------------

function position() {
  if (!state.playing || !state.groups.length) return state.position;
  return Math.min(state.origin + state.groups[0].node.inputTime, state.track.duration);
}

async function fetchPart(start, frames) {
  const reply = await fetch(`/api/pcm?start=${start}&frames=${frames}&rate=${state.rate}`, {
    credentials: "same-origin",
  });
  if (!reply.ok) throw new Error(`part at ${start}: ${reply.status}`);
  const n = Number(reply.headers.get("X-Frames"));
  const all = new Float32Array(await reply.arrayBuffer());
  return { n, channel: (stem, c) => all.slice((stem * 2 + c) * n, (stem * 2 + c + 1) * n) };
}

async function appendPart(generation) {
  const start = state.loadedTo;
  if (start >= state.totalFrames) return;
  const frames = Math.min(Math.round((PART_S * state.rate) / state.grid) * state.grid, state.totalFrames - start);
  const part = await fetchPart(start, frames);
  if (generation !== state.generation || part.n === 0) return;
  await Promise.all(
    state.groups.map((group) => {
      const arrays = [];
      for (const i of group.indices) arrays.push(part.channel(i, 0), part.channel(i, 1));
      return group.node.addBuffers(arrays);
    }),
  );
  state.loadedTo = start + part.n;
}

function pump() {
  if (!state.groups.length) return;
  serial(async () => {
    const generation = state.generation;
    const here = position();
    if (state.loadedTo < Math.min(state.totalFrames, (here + AHEAD_S) * state.rate)) {
      await appendPart(generation);
    }
    const keepFrom = Math.min(here, state.loop.a ?? here) - BEHIND_S - state.origin;
    if (keepFrom - state.dropped > PART_S) {
      await Promise.all(state.groups.map((g) => g.node.dropBuffers(keepFrom)));
      state.dropped = keepFrom;
    }
  }).catch((err) => status(`Could not load the stems: ${err.message}`));
}

function seekTo(seconds) {
  const target = Math.min(Math.max(0, seconds), state.track.duration);
  const generation = ++state.generation;
  const wasPlaying = state.playing;
  if (wasPlaying) halt();
  state.position = target;
  showPosition(target);
  return serial(async () => {
    if (generation !== state.generation) return;
    const originFrame = Math.floor((target * state.rate) / state.grid) * state.grid;
    state.origin = originFrame / state.rate;
    state.loadedTo = originFrame;
    state.dropped = 0;
    await Promise.all(state.groups.map((g) => g.node.dropBuffers()));
    await appendPart(generation);
    if (generation !== state.generation) return;
    scheduleLoop();
    if (wasPlaying) start();
  });
}

// --- transport -----------------------------------------------------------------------------------

function settingsFor(group) {
  return { rate: state.speed, semitones: group.pitched ? state.key : 0 };
}

async function start() {
  await state.ctx.resume();
  const when = state.ctx.currentTime + 0.05;
  const input = state.position - state.origin;
  for (const group of state.groups) {
    group.node.schedule({ output: when, active: true, input, ...settingsFor(group), ...loopFor() });
  }
  state.playing = true;
  $("play").textContent = "Pause";
  status("Playing");
}

function halt() {
  state.position = position();
  const when = state.ctx.currentTime;
  for (const group of state.groups) group.node.schedule({ output: when, active: false });
  state.playing = false;
  $("play").textContent = "Play";
}

function togglePlay() {
  if (state.playing) {
    halt();
    status("Paused");
  } else {
    if (state.position >= state.track.duration - 0.05) state.position = state.loop.a ?? 0;
    serial(() => {}).then(() => {
      const loaded =
        state.position >= state.origin + state.dropped && state.position * state.rate < state.loadedTo;
      return loaded ? start() : seekTo(state.position).then(start);
    });
  }
}

function retune() {
  $("speed-value").textContent = `${Math.round(state.speed * 100)} %`;
  $("key-value").textContent = state.key > 0 ? `+${state.key}` : `${state.key}`;
  if (!state.playing) return;
  const when = state.ctx.currentTime + 0.02;
  for (const group of state.groups) group.node.schedule({ output: when, ...settingsFor(group) });
}

// --- loop ----------------------------------------------------------------------------------------

function loopFor() {
  const { a, b } = state.loop;
  if (a === null || b === null) return { loopStart: 0, loopEnd: 0 };
  return { loopStart: a - state.origin, loopEnd: b - state.origin };
}

function scheduleLoop() {
  if (!state.ctx) return;
  const when = state.ctx.currentTime;
  for (const group of state.groups) group.node.schedule({ output: when, ...loopFor() });
}

function setLoop(a, b) {
  state.loop = { a, b };
  if (a !== null && b !== null && b - a < 0.05) state.loop.b = null;
  const { a: start, b: end } = state.loop;
  $("loop-label").textContent =
    start === null ? "No loop" : end === null ? `Loop from ${clock(start)}` : `Loop ${clock(start)}–${clock(end)}`;
  $("download").textContent =
    start !== null && end !== null ? `Download mix (loop ${clock(start)}–${clock(end)})` : "Download mix (whole track)";
  if (start !== null && start < state.origin + state.dropped) {
    seekTo(start); // the loop's start was dropped: play from it, loaded again
  } else {
    scheduleLoop();
  }
}

function cycleLoop() {
  const here = position();
  if (state.loop.a === null) setLoop(here, null);
  else if (state.loop.b === null) setLoop(Math.min(state.loop.a, here), Math.max(state.loop.a, here));
  else setLoop(null, null);
}

// --- stems ---------------------------------------------------------------------------------------

function applyGains() {
  const soloed = state.stems.some((s) => s.solo);
  const now = state.ctx ? state.ctx.currentTime : 0;
  for (const stem of state.stems) {
    const heard = !stem.mute && (!soloed || stem.solo);
    if (stem.gain) stem.gain.gain.setValueAtTime(heard ? stem.volume / 100 : 0, now);
    stem.row.classList.toggle("silent", !heard);
  }
}

function toggle(button, stem, field) {
  stem[field] = !stem[field];
  button.setAttribute("aria-pressed", String(stem[field]));
  applyGains();
}

function stemRow(stem) {
  const row = document.createElement("div");
  row.className = "stem";
  row.innerHTML = `
    <div class="name"><span class="swatch"></span><span class="label"></span></div>
    <canvas height="56" width="600"></canvas>
    <label class="volume"><input type="range" min="0" max="150" step="1" value="100"><output aria-hidden="true">100</output></label>
    <div class="buttons"><button type="button" class="mute" aria-pressed="false">Mute</button>
      <button type="button" class="solo" aria-pressed="false">Solo</button></div>`;
  row.querySelector(".swatch").style.background = stem.color;
  row.querySelector(".label").textContent = stem.name;
  const volume = row.querySelector("input");
  volume.setAttribute("aria-label", `${stem.name} volume`);
  volume.addEventListener("input", () => {
    stem.volume = Number(volume.value);
    row.querySelector("output").textContent = volume.value;
    applyGains();
  });
  const mute = row.querySelector(".mute");
  mute.setAttribute("aria-label", `Mute ${stem.name}`);
  mute.addEventListener("click", () => toggle(mute, stem, "mute"));
  const solo = row.querySelector(".solo");
  solo.setAttribute("aria-label", `Solo ${stem.name}`);
  solo.addEventListener("click", () => toggle(solo, stem, "solo"));
  stem.row = row;
  stem.canvas = row.querySelector("canvas");
  waveformDrag(stem.canvas);
  return row;
}

function waveformDrag(canvas) {
  let from = null;
  const timeAt = (event) => {
    const box = canvas.getBoundingClientRect();
    return (Math.min(Math.max(event.clientX - box.left, 0), box.width) / box.width) * state.track.duration;
  };
  canvas.addEventListener("pointerdown", (event) => {
    from = { x: event.clientX, t: timeAt(event) };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointerup", (event) => {
    if (from === null) return;
    const t = timeAt(event);
    if (Math.abs(event.clientX - from.x) < 4) seekTo(t);
    else setLoop(Math.min(from.t, t), Math.max(from.t, t));
    from = null;
  });
}

function drawOverview(stem) {
  const canvas = document.createElement("canvas");
  canvas.width = stem.peaks.length;
  canvas.height = 56;
  const g = canvas.getContext("2d");
  g.fillStyle = stem.color;
  const mid = canvas.height / 2;
  stem.peaks.forEach(([lo, hi], x) => {
    const top = mid - Math.min(1, hi) * mid;
    const bottom = mid - Math.max(-1, lo) * mid;
    g.fillRect(x, top, 1, Math.max(1, bottom - top));
  });
  stem.image = canvas;
}

function drawStems(here) {
  for (const stem of state.stems) {
    const canvas = stem.canvas;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    if (stem.image) g.drawImage(stem.image, 0, 0, canvas.width, canvas.height);
    const x = (t) => (t / state.track.duration) * canvas.width;
    const { a, b } = state.loop;
    if (a !== null) {
      g.fillStyle = "rgba(255,255,255,0.12)";
      g.fillRect(x(a), 0, b === null ? 2 : Math.max(2, x(b) - x(a)), canvas.height);
    }
    g.fillStyle = "#fff";
    g.fillRect(x(here), 0, 2, canvas.height);
  }
}

function showPosition(here) {
  const slider = $("position");
  if (!slider.matches(":active")) slider.value = here.toFixed(2);
  $("time").textContent = `${clock(here)} / ${clock(state.track.duration)}`;
}

function frame() {
  const here = position();
  if (state.playing && here >= state.track.duration - 0.02 && state.loop.b === null) {
    halt();
    state.position = state.track.duration;
    status("Ended");
  }
  showPosition(here);
  drawStems(here);
  requestAnimationFrame(frame);
}

// --- download ------------------------------------------------------------------------------------

function mixURL() {
  const query = new URLSearchParams();
  for (const stem of state.stems) {
    if (stem.volume !== 100) query.set(`gain.${stem.name}`, String(stem.volume / 100));
  }
  const muted = state.stems.filter((s) => s.mute).map((s) => s.name);
  const soloed = state.stems.filter((s) => s.solo).map((s) => s.name);
  if (muted.length) query.set("mute", muted.join(","));
  if (soloed.length) query.set("solo", soloed.join(","));
  query.set("tempo", String(state.speed));
  query.set("key", String(state.key));
  const { a, b } = state.loop;
  if (a !== null && b !== null) {
    query.set("start", a.toFixed(3));
    query.set("end", b.toFixed(3));
  }
  return `/api/mix?${query}`;
}

function download() {
  const link = document.createElement("a");
  link.href = mixURL();
  link.download = "";
  document.body.append(link);
  link.click();
  link.remove();
  status("Rendering the mix; the download starts when it is ready");
}

// --- keyboard ------------------------------------------------------------------------------------

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const control = event.target.closest && event.target.closest("input, button, select, textarea");
  if (event.key === "l" || event.key === "L") {
    cycleLoop();
  } else if (control) {
    return; // space and arrows keep their meaning on a control
  } else if (event.key === " ") {
    togglePlay();
  } else if (event.key === "ArrowLeft") {
    seekTo(position() - SEEK_STEP_S);
  } else if (event.key === "ArrowRight") {
    seekTo(position() + SEEK_STEP_S);
  } else {
    return;
  }
  event.preventDefault();
}

// --- start ---------------------------------------------------------------------------------------

async function main() {
  const track = await getJSON("/api/track");
  state.track = track;
  document.title = `${track.title} – stemsplit`;
  $("title").textContent = track.title;
  $("position").max = String(track.duration);
  const rows = $("stems");
  state.stems = track.stems.map((s) => ({ ...s, volume: 100, mute: false, solo: false }));
  for (const stem of state.stems) rows.append(stemRow(stem));
  showPosition(0);

  const ctx = new AudioContext({ latencyHint: "playback" });
  state.ctx = ctx;
  state.rate = ctx.sampleRate;
  state.grid = ctx.sampleRate / gcd(track.samplerate, ctx.sampleRate);
  state.totalFrames = Math.ceil((track.frames * ctx.sampleRate) / track.samplerate);
  for (const pitched of [true, false]) {
    const indices = state.stems.flatMap((s, i) => (s.pitched === pitched ? [i] : []));
    if (!indices.length) continue;
    const channels = 2 * indices.length;
    const node = await SignalsmithStretch(ctx, {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [channels],
    });
    node.setUpdateInterval(0.02);
    const split = ctx.createChannelSplitter(channels);
    node.connect(split);
    indices.forEach((i, j) => {
      const merge = ctx.createChannelMerger(2);
      split.connect(merge, 2 * j, 0);
      split.connect(merge, 2 * j + 1, 1);
      const gain = ctx.createGain();
      merge.connect(gain).connect(ctx.destination);
      state.stems[i].gain = gain;
    });
    state.groups.push({ pitched, indices, node });
  }
  applyGains();
  await seekTo(0);

  $("play").addEventListener("click", togglePlay);
  $("position").addEventListener("change", (e) => seekTo(Number(e.target.value)));
  $("position").addEventListener("input", (e) => showPosition(Number(e.target.value)));
  $("speed").addEventListener("input", (e) => {
    state.speed = Number(e.target.value) / 100;
    retune();
  });
  $("key").addEventListener("input", (e) => {
    state.key = Number(e.target.value);
    retune();
  });
  $("loop-start").addEventListener("click", () => setLoop(position(), state.loop.b));
  $("loop-end").addEventListener("click", () => {
    const here = position();
    if (state.loop.a === null) setLoop(0, here);
    else setLoop(Math.min(state.loop.a, here), Math.max(state.loop.a, here));
  });
  $("loop-clear").addEventListener("click", () => setLoop(null, null));
  $("download").addEventListener("click", download);
  document.addEventListener("keydown", onKey);
  setInterval(pump, 250);
  requestAnimationFrame(frame);
  $("play").disabled = false;
  $("download").disabled = false;
  status(`Ready · ${ctx.sampleRate} Hz`);
  document.body.dataset.ready = "true";
  window.stemsplitPlayer = state; // for the browser tests and the console

  getJSON("/api/overview")
    .then((peaks) => {
      for (const stem of state.stems) {
        stem.peaks = peaks[stem.name] || [];
        drawOverview(stem);
      }
    })
    .catch((err) => status(`No waveforms: ${err.message}`));
}

main().catch((err) => status(`The player could not start: ${err.message}`));
