"use strict";
/* The Counterfeit playground (docs/playground.md). Each panel is a form over one or two
   routes of the public HTTP API (docs/http-api.md), sent as any client would send them, so
   the page is also the API's example: every panel shows the requests it made. What a
   model can do comes from its card (GET /models). No library, no build step. */

// The page is /playground/; the API is one level up (behind a proxy's prefix too).
const SERVICE = new URL("../", document.baseURI);
const KEY_STORAGE = "counterfeit.api-key";
const JOB_POLL_MS = 400;
const FINISHED_JOB = new Set(["completed", "failed", "canceled"]);
const JOB_PREVIEW = 32;  // images of a finished job drawn on the page
const random31 = () => crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;  // as the server picks

// What a panel needs of a model, read from its card the way the service decides it
// (service/runtime.py, TASKS): the panel offers only the models that can.
const CAN = {
  draw: (card) => !card.inpainting,
  score: (card) => "discriminator.onnx" in card.files && !card.inpainting,
  invert: (card) => "encoder.onnx" in card.files,
  inpaint: (card) => Boolean(card.inpainting),
};
const NONE_CAN = {
  draw: "No loaded model draws whole images: each one completes images (see Inpainting).",
  score: "No loaded model has a discriminator that scores an image alone (discriminator.onnx).",
  inpaint: "No loaded model completes images: that takes a model trained for it, whose " +
    "card declares inpainting (§7.3), such as mnist-inpaint once it is exported.",
};

let catalogue = null;  // GET /models: {default, models: {name: card}}

/* ---------- talking to the API ---------- */

class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

// A mistake caught on the page before any request (e.g. nothing drawn yet).
class PageError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

// JSON with seeds as exact integers: a seed may be up to 2^63 - 1, past what a JS number
// holds, so integer fields are BigInts and written out digit for digit.
function toJson(fields) {
  const entries = Object.entries(fields).filter(([, value]) => value !== undefined);
  return `{${entries.map(([name, value]) => `${JSON.stringify(name)}:${
    typeof value === "bigint" ? value.toString() : JSON.stringify(value)}`).join(",")}}`;
}

// multipart/form-data; a [blob, filename] pair is an uploaded file.
function toForm(fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) form.append(name, value[0], value[1]);
    else form.append(name, String(value));
  }
  return form;
}

function authorization() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? {authorization: `Bearer ${key}`} : {};
}

// One API call; any answer but a 2xx is thrown as an ApiError worded by the API.
async function call(route, {json, form, method = "POST"} = {}) {
  const headers = authorization();
  let body;
  if (json) {
    headers["content-type"] = "application/json";
    body = toJson(json);
  } else if (form) {
    body = toForm(form);  // fetch writes the multipart boundary itself
  }
  let response;
  try {
    response = await fetch(new URL(route, SERVICE), {method, headers, body});
  } catch (error) {
    throw new Error(`No answer from the service at ${SERVICE.origin} (${error.message}): ` +
      "is it running, and is this computer still connected to it?");
  }
  if (response.ok) return response;
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // not the API's JSON error: a proxy's page, say; worded below
  }
  if (answer && typeof answer.error === "string") {
    throw new ApiError(response.status, answer.error, answer.field);
  }
  throw new ApiError(response.status, `The service answered ${response.status} ` +
    `${response.statusText} without saying why (no {"error", "field"} body).`, null);
}

// The same request as a curl command, for a person to copy.
function curl(route, {json, form, output}) {
  const parts = [`curl -s -X POST ${new URL(route, SERVICE)}`];
  if (sessionStorage.getItem(KEY_STORAGE)) {
    parts.push('-H "authorization: Bearer $COUNTERFEIT_API_KEY"');
  }
  if (json) parts.push("-H 'content-type: application/json'", `-d '${toJson(json)}'`);
  for (const [name, value] of Object.entries(form ?? {})) {
    if (value !== undefined) parts.push(`-F ${name}=${Array.isArray(value) ? `@${value[1]}` : value}`);
  }
  if (output) parts.push(`-o ${output}`);
  return parts.join(" ");
}

