// spritediff playground: builds the controls from GET /api/info, streams runs from the server (NDJSON lines),
// and shows frames, grids, races and edits. Everything comes from this server; nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, sprites: [], slotA: null, slotB: null, mask: null, stepsEdited: false };

// ---- small helpers -------------------------------------------------------------------------------------------

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(id, text, kind = "") {
  const node = $(id);
  node.textContent = text;
  node.dataset.kind = kind;
}

function intValue(id) { return Number.parseInt($(id).value, 10); }
function numValue(id) { return Number.parseFloat($(id).value); }
function seconds(s) { return `${s.toFixed(2)} s`; }

// POST a JSON body and call onEvent for every NDJSON line of the streamed answer. A 4xx/5xx answer is one JSON
// {"error": "..."}: it is thrown as an Error with that message.
async function streamEvents(url, body, onEvent, signal) {
  const response = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line) onEvent(JSON.parse(line));
    }
  }
}

async function errorText(response) {
  try {
    const answer = await response.json();
    return answer.error || `HTTP ${response.status}`;
  } catch (err) {
    return `HTTP ${response.status}`;
  }
}

function downloadLinks(id, target, kinds) {
  const node = $(target);
  node.replaceChildren();
  if (!id) return;
  const labels = { "grid.png": "PNG grid", "denoise.gif": "GIF of the denoising", "samples.npy": ".npy (N×H×W×3 uint8)" };
  node.append("Download: ");
  kinds.forEach((kind, i) => {
    if (i) node.append(" · ");
    node.append(el("a", { href: `/api/results/${id}/${kind}`, download: "", title: `Download ${labels[kind]}`,
                          text: labels[kind] }));
  });
}

// ---- tabs ------------------------------------------------------------------------------------------------------

function setupTabs() {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  }
}

function showPanel(panelId) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.panel === panelId;
    tab.setAttribute("aria-selected", String(selected));
    $(tab.dataset.panel).hidden = !selected;
  }
}

// ---- model info and controls -------------------------------------------------------------------------------

async function loadInfo() {
  const response = await fetch("/api/info");
  state.info = await response.json();
  const { model, limits } = state.info;
  $("model-line").textContent = `Model: ${model.name}, ${model.size}×${model.size} sprites, classes ` +
    `${model.classes.join(", ")}; T = ${model.T}; ${model.device}, ${state.info.precision}. ` +
    `Up to ${limits.active_limit} requests share each model call.`;
  const credit = model.credit ? `${model.credit}.` : "";
  $("credit").textContent = credit;
  $("footer-credit").textContent = credit;
  buildSampleControls();
  buildRaceControls();
  buildEditControls();
  document.body.dataset.ready = "true";
}

function buildSampleControls() {
  const { samplers, limits, max_steps: maxSteps } = state.info;
  const defaults = state.info.defaults.playground_sample;  // spritediff/defaults.py, declared once
  const select = $("s-sampler");
  for (const name of Object.keys(samplers)) select.append(el("option", { value: name, text: name }));
  select.value = defaults.sampler;
  $("s-steps").max = maxSteps;
  $("s-n").max = limits.max_n;
  $("s-guidance").max = limits.max_guidance;
  $("s-guidance").value = defaults.guidance;
  select.addEventListener("change", onSamplerChange);
  $("s-steps").addEventListener("input", () => { state.stepsEdited = true; });
  onSamplerChange();
  buildMixer();
}

function onSamplerChange() {
  const name = $("s-sampler").value;
  const info = state.info.samplers[name];
  if (!state.stepsEdited) $("s-steps").value = info.default_steps;
  const box = $("s-options");
  box.replaceChildren();
  for (const [key, option] of Object.entries(info.options)) box.append(optionControl(key, option));
}

