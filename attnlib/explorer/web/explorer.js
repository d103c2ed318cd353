"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const info = { draws: 0, ready: false, errors: [] };
  window.explorer = info;
  function fail(err) {
    const text = String(err && err.stack || err);
    info.errors.push(text);
    $("error").textContent = "The explorer failed: " + text;
    console.error(err);
  }
  window.addEventListener("error", (e) => fail(e.error || e.message));
  window.addEventListener("unhandledrejection", (e) => fail(e.reason));

  const D = JSON.parse($("attention-data").textContent);
  const ALPHA = 0.7, QUERY_PX = 252;
  const CMAP = bytesOfHex(D.cmap);
  const state = Object.assign({ pinned: false }, D.start);
  info.state = state;
  const decoded = new Map(), pictures = new Map();
  const work = document.createElement("canvas");
  let ticket = 0, panels = [];

  function bytesOfHex(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }
  function bytesOfBase64(text) {
    const bin = atob(text), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  async function gunzip(bytes) {
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser has no DecompressionStream: open the page in a current Chromium, Firefox or Safari");
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  // Per layer: lo, hi (float32, heads x T), q (uint8, heads x T x K), each padded to 4 bytes.
  function decodeLayers(run, bytes) {
    let off = 0;
    const layers = run.layers.map((L) => {
      const T = L.grid[0] * L.grid[1], K = L.window ? L.window * L.window : T, n = L.heads * T;
      const lo = new Float32Array(bytes.buffer, bytes.byteOffset + off, n); off += 4 * n;
      const hi = new Float32Array(bytes.buffer, bytes.byteOffset + off, n); off += 4 * n;
      const q = new Uint8Array(bytes.buffer, bytes.byteOffset + off, n * K); off += n * K + ((4 - (n * K) % 4) % 4);
      return { lo, hi, q, T, K };
    });
    if (off !== bytes.length) throw new Error("stored maps of " + run.label + " do not match its layers");
    return layers;
  }
  function mapsKey(run) {
    if (run.positional) return "shared";
    return state.mean && run.blobs.mean ? "mean" : String(state.image);
  }
  function maps(ri, key) {
    const k = ri + "/" + key;
    if (!decoded.has(k)) {
      const run = D.runs[ri];
      decoded.set(k, gunzip(bytesOfBase64(run.blobs[key])).then((b) => decodeLayers(run, b)));
    }
    return decoded.get(k);
  }
  function picture(si, ii) {
    const k = si + "/" + ii;
    if (!pictures.has(k)) {
      const set = D.imageSets[si], S = set.size, C = set.channels, px = bytesOfBase64(set.images[ii].pixels);
      const rgba = new Uint8ClampedArray(S * S * 4), gray = new Float32Array(S * S);
      for (let p = 0; p < S * S; p++) {
        const r = px[p], g = C === 3 ? px[S * S + p] : r, b = C === 3 ? px[2 * S * S + p] : r;
        rgba[4 * p] = r; rgba[4 * p + 1] = g; rgba[4 * p + 2] = b; rgba[4 * p + 3] = 255;
        gray[p] = C === 3 ? (0.299 * r + 0.587 * g + 0.114 * b) / 255 : r / 255;
      }
      pictures.set(k, { S, rgba, gray });
    }
    return pictures.get(k);
  }
  function pixelToToken(L, r, c) {
    return [Math.min(Math.floor(r / L.stride), L.grid[0] - 1), Math.min(Math.floor(c / L.stride), L.grid[1] - 1)];
  }
  function keyToken(L, token, k) {
    if (!L.window) return [Math.floor(k / L.grid[1]), k % L.grid[1]];
    const h = (L.window - 1) / 2;
    return [token[0] + Math.floor(k / L.window) - h, token[1] + (k % L.window) - h];
  }
  function queryValues(L, m, head, token) {
    const row = head * m.T + token[0] * L.grid[1] + token[1], lo = m.lo[row], span = m.hi[row] - lo, base = row * m.K;
    const out = new Float32Array(m.K);
    for (let k = 0; k < m.K; k++) out[k] = lo + (m.q[base + k] / 255) * span;
    return out;
  }
  function viewBox(L, token, S) {  // [x0, y0, side] in image pixels: the whole image, or 7x7 tokens around the query
    if (!state.zoom) return [0, 0, S];
    const s = L.stride, half = 3.5 * s;
    return [(token[1] + 0.5) * s - half, (token[0] + 0.5) * s - half, 7 * s];
  }
  function drawHead(canvas, L, values, token, pic) {
    const S = pic.S, s = L.stride;
    work.width = S; work.height = S;
    const wctx = work.getContext("2d"), img = wctx.createImageData(S, S), d = img.data;
    for (let p = 0; p < S * S; p++) {
      const g = Math.round(pic.gray[p] * 255);
      d[4 * p] = g; d[4 * p + 1] = g; d[4 * p + 2] = g; d[4 * p + 3] = 255;
    }
    let lo = 0, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!(hi > lo)) hi = lo + 1e-12;
    for (let k = 0; k < values.length; k++) {
      const [kr, kc] = keyToken(L, token, k);
      const ci = Math.max(0, Math.min(255, Math.round(((values[k] - lo) / (hi - lo)) * 255)));
      const cr = CMAP[3 * ci], cg = CMAP[3 * ci + 1], cb = CMAP[3 * ci + 2];
      for (let y = Math.max(0, kr * s); y < Math.min(S, (kr + 1) * s); y++) {
        for (let x = Math.max(0, kc * s); x < Math.min(S, (kc + 1) * s); x++) {
          const p = 4 * (y * S + x);
          d[p] = (1 - ALPHA) * d[p] + ALPHA * cr;
          d[p + 1] = (1 - ALPHA) * d[p + 1] + ALPHA * cg;
          d[p + 2] = (1 - ALPHA) * d[p + 2] + ALPHA * cb;
        }
      }
    }
    wctx.putImageData(img, 0, 0);
    const ctx = canvas.getContext("2d"), W = canvas.width, [x0, y0, side] = viewBox(L, token, S), k = W / side;
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, W, W);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(work, -x0 * k, -y0 * k, S * k, S * k);
    ctx.strokeStyle = "cyan"; ctx.lineWidth = 1.5;
    ctx.strokeRect((token[1] * s - x0) * k, (token[0] * s - y0) * k, s * k, s * k);
  }
  function drawQuery(pic, L) {
    const c = $("query-canvas"), ctx = c.getContext("2d"), S = pic.S, k = c.width / S;
    work.width = S; work.height = S;
    work.getContext("2d").putImageData(new ImageData(pic.rgba, S, S), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(work, 0, 0, c.width, c.height);
    if (L) {
      const t = pixelToToken(L, state.row, state.col), s = L.stride;
      ctx.strokeStyle = "cyan"; ctx.lineWidth = 2;
      ctx.strokeRect(t[1] * s * k, t[0] * s * k, s * k, s * k);
    }
    ctx.strokeStyle = "yellow"; ctx.lineWidth = 1;
    ctx.strokeRect(state.col * k + 0.5, state.row * k + 0.5, k - 1, k - 1);
  }
  function shownLayers(run) {
    return state.layer === "all" ? run.layers.map((_, i) => i) : [Math.min(state.layer, run.layers.length - 1)];
  }
  function buildPanels() {
    const run = D.runs[state.run], box = $("heads"), all = state.layer === "all";
    const heads = Math.max(...run.layers.map((L) => L.heads)), px = all || heads > 8 ? (heads > 12 ? 72 : 84) : 112;
    box.textContent = "";
    panels = [];
    for (const li of shownLayers(run)) {
      const L = run.layers[li], row = document.createElement("div");
      row.className = "layer-row";
      const name = document.createElement("div");
      name.className = "layer-name"; name.textContent = L.name;
      row.appendChild(name);
      for (let h = 0; h < L.heads; h++) {
        const fig = document.createElement("figure"), cap = document.createElement("figcaption"), c = document.createElement("canvas");
        fig.className = "head"; c.width = px; c.height = px;
        c.dataset.layer = li; c.dataset.head = h;
        cap.textContent = (run.model.startsWith("san") ? "group " : "head ") + (h + 1);
        fig.appendChild(cap); fig.appendChild(c); row.appendChild(fig);
        c.addEventListener("mousemove", (e) => hoverHead(e, li, h));
        c.addEventListener("mouseleave", () => { $("hover").textContent = ""; });
        panels.push({ canvas: c, layer: li, head: h });
      }
      box.appendChild(row);
    }
  }
  let current = null;  // what is drawn: {run, layers (decoded), pic}
  function hoverHead(e, li, h) {
    if (!current) return;
    const run = D.runs[current.run], L = run.layers[li], c = e.target, r = c.getBoundingClientRect();
    const token = pixelToToken(L, state.row, state.col), [x0, y0, side] = viewBox(L, token, current.pic.S);
    const px = x0 + ((e.clientX - r.left) / r.width) * side, py = y0 + ((e.clientY - r.top) / r.height) * side;
    const key = [Math.floor(py / L.stride), Math.floor(px / L.stride)];
    const values = queryValues(L, current.layers[li], h, token);
    let k = -1;
    if (L.window) {
      const hw = (L.window - 1) / 2, dr = key[0] - token[0] + hw, dc = key[1] - token[1] + hw;
      if (dr >= 0 && dr < L.window && dc >= 0 && dc < L.window) k = dr * L.window + dc;
    } else if (key[0] >= 0 && key[0] < L.grid[0] && key[1] >= 0 && key[1] < L.grid[1]) {
      k = key[0] * L.grid[1] + key[1];
    }
    $("hover").textContent = k < 0 ? "" : `${L.name}, ${run.model.startsWith("san") ? "group" : "head"} ${h + 1}: key token (${key[0]}, ${key[1]}) ` +
      `${L.normalized ? "gets" : "has weight"} ${values[k].toPrecision(3)}` + (L.normalized ? " of the query's attention" : "");
  }
  function describe(run, L, m, token, set) {
    const what = run.positional ? `${set.images[state.image].label} (positional: the same maps for every image)`
      : state.mean && run.blobs.mean ? `mean over ${run.meanOver} test images (${set.images[state.image].label} shown)`
      : set.images[state.image].label;
    const v = queryValues(L, m, 0, token);
    let best = 0;
    for (let k = 1; k < v.length; k++) if (v[k] > v[best]) best = k;
    const peak = keyToken(L, token, best);
    return `${run.label} · ${state.layer === "all" ? "all layers, " : ""}${L.name} · query pixel (${state.row}, ${state.col}) = ` +
      `token (${token[0]}, ${token[1]}) · ${what} · ${run.model.startsWith("san") ? "group" : "head"} 1 attends most to token (${peak[0]}, ${peak[1]})`;
  }
  async function render() {
    const mine = ++ticket, ri = state.run, run = D.runs[ri];
    let layers;
    try {
      layers = await maps(ri, mapsKey(run));
    } catch (err) {
      fail(err);
      return;
    }
    if (mine !== ticket) return;  // a newer state is being drawn
    const set = D.imageSets[run.imageSet], pic = picture(run.imageSet, state.image);
    current = { run: ri, layers, pic };
    for (const p of panels) {
      const L = run.layers[p.layer], token = pixelToToken(L, state.row, state.col);
      drawHead(p.canvas, L, queryValues(L, layers[p.layer], p.head, token), token, pic);
    }
    const li = shownLayers(run)[0], L = run.layers[li];
    drawQuery(pic, L);
    $("status").textContent = describe(run, L, layers[li], pixelToToken(L, state.row, state.col), set);
    $("row-out").textContent = state.row; $("col-out").textContent = state.col;
    $("row").value = state.row; $("col").value = state.col;
    info.draws += 1; info.ready = true;
    document.body.dataset.ready = "1";
  }
  function fillSelect(sel, options, value) {
    sel.textContent = "";
    for (const [v, text] of options) {
      const o = document.createElement("option");
      o.value = v; o.textContent = text; sel.appendChild(o);
    }
    sel.value = String(value);
  }
  function fillRuns(sel, value) {  // grouped: positional-only runs (stored once), content-based runs
    sel.textContent = "";
    for (const [positional, title] of [[true, "positional attention only (the same on every image)"],
                                       [false, "content-based attention (per image)"]]) {
      const group = document.createElement("optgroup");
      group.label = title;
      D.runs.forEach((r, i) => {
        if (r.positional !== positional) return;
        const o = document.createElement("option");
        o.value = i; o.textContent = `${r.label} · ${r.experiment}`; group.appendChild(o);
      });
      if (group.children.length) sel.appendChild(group);
    }
    sel.value = String(value);
  }
  function syncControls() {
    const run = D.runs[state.run], set = D.imageSets[run.imageSet], S = set.size;
    if (state.layer !== "all") state.layer = Math.min(state.layer, run.layers.length - 1);
    state.image = Math.min(state.image, set.images.length - 1);
    state.row = Math.min(state.row, S - 1); state.col = Math.min(state.col, S - 1);
    fillRuns($("run"), state.run);
    fillSelect($("layer"), [...run.layers.map((L, i) => [i, L.name]), ["all", "all layers"]], state.layer);
    fillSelect($("image"), set.images.map((im, i) => [i, im.label]), state.image);
    const mean = $("mean");
    mean.disabled = !run.blobs.mean;
    mean.checked = state.mean && !!run.blobs.mean;
    $("mean-text").textContent = run.positional ? "mean over images (positional: every image alike)"
      : run.blobs.mean ? `mean over ${run.meanOver} test images` : "mean over test images (not stored)";
    for (const id of ["row", "col"]) $(id).max = S - 1;
    $("run-info").textContent = run.describe + (run.positional ? ". Positional attention only: stored once, the same for every image."
      : ". Content-based: stored for each image" + (run.blobs.mean ? ` and as the mean over ${run.meanOver} test images.` : "."));
    buildPanels();
  }
  function setQuery(r, c) {
    const S = D.imageSets[D.runs[state.run].imageSet].size;
    r = Math.max(0, Math.min(S - 1, r)); c = Math.max(0, Math.min(S - 1, c));
    if (r === state.row && c === state.col) return;
    state.row = r; state.col = c;
    render();
  }
  function canvasPixel(e) {
    const c = $("query-canvas"), r = c.getBoundingClientRect(), S = D.imageSets[D.runs[state.run].imageSet].size;
    return [Math.floor(((e.clientY - r.top) / r.height) * S), Math.floor(((e.clientX - r.left) / r.width) * S)];
  }
  $("run").addEventListener("change", (e) => { state.run = Number(e.target.value); syncControls(); render(); });
  $("layer").addEventListener("change", (e) => {
    state.layer = e.target.value === "all" ? "all" : Number(e.target.value); buildPanels(); render();
  });
  $("image").addEventListener("change", (e) => { state.image = Number(e.target.value); render(); });
  $("mean").addEventListener("change", (e) => { state.mean = e.target.checked; render(); });
  $("zoom").addEventListener("change", (e) => { state.zoom = e.target.checked; render(); });
  $("row").addEventListener("input", (e) => setQuery(Number(e.target.value), state.col));
  $("col").addEventListener("input", (e) => setQuery(state.row, Number(e.target.value)));
  const qc = $("query-canvas");
  qc.addEventListener("mousemove", (e) => { if (!state.pinned) setQuery(...canvasPixel(e)); });
  qc.addEventListener("click", (e) => { state.pinned = !state.pinned; setQuery(...canvasPixel(e)); });
  qc.addEventListener("keydown", (e) => {
    const step = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[e.key];
    if (step) { e.preventDefault(); state.pinned = true; setQuery(state.row + step[0], state.col + step[1]); }
  });
  try {
    $("zoom").checked = state.zoom;
    syncControls();
    render();
  } catch (err) {
    fail(err);
  }
})();