function showRequests(panel, commands) {
  panel.querySelector(".requests pre").textContent = commands.join("\n");
}

// An integer field: BigInt when it is one, undefined when empty (the API's default), and
// anything else as typed, so that the API says what is wrong with it in its own words.
function integer(input) {
  const text = input.value.trim();
  if (text === "") return undefined;
  return /^-?\d+$/.test(text) ? BigInt(text) : text;
}

/* ---------- panels: errors, busy state, models ---------- */

const keyInput = document.querySelector("#api-key");

function clearError(panel) {
  const box = panel.querySelector(".error");
  box.hidden = true;
  box.textContent = "";
  for (const marked of document.querySelectorAll("[aria-invalid]")) {
    if (panel.contains(marked) || marked === keyInput) marked.removeAttribute("aria-invalid");
  }
}

// The error as the API worded it, and the field it names marked (and focused when it
// takes focus); a missing or wrong key marks the key field at the top.
function showError(panel, error) {
  const box = panel.querySelector(".error");
  box.textContent = error instanceof ApiError ? `${error.status}: ${error.message}` :
    error.message;
  box.hidden = false;
  if (!error.field) return;
  const targets = error.field === "authorization" ? [keyInput] :
    [...panel.querySelectorAll(`[name="${CSS.escape(error.field)}"], ` +
      `[data-field="${CSS.escape(error.field)}"]`)].filter((element) => !element.closest("[hidden]"));
  for (const target of targets) target.setAttribute("aria-invalid", "true");
  const focusable = targets.find((target) => target.matches("input, select"));
  focusable?.focus();
}

// Runs a panel's action; only the latest action of a panel may show its answer (the
// buttons stay enabled, so that focus stays where a keyboard user left it).
const latestTicket = new Map();
async function run(panel, action) {
  const ticket = (latestTicket.get(panel) ?? 0) + 1;
  latestTicket.set(panel, ticket);
  const current = () => latestTicket.get(panel) === ticket;
  clearError(panel);
  panel.setAttribute("aria-busy", "true");
  try {
    await action(current);
  } catch (error) {
    if (current()) showError(panel, error);
  } finally {
    if (current()) panel.removeAttribute("aria-busy");
  }
}

function setAvailable(panel, why) {
  const note = panel.querySelector(".unavailable");
  note.textContent = why ?? "";
  note.hidden = !why;
  panel.querySelector("form > fieldset").disabled = Boolean(why);
}

// Fills a panel's model list with the models that can do `task`, and keeps its class list
// (§7.1, conditional models only) in step with the chosen one. `onModel(card)` runs on
// every change. Returns whether any model can.
function offerModels(form, task, onModel = () => {}) {
  const select = form.elements.model;
  const names = Object.keys(catalogue.models).filter((name) => CAN[task](catalogue.models[name]));
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.length === 0) return false;
  select.value = names.includes(catalogue.default) ? catalogue.default : names[0];
  const update = () => {
    const card = catalogue.models[select.value];
    const field = form.querySelector(".label-field");
    if (field) {
      const names = card.conditioning?.names ?? [];
      const options = names.map((name, i) => new Option(name, String(i)));
      if (form.elements.label.dataset.each !== undefined && names.length) {
        options.unshift(new Option("each class in turn", "each"));
      }
      form.elements.label.replaceChildren(...options);
      field.hidden = !card.conditioning;
    }
    onModel(card);
  };
  select.onchange = update;  // assigned, not added: this runs again when /models is reloaded
  update();
  return true;
}

// The `label` field of a request: none for an unconditional model; "each" is every class
// in turn, one per image.
function labelOf(form, count) {
  const field = form.querySelector(".label-field");
  if (!field || field.hidden) return undefined;
  const value = form.elements.label.value;
  if (value !== "each") return Number(value);
  const classes = form.elements.label.options.length - 1;
  return Array.from({length: Number(count ?? 16)}, (_, i) => i % classes);
}

function currentCard(form) {
  return catalogue.models[form.elements.model.value];
}