// One control per declared sampler option: a select for choices, a checkbox for bools, a number otherwise.
function optionControl(key, option) {
  const help = `${option.help}: ${option.allowed} (default ${option.default})`;
  let input;
  if (option.choices) {
    input = el("select");
    for (const choice of option.choices) input.append(el("option", { value: choice, text: choice }));
    input.value = option.default;
  } else if (option.kind === "bool") {
    input = el("input", { type: "checkbox" });
    input.checked = Boolean(option.default);
  } else {
    input = el("input", { type: "number", step: option.kind === "int" ? "1" : "0.05", value: option.default });
    if (option.low !== null) input.min = option.low;
    if (option.high !== null) input.max = option.high;
  }
  input.dataset.option = key;
  input.dataset.kind = option.kind;
  input.id = `s-option-${key}`;
  return el("label", { title: help }, [`${key} `, input]);
}

function samplerOptions() {
  const options = {};
  for (const input of document.querySelectorAll("#s-options [data-option]")) {
    const { option, kind } = input.dataset;
    if (kind === "bool") options[option] = input.checked;
    else if (kind === "int") options[option] = Number.parseInt(input.value, 10);
    else if (kind === "float") options[option] = Number.parseFloat(input.value);
    else options[option] = input.value;
  }
  return options;
}

function buildMixer() {
  const box = $("s-sliders");
  for (const name of state.info.model.classes) {
    const slider = el("input", { type: "range", min: "0", max: "2", step: "0.05", value: "0", id: `s-w-${name}`,
                                 "data-class": name, "aria-label": `weight of ${name}` });
    const shown = el("output", { id: `s-w-${name}-out`, text: "0" });
    slider.addEventListener("input", () => {
      shown.textContent = slider.value;
      document.querySelector("input[name=s-mode][value=blend]").checked = true;
      updateContextText();
    });
    box.append(el("label", { title: `Weight of ${name} in the blend (0 = absent, 1 = the class as trained)` },
                  [el("span", { class: "name", text: name }), slider, shown]));
  }
  for (const radio of document.querySelectorAll("input[name=s-mode]")) {
    radio.addEventListener("change", updateContextText);
  }
  if (state.info.model.class_mix) {
    $("s-mode-mix").hidden = false;
    if (state.info.defaults.playground_sample.context === "mix") {  // as spritediff sample: the training mix
      document.querySelector("input[name=s-mode][value=mix]").checked = true;
    }
  }
  updateContextText();
}

function sampleContext() {
  const mode = document.querySelector("input[name=s-mode]:checked").value;
  if (mode !== "blend") return mode;
  const weights = {};
  for (const slider of document.querySelectorAll("#s-sliders input")) {
    weights[slider.dataset.class] = Number.parseFloat(slider.value);
  }
  return weights;
}

function updateContextText() {
  const context = sampleContext();
  let text = context;
  if (typeof context === "object") {
    const parts = Object.entries(context).filter(([, w]) => w !== 0).map(([name, w]) => `${name}=${w}`);
    text = parts.length ? parts.join(", ") : "all weights 0 (same as none)";
  }
  $("s-context-text").textContent = `Context: ${text}`;
  $("s-context-text").dataset.context = typeof context === "object" ? JSON.stringify(context) : context;
}

function contextOptions(select, withRandom) {
  select.append(el("option", { value: "none", text: "none" }));
  if (withRandom && state.info.model.class_mix) select.append(el("option", { value: "mix", text: "training mix" }));
  if (withRandom) select.append(el("option", { value: "random", text: "random" }));
  for (const name of state.info.model.classes) select.append(el("option", { value: name, text: name }));
}

// ---- sample panel ----------------------------------------------------------------------------------------------

let sampleRun = null;

async function startSample(event) {
  event.preventDefault();
  if (sampleRun) sampleRun.abort();
  const run = new AbortController();
  sampleRun = run;
  const body = { sampler: $("s-sampler").value, steps: intValue("s-steps"), n: intValue("s-n"),
                 seed: intValue("s-seed"), guidance: numValue("s-guidance"), context: sampleContext(),
                 options: samplerOptions() };
  const live = $("s-live");
  live.dataset.frames = "0";
  $("s-grid").dataset.state = "running";
  $("s-start").disabled = true;
  $("s-stop").disabled = false;
  setStatus("s-status", "Sending…");
  try {
    await streamEvents("/api/sample", body, onSampleEvent, run.signal);
  } catch (err) {
    if (err.name === "AbortError") setStatus("s-status", "Stopped.");
    else setStatus("s-status", err.message, "error");
    $("s-grid").dataset.state = "error";
  } finally {
    if (sampleRun === run) sampleRun = null;
    $("s-start").disabled = false;
    $("s-stop").disabled = true;
  }
}

function onSampleEvent(event) {
  const live = $("s-live");
  if (event.type === "queued") setStatus("s-status", `Waiting for a slot: ${event.ahead} request(s) ahead…`);
  else if (event.type === "running") setStatus("s-status", "Running…");
  else if (event.type === "frame") {
    live.src = event.image;
    live.dataset.frames = String(Number(live.dataset.frames) + 1);
    setStatus("s-status", `Step ${event.step + 1}, t = ${event.t}: ${event.nfe} of ${event.of} model calls, ` +
                          `${seconds(event.elapsed)}`);
  } else if (event.type === "done") showSampleResult(event);
  else if (event.type === "error") {
    setStatus("s-status", event.message, "error");
    $("s-grid").dataset.state = "error";
  } else if (event.type === "cancelled") setStatus("s-status", "Stopped.");
}

// Frames come at one pixel per sprite pixel: show them FRAME_ZOOM times larger (CSS keeps the pixels sharp).
const FRAME_ZOOM = 4;
function zoomOnLoad(img, zoom) {
  img.onload = () => { img.style.width = `${img.naturalWidth * zoom}px`; };
}

function showSampleResult(event) {
  const grid = $("s-grid");
  grid.onload = () => { grid.dataset.state = "done"; };
  grid.src = event.grid;
  state.sprites = event.sprites;
  state.gridColumns = Math.min(8, event.sprites.length);
  const s = event.settings;
  $("s-stats").textContent = `${s.n} sprites, ${s.sampler} ${s.steps} steps, seed ${s.seed}, context ${s.context}: ` +
    `NFE ${event.nfe}, ${seconds(event.seconds)} (${event.images_per_second} sprites/s). Click a sprite to edit it.`;
  setStatus("s-status", `Done: NFE ${event.nfe} in ${seconds(event.seconds)}.`, "done");
  downloadLinks(event.id, "s-downloads", ["grid.png", "denoise.gif", "samples.npy"]);
}

// A click on the result grid picks that sprite for the edit panel (grid: 1-pixel border, cells of size+1, x4).
function pickSprite(event) {
  const grid = $("s-grid");
  if (!state.sprites.length || !grid.naturalWidth) return;
  const scale = grid.naturalWidth / grid.clientWidth;
  const cell = (state.info.model.size + 1) * 4;
  const col = Math.floor((event.offsetX * scale - 4) / cell);
  const row = Math.floor((event.offsetY * scale - 4) / cell);
  const index = row * state.gridColumns + col;
  if (col < 0 || col >= state.gridColumns || index < 0 || index >= state.sprites.length) return;
  setSlot(event.shiftKey ? "b" : "a", state.sprites[index]);
  setStatus("e-status", `Sprite ${index} is now sprite ${event.shiftKey ? "B" : "A"}.`);
  showPanel("panel-edit");
}

// ---- race panel ------------------------------------------------------------------------------------------------

let raceRun = null;
const lanes = {};

function buildRaceControls() {
  const { race, limits } = state.info;
  contextOptions($("r-context"), true);
  $("r-n").max = limits.max_race_n;
  for (const name of race.solvers) $("r-solver").append(el("option", { value: name, text: name }));
  $("r-solver").value = race.default_solver;
  const defaults = state.info.defaults.playground_race;  // spritediff/defaults.py, declared once
  $("r-context").value = defaults.context || "none";
  $("r-guidance").value = defaults.guidance;
  buildLanes(raceLanes(race.default_solver));
}