// Shows an API image (a PNG grid) in an <img>, freeing the one it replaces.
function showPicture(img, blob) {
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
}

/* ---------- .npy in, canvases out ---------- */

// A .npy file (numpy's format 1.0-3.0, C order): {shape, data} with data a Float32Array
// (the service's float32 images) or a Uint8Array (a job's result).
function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.subarray(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error("not a .npy file");
  const view = new DataView(buffer);
  const start = bytes[6] === 1 ? 10 : 12;
  const length = bytes[6] === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const header = new TextDecoder("latin1").decode(bytes.subarray(start, start + length));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "")
    .split(",").filter((part) => part.trim()).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  // copied out: a Float32Array needs its start aligned to 4 bytes
  const data = buffer.slice(start + length);
  if (descr === "<f4") return {shape, data: new Float32Array(data, 0, count)};
  if (descr === "|u1") return {shape, data: new Uint8Array(data, 0, count)};
  throw new Error(`a .npy of ${descr}, not float32 or uint8`);
}

// Images `first` .. `first + count - 1` of an (n, H, W) or (n, C, H, W) array into the
// canvas, `cols` a row, 2-pixel white gaps between them, one canvas pixel per image pixel
// (CSS enlarges it).
function drawImages(canvas, array, first, count, cols) {
  const image = array.shape.slice(1);
  const [channels, height, width] = image.length === 2 ? [1, ...image] : image;
  const gap = 2;
  const rows = Math.ceil(count / cols);
  canvas.width = cols * width + (cols - 1) * gap;
  canvas.height = rows * height + (rows - 1) * gap;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(canvas.width, canvas.height);
  pixels.data.fill(255);
  const scale = array.data instanceof Uint8Array ? 1 : 255;
  const plane = height * width;
  for (let n = 0; n < count; n++) {
    const offset = (first + n) * channels * plane;
    const left = (n % cols) * (width + gap);
    const top = Math.floor(n / cols) * (height + gap);
    for (let p = 0; p < plane; p++) {
      const at = 4 * ((top + Math.floor(p / width)) * canvas.width + left + (p % width));
      for (let c = 0; c < 3; c++) {
        const value = array.data[offset + (channels === 3 ? c * plane : 0) + p] * scale;
        pixels.data[at + c] = Math.round(Math.min(255, Math.max(0, value)));
      }
    }
  }
  context.putImageData(pixels, 0, 0);
}

/* ---------- drawing pads ---------- */

const INK_RADIUS = 2;  // pixels of a 28-pixel-wide image: MNIST's strokes are ~3 wide
const MASK_RADIUS = 2;

// A canvas of the model's image size (shown enlarged) to draw on with a mouse, a finger
// or a pen: grey ink, white on black as in MNIST; or, with `over`, a mask painted on top
// of another pad's digit. Its values are in [0, 1], one per pixel.
class Pad {
  constructor(canvas, {over = null, onChange = () => {}} = {}) {
    this.canvas = canvas;
    this.over = over;
    this.onChange = onChange;
    this.last = null;
    this.resize(28, 28);
    canvas.addEventListener("pointerdown", (event) => this.down(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    canvas.addEventListener("pointerup", () => this.up());
    canvas.addEventListener("pointercancel", () => this.up());
  }

  // Another model's image size: a drawing is kept, scaled; a mask is cleared (it hid the
  // pixels of the old size).
  resize(height, width) {
    if (this.height === height && this.width === width) return;
    let drawing = null;
    if (!this.over && this.values && !this.isEmpty()) {
      drawing = document.createElement("canvas");
      drawing.width = this.width;
      drawing.height = this.height;
      drawing.getContext("2d").drawImage(this.canvas, 0, 0);
    }
    this.height = height;
    this.width = width;
    this.values = new Float32Array(height * width);
    this.canvas.width = width;
    this.canvas.height = height;
    if (drawing) this.take(drawing);
    this.render();
  }

  clear() {
    this.values.fill(0);
    this.render();
    this.onChange();
  }

  isEmpty() {
    return !this.values.some((value) => value > 0);
  }

  at(event) {
    const box = this.canvas.getBoundingClientRect();
    return [(event.clientX - box.left) / box.width * this.width,
      (event.clientY - box.top) / box.height * this.height];
  }

  down(event) {
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this.last = this.at(event);
    this.stamp(...this.last);
    this.render();
  }

  move(event) {
    if (!this.last) return;
    const [x0, y0] = this.last;
    const [x1, y1] = this.at(event);
    const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) * 4));
    for (let i = 1; i <= steps; i++) this.stamp(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps);
    this.last = [x1, y1];
    this.render();
  }

  up() {
    if (!this.last) return;
    this.last = null;
    this.onChange();
  }

  // Ink fades out over the brush's outer half, as a pen's stroke does; a mask is all or nothing.
  stamp(x, y) {
    const radius = (this.over ? MASK_RADIUS : INK_RADIUS) * this.width / 28;
    for (let row = Math.max(0, Math.floor(y - radius)); row < Math.min(this.height, y + radius); row++) {
      for (let col = Math.max(0, Math.floor(x - radius)); col < Math.min(this.width, x + radius); col++) {
        const distance = Math.hypot(col + 0.5 - x, row + 0.5 - y);
        const value = this.over ? Number(distance <= radius) :
          Math.min(1, Math.max(0, 2 * (radius - distance) / radius));
        const i = row * this.width + col;
        this.values[i] = Math.max(this.values[i], value);
      }
    }
  }

  render() {
    const context = this.canvas.getContext("2d");
    const pixels = context.createImageData(this.width, this.height);
    const under = this.over?.values.length === this.values.length ? this.over.values : null;
    for (let i = 0; i < this.values.length; i++) {
      const grey = Math.round(255 * (under ? under[i] : this.values[i]));
      // a hidden pixel: the digit's grey tinted orange
      const rgb = under && this.values[i] ? [255, 120 + grey / 3, grey / 3] : [grey, grey, grey];
      pixels.data.set([...rgb, 255], 4 * i);
    }
    context.putImageData(pixels, 0, 0);
  }

  // An image (any size) scaled to the pad and read as grey, as the service reads a PNG.
  take(source) {
    const scratch = document.createElement("canvas");
    scratch.width = this.width;
    scratch.height = this.height;
    const context = scratch.getContext("2d");
    context.fillRect(0, 0, this.width, this.height);  // transparent pixels read as black
    context.drawImage(source, 0, 0, this.width, this.height);
    const {data} = context.getImageData(0, 0, this.width, this.height);
    for (let i = 0; i < this.values.length; i++) {
      this.values[i] = (0.299 * data[4 * i] + 0.587 * data[4 * i + 1] + 0.114 * data[4 * i + 2]) / 255;
    }
  }

  // An uploaded image; a dark digit on light paper is turned into MNIST's white on black.
  async load(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      throw new PageError(`${file.name}: not an image this browser can read`, "file");
    }
    this.take(bitmap);
    if (this.values.reduce((a, b) => a + b, 0) > this.values.length / 2) {
      this.values.forEach((value, i) => { this.values[i] = 1 - value; });
    }
    this.render();
    this.onChange();
  }

  // The pad as a PNG of the image's size: the digit in grey, or the mask white where hidden.
  png() {
    const scratch = document.createElement("canvas");
    scratch.width = this.width;
    scratch.height = this.height;
    const context = scratch.getContext("2d");
    const pixels = context.createImageData(this.width, this.height);
    this.values.forEach((value, i) => {
      const grey = Math.round(255 * value);
      pixels.data.set([grey, grey, grey, 255], 4 * i);
    });
    context.putImageData(pixels, 0, 0);
    return new Promise((resolve) => scratch.toBlob(resolve, "image/png"));
  }
}