function raceLanes(solver) {  // ddpm, ddim, the solver, and a distilled student with `spritediff serve --student`
  const { race, samplers } = state.info;
  const specs = [...race.lanes, solver].map((name) => ({ lane: name, steps: samplers[name].default_steps }));
  return race.student ? [...specs, { lane: race.student.lane, steps: race.student.steps }] : specs;
}

function buildLanes(specs) {
  const box = $("lanes");
  box.replaceChildren();
  for (const key of Object.keys(lanes)) delete lanes[key];
  for (const { lane, steps } of specs) {
    const card = el("div", { class: "lane", id: `lane-${lane}`, "data-state": "idle" }, [
      el("h3", { text: `${lane.toUpperCase()} · ${steps} steps` }),
      el("img", { alt: `${lane}: x_t beside the predicted x0`, class: "lane-img" }),
      el("div", { class: "meter" }, [el("div", { class: "bar" })]),
      el("p", { class: "clock", text: "0.00 s", title: "Wall time since the race started" }),
      el("p", { class: "calls", text: `0 / ${steps} calls`, title: "Model calls made so far" }),
      el("p", { class: "rank", text: "" }),
    ]);
    box.append(card);
    lanes[lane] = { card, steps, started: 0, timer: 0 };
  }
}

async function startRace(event) {
  event.preventDefault();
  if (raceRun) raceRun.abort();
  const run = new AbortController();
  raceRun = run;
  const context = $("r-context").value;
  const body = { n: intValue("r-n"), seed: intValue("r-seed"), guidance: numValue("r-guidance"),
                 solver: $("r-solver").value, context };
  buildLanes(raceLanes(body.solver));
  state.finished = 0;
  $("lanes").dataset.state = "running";
  $("r-start").disabled = true;
  $("r-stop").disabled = false;
  setStatus("r-status", "Starting…");
  try {
    await streamEvents("/api/race", body, onRaceEvent, run.signal);
    $("lanes").dataset.state = "done";
  } catch (err) {
    setStatus("r-status", err.name === "AbortError" ? "Stopped." : err.message, err.name === "AbortError" ? "" : "error");
    $("lanes").dataset.state = "error";
  } finally {
    for (const lane of Object.values(lanes)) cancelAnimationFrame(lane.timer);
    if (raceRun === run) raceRun = null;
    $("r-start").disabled = false;
    $("r-stop").disabled = true;
  }
}

function onRaceEvent(event) {
  const lane = lanes[event.lane];
  if (event.type === "accepted") return setStatus("r-status", "Racing: every lane's calls share the model.");
  if (!lane) return;
  const card = lane.card;
  if (event.type === "queued") card.querySelector(".calls").textContent = `waiting (${event.ahead} ahead)`;
  else if (event.type === "running") startClock(lane);
  else if (event.type === "frame") {
    card.querySelector("img").src = event.image;
    card.querySelector(".calls").textContent = `${event.nfe} / ${event.of} calls`;
    card.querySelector(".bar").style.width = `${(100 * event.nfe) / event.of}%`;
  } else if (event.type === "done") finishLane(lane, event);
  else if (event.type === "error") {
    card.dataset.state = "error";
    card.querySelector(".rank").textContent = event.message;
    cancelAnimationFrame(lane.timer);
  }
}

function startClock(lane) {
  lane.started = performance.now();
  lane.card.dataset.state = "running";
  const tick = () => {
    lane.card.querySelector(".clock").textContent = seconds((performance.now() - lane.started) / 1000);
    lane.timer = requestAnimationFrame(tick);
  };
  lane.timer = requestAnimationFrame(tick);
}

function finishLane(lane, event) {
  cancelAnimationFrame(lane.timer);
  state.finished += 1;
  const card = lane.card;
  card.dataset.state = "done";
  card.dataset.rank = String(state.finished);
  card.querySelector("img").src = event.grid;
  card.querySelector(".bar").style.width = "100%";
  card.querySelector(".clock").textContent = seconds(event.seconds);
  card.querySelector(".calls").textContent = `${event.nfe} / ${lane.steps} calls`;
  const place = ["1st", "2nd", "3rd"][state.finished - 1] || `${state.finished}th`;
  card.querySelector(".rank").textContent = `finished ${place}`;
  if (state.finished === Object.keys(lanes).length) setStatus("r-status", "All lanes done.", "done");
}