// A pad in a panel: its canvas, its Clear button and its upload field.
function padIn(container, options) {
  const pad = new Pad(container.querySelector("canvas"), options);
  container.querySelector("[data-action=clear]")?.addEventListener("click", () => pad.clear());
  const upload = container.querySelector("input[type=file]");
  upload?.addEventListener("change", async () => {
    const panel = container.closest(".panel");
    clearError(panel);
    try {
      if (upload.files[0]) await pad.load(upload.files[0]);
    } catch (error) {
      showError(panel, error);
    }
    upload.value = "";  // the same file again is a change too
  });
  return pad;
}

function resizePads(card, ...pads) {
  const shape = card.image.shape;
  for (const pad of pads) pad.resize(shape[shape.length - 2], shape[shape.length - 1]);
}

/* ---------- the panels ---------- */

function samplesPanel() {
  const panel = document.querySelector("#samples");
  const form = panel.querySelector("form");
  const again = form.querySelector("[data-action=again]");
  const status = panel.querySelector(".status");
  const picture = panel.querySelector(".picture");
  let lastSeed = null;
  form.elements.label.dataset.each = "";  // /sample takes one class per image

  const draw = () => run(panel, async (current) => {
    const request = {n: integer(form.elements.n), seed: integer(form.elements.seed),
      model: form.elements.model.value, label: labelOf(form, form.elements.n.value)};
    showRequests(panel, [curl("sample", {json: request, output: "samples.png"})]);
    const response = await call("sample", {json: request});
    const blob = await response.blob();
    if (!current()) return;
    lastSeed = response.headers.get("x-seed");
    showPicture(picture, blob);
    picture.alt = `${request.n ?? 16} images that ${request.model} drew from seed ${lastSeed}`;
    status.textContent = `${request.model}, seed ${lastSeed} (the X-Seed header): ` +
      "“Same again” draws these again.";
    again.disabled = false;
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    draw();
  });
  form.querySelector("[data-action=random]").addEventListener("click", () => {
    form.elements.seed.value = String(random31());
    draw();
  });
  again.addEventListener("click", () => {
    form.elements.seed.value = lastSeed;
    draw();
  });
  return {
    models() {
      const able = offerModels(form, "draw");
      setAvailable(panel, able ? null : NONE_CAN.draw);
      if (able && !picture.src) draw();  // something to look at from the start
    },
  };
}

function interpolationPanel() {
  const panel = document.querySelector("#interpolation");
  const form = panel.querySelector("form");
  const status = panel.querySelector(".status");
  const walk = panel.querySelector(".walk");
  const canvas = panel.querySelector("canvas.step");
  const slider = panel.querySelector("#interpolation-slider");
  const position = panel.querySelector("output");
  const note = panel.querySelector("[data-note=encoder]");
  const pads = {start: padIn(panel.querySelector("[data-pad=start]")),
    end: padIn(panel.querySelector("[data-pad=end]"))};
  let path = null;  // the walk's images, fetched once: the slider only redraws

  const showStep = () => {
    const step = Number(slider.value);
    drawImages(canvas, path, step, 1, 1);
    position.value = `${step + 1} of ${path.shape[0]}`;
  };
  slider.addEventListener("input", showStep);

  const showEnds = () => {
    const ends = form.elements.ends.value;
    for (const group of form.querySelectorAll("[data-ends]")) group.hidden = group.dataset.ends !== ends;
  };
  for (const radio of form.elements.ends) radio.addEventListener("change", showEnds);

  // §7.2 needs the model's encoder: without one the digits choice is off, saying why.
  const onModel = (card) => {
    const digits = form.querySelector("input[value=digits]");
    digits.disabled = !CAN.invert(card);
    if (digits.disabled && digits.checked) form.querySelector("input[value=seeds]").checked = true;
    const able = Object.keys(catalogue.models).filter((name) =>
      CAN.draw(catalogue.models[name]) && CAN.invert(catalogue.models[name]));
    note.textContent = `${card.name} has no encoder (encoder.onnx), so it cannot turn a ` +
      `digit into its z. ${able.length ? `Models that can: ${able.join(", ")}.` : "No loaded model can."}`;
    note.hidden = !digits.disabled;
    resizePads(card, pads.start, pads.end);
    showEnds();
  };

  // z = E(x) of a pad's digit, from /invert
  const latentOf = async (pad, name, model) => {
    if (pad.isEmpty()) throw new PageError(`Draw or upload the ${name} digit first.`, `z_${name}`);
    const form = {file: [await pad.png(), `${name}.png`], model};
    const answer = await (await call("invert", {form})).json();
    return answer.z[0];
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(panel, async (current) => {
      const request = {steps: integer(form.elements.steps), method: form.elements.method.value,
        model: form.elements.model.value, label: labelOf(form), format: "npy"};
      if (form.elements.ends.value === "seeds") {
        request.seed_start = integer(form.elements.seed_start);
        request.seed_end = integer(form.elements.seed_end);
        showRequests(panel, [curl("interpolate", {json: request, output: "path.npy"})]);
      } else {
        // the z vectors are 100 numbers or so: the command names where they come from
        showRequests(panel, [
          ...["start", "end"].map((end) =>
            curl("invert", {form: {file: [null, `${end}.png`], model: request.model}})),
          curl("interpolate", {json: {...request, z_start: "<z[0] of start.png>",
            z_end: "<z[0] of end.png>"}, output: "path.npy"})]);
        [request.z_start, request.z_end] = await Promise.all([
          latentOf(pads.start, "start", request.model), latentOf(pads.end, "end", request.model)]);
      }
      const answer = parseNpy(await (await call("interpolate", {json: request})).arrayBuffer());
      if (!current()) return;
      path = answer;
      slider.max = String(path.shape[0] - 1);
      slider.value = "0";
      walk.hidden = false;
      showStep();
      status.textContent = `${path.shape[0]} images of ${request.model} along the path: ` +
        "move the slider to walk it.";
    });
  });
  return {
    models() {
      const able = offerModels(form, "draw", onModel);
      setAvailable(panel, able ? null : NONE_CAN.draw);
    },
  };
}

function scoringPanel() {
  const panel = document.querySelector("#scoring");
  const form = panel.querySelector("form");
  const status = panel.querySelector(".status");
  const score = panel.querySelector(".score");
  const meter = panel.querySelector("meter");
  const reconstruction = panel.querySelector(".reconstruction");
  const note = panel.querySelector("[data-note=encoder]");
  const pad = padIn(panel.querySelector(".pad"));

  const onModel = (card) => {
    resizePads(card, pad);
    note.textContent = `${card.name} has no encoder (encoder.onnx): D's score only, no ` +
      "reconstruction G(E(x)).";
    note.hidden = CAN.invert(card);
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(panel, async (current) => {
      if (pad.isEmpty()) throw new PageError("Draw or upload a digit first.", "file");
      const card = currentCard(form);
      const file = [await pad.png(), "digit.png"];
      const request = {file, model: card.name, label: labelOf(form)};
      const inverts = CAN.invert(card);
      const commands = [curl("score", {form: request})];
      if (inverts) {
        commands.push(curl("invert", {form: {file, model: card.name}}),
          curl("invert", {form: {file, model: card.name, format: "png"}, output: "pair.png"}));
      }
      showRequests(panel, commands);
      const [scored, inverted, pair] = await Promise.all([
        call("score", {form: request}).then((response) => response.json()),
        inverts ? call("invert", {form: {file, model: card.name}}).then((r) => r.json()) : null,
        inverts ? call("invert", {form: {file, model: card.name, format: "png"}}).then((r) => r.blob()) : null,
      ]);
      if (!current()) return;
      const d = scored.scores[0];
      meter.value = d;
      score.hidden = false;
      status.textContent = `D(x) = ${d.toFixed(3)}: ${card.name}'s D takes your digit for ` +
        `${d >= 0.5 ? "a real one" : "one of G's fakes"}.`;
      reconstruction.hidden = !inverts;
      if (inverts) {
        showPicture(reconstruction.querySelector("img"), pair);
        const dOfG = inverted.scores ? `, and D(G(E(x))) = ${inverted.scores[0].toFixed(3)}` : "";
        reconstruction.querySelector("figcaption").textContent = "Left, your digit; right, " +
          `G(E(x)): mean squared pixel error ${inverted.pixel_error[0].toFixed(4)}${dOfG}.`;
      }
    });
  });
  return {
    models() {
      const able = offerModels(form, "score", onModel);
      setAvailable(panel, able ? null : NONE_CAN.score);
    },
  };
}