// ---- edit panel ------------------------------------------------------------------------------------------------

const EDIT_HELP = {
  reconstruct: "Encode A to its DDIM latent x_T (running the ODE backwards) and decode it again; the error says how close it came.",
  interpolate: "Invert A and B, then walk between their latents on the sphere (slerp) and decode each frame.",
  vary: "SDEdit: noise A part of the way (strength) and redraw it with the context: variations, or a class change.",
  inpaint: "Redraw the painted pixels of A so they fit the rest (RePaint); the other pixels stay exactly as they are.",
};

function buildEditControls() {
  contextOptions($("e-context"), true);
  $("e-n").max = state.info.limits.max_edit_n;
  $("e-op").addEventListener("change", onOpChange);
  $("e-strength").addEventListener("input", () => { $("e-strength-out").textContent = $("e-strength").value; });
  onOpChange();
  state.mask = new Uint8Array(state.info.model.size ** 2);
  setupMaskPainting();
  for (const slot of ["a", "b"]) $(`file-${slot}`).addEventListener("change", (e) => uploadSlot(slot, e.target));
}

function onOpChange() {
  const op = $("e-op").value;
  $("e-op-help").textContent = EDIT_HELP[op];
  for (const label of document.querySelectorAll("#edit-form [data-for]")) {
    label.hidden = !label.dataset.for.split(" ").includes(op);
  }
  if (op === "inpaint") {
    $("e-strength").value = "1";
    $("e-strength-out").textContent = "1";
  }
}

function setSlot(slot, dataUrl) {
  state[slot === "a" ? "slotA" : "slotB"] = dataUrl;
  if (slot === "a") state.mask.fill(0);
  drawSlot(slot);
}

function drawSlot(slot) {
  const canvas = $(`canvas-${slot}`);
  const ctx = canvas.getContext("2d");
  const source = slot === "a" ? state.slotA : state.slotB;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!source) return;
  const image = new Image();
  image.onload = () => {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    if (slot === "a") drawMask(ctx);
  };
  image.src = source;
}

function drawMask(ctx) {
  const size = state.info.model.size;
  ctx.fillStyle = "rgba(255, 0, 200, 0.6)";
  state.mask.forEach((on, i) => { if (on) ctx.fillRect(i % size, Math.floor(i / size), 1, 1); });
}

function uploadSlot(slot, input) {
  const file = input.files[0];
  if (!file) return;
  const size = state.info.model.size;
  if (file.size > state.info.limits.max_upload_bytes) {
    setStatus("e-status", `That file is over the upload limit (${state.info.limits.max_upload_bytes / 1024} KiB).`, "error");
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    const probe = new Image();
    probe.onload = () => {
      if (probe.naturalWidth !== size || probe.naturalHeight !== size) {
        setStatus("e-status", `That image is ${probe.naturalWidth}×${probe.naturalHeight}; the model's sprites are ${size}×${size}.`, "error");
        return;
      }
      setSlot(slot, reader.result);
      setStatus("e-status", `Sprite ${slot.toUpperCase()} loaded from ${file.name}.`);
    };
    probe.src = reader.result;
  };
  reader.readAsDataURL(file);
}

function setupMaskPainting() {
  const canvas = $("canvas-a");
  let painting = 0;  // 1 paint, -1 erase
  const paint = (event) => {
    if (!painting || !$("paint-mask").checked || !state.slotA) return;
    const size = state.info.model.size;
    const x = Math.floor((event.offsetX / canvas.clientWidth) * size);
    const y = Math.floor((event.offsetY / canvas.clientHeight) * size);
    if (x < 0 || y < 0 || x >= size || y >= size) return;
    state.mask[y * size + x] = painting > 0 ? 1 : 0;
    drawSlot("a");
  };
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => { painting = e.button === 2 ? -1 : 1; paint(e); });
  canvas.addEventListener("pointermove", paint);
  window.addEventListener("pointerup", () => { painting = 0; });
  $("clear-mask").addEventListener("click", () => { state.mask.fill(0); drawSlot("a"); });
}