function inpaintingPanel() {
  const panel = document.querySelector("#inpainting");
  const form = panel.querySelector("form");
  const status = panel.querySelector(".status");
  const picture = panel.querySelector(".picture");
  const hiddenShown = panel.querySelector("output");
  const digit = padIn(panel.querySelector(".pad"), {onChange: () => mask.render()});
  const mask = new Pad(panel.querySelector("canvas.mask"), {over: digit});
  panel.querySelector("[data-action=clear-mask]").addEventListener("click", () => mask.clear());

  // a half always hides half the pixels: the share applies to the other shapes
  const showMasks = () => {
    for (const group of form.querySelectorAll("[data-masks]")) {
      group.hidden = group.dataset.masks !== form.elements.masks.value;
    }
    form.elements.hidden.disabled = form.elements.family.value === "half";
    hiddenShown.value = `${Math.round(100 * form.elements.hidden.value)}%`;
  };
  for (const radio of form.elements.masks) radio.addEventListener("change", showMasks);
  form.elements.family.addEventListener("change", showMasks);
  form.elements.hidden.addEventListener("input", showMasks);

  const onModel = (card) => {
    const families = card.inpainting.families;
    form.elements.family.replaceChildren(...families.map((family) => new Option(family, family)));
    resizePads(card, digit, mask);
    showMasks();
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(panel, async (current) => {
      if (digit.isEmpty()) throw new PageError("Draw or upload a digit first.", "file");
      const request = {file: [await digit.png(), "digit.png"], k: integer(form.elements.k),
        seed: integer(form.elements.seed), model: form.elements.model.value};
      if (form.elements.masks.value === "family") {
        request.family = form.elements.family.value;
        if (!form.elements.hidden.disabled) request.hidden = form.elements.hidden.value;
      } else {
        if (mask.isEmpty()) throw new PageError("Paint the pixels G should fill in.", "mask");
        request.mask = [await mask.png(), "mask.png"];
      }
      showRequests(panel, [curl("inpaint", {form: request, output: "completions.png"})]);
      const response = await call("inpaint", {form: request});
      const blob = await response.blob();
      if (!current()) return;
      const seed = response.headers.get("x-seed");
      const k = request.k ?? 8;
      showPicture(picture, blob);
      picture.alt = `Your digit, the masked input and ${k} completions by ${request.model}`;
      status.textContent = `${k} completions by ${request.model}, seed ${seed}: your digit, ` +
        "what G was shown (hidden pixels grey), then each completion.";
    });
  });
  return {
    models() {
      const able = offerModels(form, "inpaint", onModel);
      setAvailable(panel, able ? null : NONE_CAN.inpaint);
    },
  };
}

function jobsPanel() {
  const panel = document.querySelector("#jobs");
  const form = panel.querySelector("form");
  const cancel = form.querySelector("[data-action=cancel]");
  const progress = panel.querySelector("progress");
  const status = panel.querySelector(".status");
  const download = panel.querySelector(".download");
  const preview = panel.querySelector(".preview");
  const previewCanvas = preview.querySelector("canvas");
  let jobId = null;  // the job this panel follows; a newer one replaces it

  const show = (job) => {
    progress.hidden = false;
    progress.value = job.progress;
    const percent = Math.round(100 * job.progress);
    status.textContent = `Job ${job.job_id}: ${job.state}, ${job.done} of ${job.n} images ` +
      `(${percent}%), seed ${job.seed}${job.error ? `: ${job.error}` : ""}.`;
    cancel.disabled = FINISHED_JOB.has(job.state);
  };

  const fetchResult = async (job) => {
    const blob = await (await call("jobs/result", {json: {job_id: job.job_id}})).blob();
    if (job.job_id !== jobId) return;
    if (download.href) URL.revokeObjectURL(download.href);
    download.href = URL.createObjectURL(blob);
    download.download = `${job.job_id}.npy`;
    download.textContent = `Download the ${job.n} images (${job.job_id}.npy, ` +
      `${(blob.size / 1e6).toFixed(1)} MB, uint8)`;
    download.hidden = false;
    const images = parseNpy(await blob.arrayBuffer());
    const count = Math.min(JOB_PREVIEW, images.shape[0]);
    drawImages(previewCanvas, images, 0, count, Math.min(8, count));
    const caption = `The first ${count} of the job's ${job.n} images, read from the .npy.`;
    previewCanvas.setAttribute("aria-label", caption);
    preview.querySelector("figcaption").textContent = caption;
    preview.hidden = false;
  };

  const follow = async (job) => {
    while (job.job_id === jobId && !FINISHED_JOB.has(job.state)) {
      await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
      const answer = await (await call("jobs/status", {json: {job_id: job.job_id}})).json();
      if (answer.job_id !== jobId) return;
      job = answer;
      show(job);
    }
    if (job.state === "completed") await fetchResult(job);
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(panel, async () => {
      const request = {n: integer(form.elements.n), seed: integer(form.elements.seed),
        model: form.elements.model.value, label: labelOf(form)};
      const job = await (await call("jobs/submit", {json: request})).json();
      jobId = job.job_id;
      download.hidden = true;
      preview.hidden = true;
      const id = {job_id: job.job_id};
      showRequests(panel, [curl("jobs/submit", {json: request}), curl("jobs/status", {json: id}),
        curl("jobs/result", {json: id, output: `${job.job_id}.npy`}),
        curl("jobs/cancel", {json: id})]);
      show(job);
      await follow(job);
    });
  });
  cancel.addEventListener("click", () => run(panel, async () => {
    show(await (await call("jobs/cancel", {json: {job_id: jobId}})).json());
  }));
  return {
    models() {
      const able = offerModels(form, "draw");
      setAvailable(panel, able ? null : NONE_CAN.draw);
    },
  };
}

/* ---------- the page ---------- */

const panels = [samplesPanel(), interpolationPanel(), scoringPanel(), inpaintingPanel(),
  jobsPanel()];
const siteHeader = document.querySelector("header.site");

// Every panel waits for GET /models: until then (or when it fails, e.g. for want of a
// key) they are off, and the header says why in the API's words.
async function loadModels() {
  const modelsStatus = document.querySelector("#models-status");
  for (const section of document.querySelectorAll(".panel")) {
    setAvailable(section, "Waiting for the list of models (GET /models).");
  }
  clearError(siteHeader);
  try {
    catalogue = await (await call("models", {method: "GET"})).json();
  } catch (error) {
    modelsStatus.textContent = "";
    showError(siteHeader, error);
    for (const section of document.querySelectorAll(".panel")) {
      setAvailable(section, "The list of models (GET /models) did not load: see the " +
        "message at the top.");
    }
    if (error.field === "authorization") {
      document.querySelector("#key-hint").textContent = "This server wants a key: paste " +
        "it here and press “Use key”.";
    }
    return;
  }
  const names = Object.keys(catalogue.models);
  modelsStatus.textContent = `${names.length} model${names.length === 1 ? "" : "s"} served: ` +
    `${names.join(", ")}.`;
  for (const panel of panels) panel.models();
}

function showKeyHint() {
  document.querySelector("#key-hint").textContent = sessionStorage.getItem(KEY_STORAGE) ?
    "A key is in use in this tab (sessionStorage), sent as Authorization: Bearer." :
    "No key in use: none is needed unless the server's operator set one.";
}

document.querySelector("#access").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  showKeyHint();
  loadModels();
});
document.querySelector("#forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  keyInput.value = "";
  showKeyHint();
  loadModels();
});
keyInput.value = sessionStorage.getItem(KEY_STORAGE) ?? "";
showKeyHint();
loadModels();