function editBody(op) {
  const body = { op, image: state.slotA };
  const context = $("e-context").value;
  const fields = {
    reconstruct: { method: $("e-method").value, steps: intValue("e-steps"), context },
    interpolate: { image_b: state.slotB, method: $("e-method").value, steps: intValue("e-steps"),
                   frames: intValue("e-frames"), context },
    vary: { strength: numValue("e-strength"), context, n: intValue("e-n"), seed: intValue("e-seed"),
            steps: intValue("e-steps"), guidance: numValue("e-guidance") },
    inpaint: { mask: Array.from(state.mask), strength: numValue("e-strength"), context, n: intValue("e-n"),
               seed: intValue("e-seed"), steps: intValue("e-steps"), guidance: numValue("e-guidance"),
               resample: intValue("e-resample") },
  };
  return Object.assign(body, fields[op]);
}

async function runEdit(event) {
  event.preventDefault();
  const op = $("e-op").value;
  if (!state.slotA) return setStatus("e-status", "Pick sprite A first (click one in the Sample panel's result, or upload a PNG).", "error");
  if (op === "interpolate" && !state.slotB) return setStatus("e-status", "Interpolation needs sprite B too (shift-click a sprite, or upload one).", "error");
  if (op === "inpaint" && !state.mask.some((v) => v)) return setStatus("e-status", "Paint the pixels to fill in first (tick 'paint the mask', then drag over sprite A).", "error");
  $("e-run").disabled = true;
  $("e-grid").dataset.state = "running";
  setStatus("e-status", "Running…");
  try {
    const response = await fetch("/api/edit", { method: "POST", headers: { "Content-Type": "application/json" },
                                                body: JSON.stringify(editBody(op)) });
    if (!response.ok) throw new Error(await errorText(response));
    showEditResult(await response.json());
  } catch (err) {
    setStatus("e-status", err.message, "error");
    $("e-grid").dataset.state = "error";
  } finally {
    $("e-run").disabled = false;
  }
}

function showEditResult(result) {
  const grid = $("e-grid");
  grid.onload = () => {
    grid.style.width = `${grid.naturalWidth * 2}px`;
    grid.dataset.state = "done";
  };
  grid.src = result.grid;
  let extra = "";
  if (result.errors) extra = ` Reconstruction error (MSE per pixel, 0..1 scale): ${result.errors[0].toExponential(2)}.`;
  if (result.t0 !== undefined) extra = ` Started from t0 = ${result.t0}.`;
  const layout = { reconstruct: "Input, then its reconstruction.", interpolate: "A to B along the slerp path.",
                   vary: "The input, then the results.", inpaint: "The input, the hole (grey), then the fills." };
  $("e-stats").textContent = `${layout[result.op]} NFE ${result.nfe}, ${seconds(result.seconds)}.${extra}`;
  setStatus("e-status", "Done.", "done");
  downloadLinks(result.id, "e-downloads", ["grid.png", "denoise.gif", "samples.npy"]);
}

// ---- start -----------------------------------------------------------------------------------------------------

function main() {
  setupTabs();
  zoomOnLoad($("s-live"), FRAME_ZOOM);
  $("sample-form").addEventListener("submit", startSample);
  $("s-stop").addEventListener("click", () => sampleRun && sampleRun.abort());
  $("s-dice").addEventListener("click", () => { $("s-seed").value = Math.floor(Math.random() * 1e9); });
  $("s-grid").addEventListener("click", pickSprite);
  $("race-form").addEventListener("submit", startRace);
  $("r-stop").addEventListener("click", () => raceRun && raceRun.abort());
  $("edit-form").addEventListener("submit", runEdit);
  loadInfo().catch((err) => setStatus("s-status", `Could not load the model's settings: ${err.message}`, "error"));
}

document.addEventListener("DOMContentLoaded", main);
