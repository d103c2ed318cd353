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
  const ALPHA = 0.7, PLAY_MS = 900;
  const CMAP = bytesOfHex(D.cmap);
  // one colour per head, the same in its panel's caption and in the "top keys" panel
  const HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                        "#17becf", "#aec7e8", "#ffbb78", "#98df8a"];
  const state = Object.assign({ pinned: false, epoch: null, ownScale: false }, D.start);
  info.state = state;
  const decoded = new Map(), pictures = new Map();
  const work = document.createElement("canvas");
  let ticket = 0, panels = [], playing = null;

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

  // -- which maps: the run, the image (or the mean), the epoch --------------------------------------------
  function epochs(run) { return run.epochs || []; }
  function epochIndex(run) {  // the slider's position for this run (its last: the trained maps)
    const n = epochs(run).length;
    return state.epoch === null || state.epoch >= n ? n - 1 : state.epoch;
  }
  function epochFits(run) {  // whether the recorded epochs are of what is shown: content runs were recorded on one image
    return run.positional || (!state.mean && state.image === D.imageSets[run.imageSet].probe);
  }
  function shownEpoch(run) {  // the earlier epoch whose maps are drawn, or null: the trained ones
    const n = epochs(run).length, i = epochIndex(run);
    return n && i < n - 1 && epochFits(run) ? run.epochs[i] : null;
  }
  function mapsKey(run) {
    const epoch = shownEpoch(run);
    if (epoch !== null) return "epoch:" + epoch;
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

  // -- geometry -------------------------------------------------------------------------------------------
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
  function topKey(values) {
    let best = 0;
    for (let k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
    return best;
  }
  function zoomable(L) { return L.grid[0] > 7 || L.grid[1] > 7; }
  function viewBox(L, token, S) {  // [x0, y0, side] in image pixels: the whole image, or 7x7 tokens around the query
    if (!state.zoom || !zoomable(L)) return [0, 0, S];
    const s = L.stride, side = Math.min(7 * s, S);
    const inside = (v) => Math.max(0, Math.min(S - side, v));  // the window stays on the image: no black margins
    return [inside((token[1] + 0.5) * s - side / 2), inside((token[0] + 0.5) * s - side / 2), side];
  }

  // -- drawing --------------------------------------------------------------------------------------------
  function greyImage(pic, dim) {
    const S = pic.S;
    work.width = S; work.height = S;
    const wctx = work.getContext("2d"), img = wctx.createImageData(S, S), d = img.data;
    for (let p = 0; p < S * S; p++) {
      const g = Math.round(pic.gray[p] * 255 * dim);
      d[4 * p] = g; d[4 * p + 1] = g; d[4 * p + 2] = g; d[4 * p + 3] = 255;
    }
    return { wctx, img, d };
  }
  function blit(canvas, L, token, pic) {  // the work canvas onto a panel; returns [x0, y0, pixels per image pixel]
    const ctx = canvas.getContext("2d"), W = canvas.width, [x0, y0, side] = viewBox(L, token, pic.S), k = W / side;
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, W, W);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(work, -x0 * k, -y0 * k, pic.S * k, pic.S * k);
    return [ctx, x0, y0, k];
  }
  function drawHead(canvas, L, values, token, pic, lo, hi) {
    const S = pic.S, s = L.stride, { wctx, img, d } = greyImage(pic, 1);
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
    const [ctx, x0, y0, k] = blit(canvas, L, token, pic);
    ctx.strokeStyle = "cyan"; ctx.lineWidth = 1.5;
    ctx.strokeRect((token[1] * s - x0) * k, (token[0] * s - y0) * k, s * k, s * k);
  }
  // Every head of a layer at once, as Figure 4 of the paper draws them: the query's token (cyan), the kernel
  // grid of sqrt(heads) x sqrt(heads) tokens around it (dashed), and each head's top key as a dot in its colour,
  // placed in that key's token at the head's own spot so that heads sharing a key stay apart.
  function drawTaps(canvas, L, tops, token, pic) {
    const s = L.stride, { wctx, img } = greyImage(pic, 0.55);
    wctx.putImageData(img, 0, 0);
    const [ctx, x0, y0, k] = blit(canvas, L, token, pic), cell = s * k;
    const side = Math.round(Math.sqrt(L.heads)), half = Math.floor(side / 2);
    if (side * side === L.heads) {
      ctx.save();
      ctx.strokeStyle = "rgba(255,255,255,0.8)"; ctx.lineWidth = 1; ctx.setLineDash([3, 3]);
      for (let r = -half; r < side - half; r++) {
        for (let c = -half; c < side - half; c++) {
          ctx.strokeRect(((token[1] + c) * s - x0) * k, ((token[0] + r) * s - y0) * k, cell, cell);
        }
      }
      ctx.restore();
    }
    ctx.strokeStyle = "cyan"; ctx.lineWidth = 2;
    ctx.strokeRect((token[1] * s - x0) * k, (token[0] * s - y0) * k, cell, cell);
    const spots = Math.ceil(Math.sqrt(L.heads)), dot = Math.max(2, Math.min(cell / (2.6 * spots), 6));
    tops.forEach(([kr, kc], h) => {
      const cx = (kc * s - x0) * k + ((h % spots) + 0.5) * cell / spots;
      const cy = (kr * s - y0) * k + (Math.floor(h / spots) + 0.5) * cell / spots;
      ctx.beginPath(); ctx.arc(cx, cy, dot, 0, 2 * Math.PI);
      ctx.fillStyle = HEAD_COLOURS[h % HEAD_COLOURS.length]; ctx.fill();
      ctx.lineWidth = 1; ctx.strokeStyle = "#fff"; ctx.stroke();
    });
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
    ctx.strokeStyle = "yellow"; ctx.lineWidth = state.pinned ? 3 : 1;
    ctx.strokeRect(state.col * k + 0.5, state.row * k + 0.5, k - 1, k - 1);
  }
  function drawColourbar() {
    const c = $("colourbar"), ctx = c.getContext("2d");
    for (let x = 0; x < c.width; x++) {
      const i = Math.round((x / (c.width - 1)) * 255);
      ctx.fillStyle = `rgb(${CMAP[3 * i]},${CMAP[3 * i + 1]},${CMAP[3 * i + 2]})`;
      ctx.fillRect(x, 0, 1, c.height);
    }
  }

  // -- the panels -----------------------------------------------------------------------------------------
  function shownLayers(run) {
    return state.layer === "all" ? run.layers.map((_, i) => i) : [Math.min(state.layer, run.layers.length - 1)];
  }
  function unit(run) { return run.model.startsWith("san") ? "group" : "head"; }
  function panelSize(run) {  // a head's panel fits the width: every head of a layer in a row where there is room
    const W = $("heads").clientWidth || 600, narrow = W < 520;
    const most = Math.max(...shownLayers(run).map((li) => run.layers[li].heads));
    const fit = Math.floor((W - (narrow ? 0 : 96)) / (most + 2) - 6);  // +2: the "top keys" panel is twice as wide
    return { px: Math.max(64, Math.min(112, fit)), narrow };
  }
  function buildPanels() {
    const run = D.runs[state.run], box = $("heads"), { px, narrow } = panelSize(run);
    box.textContent = "";
    panels = [];
    for (const li of shownLayers(run)) {
      const L = run.layers[li], row = document.createElement("div");
      row.className = "layer-row";
      const name = document.createElement("div");
      name.className = "layer-name"; name.textContent = L.name;
      const scale = document.createElement("div");
      scale.className = "scale"; name.appendChild(scale);
      row.appendChild(name);
      const taps = document.createElement("figure"), tc = document.createElement("canvas"), tcap = document.createElement("figcaption");
      taps.className = "taps"; tc.className = "taps"; tc.width = 2 * px; tc.height = tc.width;
      tcap.textContent = `top key of every ${unit(run)}`;
      taps.appendChild(tcap); taps.appendChild(tc); row.appendChild(taps);
      panels.push({ canvas: tc, layer: li, head: -1, scale });
      for (let h = 0; h < L.heads; h++) {
        const fig = document.createElement("figure"), cap = document.createElement("figcaption"), c = document.createElement("canvas");
        const chip = document.createElement("span");
        fig.className = "head"; c.className = "head-map"; c.width = px; c.height = px;
        c.dataset.layer = li; c.dataset.head = h;
        chip.className = "chip"; chip.style.background = HEAD_COLOURS[h % HEAD_COLOURS.length];
        cap.appendChild(chip); cap.appendChild(document.createTextNode(`${unit(run)} ${h + 1}`));
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
    $("hover").textContent = k < 0 ? "" : `${L.name}, ${unit(run)} ${h + 1}: key token (${key[0]}, ${key[1]}) ` +
      `${L.normalized ? "gets" : "has weight"} ${values[k].toPrecision(3)}` + (L.normalized ? " of the query's attention" : "");
  }

  // -- the status lines -----------------------------------------------------------------------------------
  function signed(v) { return v > 0 ? "+" + v : v < 0 ? "\u2212" + -v : "0"; }
  function epochText(run) {
    const all = epochs(run);
    if (!all.length) return "trained maps (no per-epoch maps recorded for this run)";
    const final = all[all.length - 1], i = epochIndex(run), epoch = all[i];
    const when = epoch === 0 ? " (initialisation)" : i === all.length - 1 ? " (trained)" : "";
    if (i < all.length - 1 && !epochFits(run)) {
      return `epoch ${epoch} of ${final} asked, trained maps shown: earlier epochs were recorded on ` +
        `${D.imageSets[run.imageSet].probe >= 0 ? D.imageSets[run.imageSet].images[D.imageSets[run.imageSet].probe].label : "test image 0"} only`;
    }
    return `epoch ${epoch} of ${final}${when}`;
  }
  function describe(run, L, m, token, set) {
    const what = run.positional ? `${set.images[state.image].label} (positional: the same maps for every image)`
      : state.mean && run.blobs.mean ? `mean over ${run.meanOver} test images (${set.images[state.image].label} shown)`
      : set.images[state.image].label;
    const all = state.layer === "all";
    const tops = [];
    for (let h = 0; h < L.heads; h++) {
      const v = queryValues(L, m, h, token), best = topKey(v), key = keyToken(L, token, best);
      const share = L.normalized ? ` ${Math.round(100 * v[best])}%` : "";
      tops.push(`${h + 1}: (${signed(key[0] - token[0])}, ${signed(key[1] - token[1])})${share}`);
    }
    const pin = state.pinned ? "query pinned: click the picture or press Escape to follow the pointer again"
      : "the query follows the pointer: click the picture (or use the arrow keys) to pin it";
    return [
      `${run.label} · ${all ? "all layers" : L.name} · query pixel (${state.row}, ${state.col}) = token ` +
        `(${token[0]}, ${token[1]})${all ? " of " + L.name : ""} · ${what}`,
      `${epochText(run)} · ${pin}`,
      `${L.name}, top key of each ${unit(run)} as (row, col) offset from the query` +
        (L.normalized ? " and its share of the attention" : "") + ": " + tops.join(" · "),
    ].join("\n");
  }

  // -- render ---------------------------------------------------------------------------------------------
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
    const values = panels.map((p) => {
      const L = run.layers[p.layer], token = pixelToToken(L, state.row, state.col);
      return p.head < 0 ? null : queryValues(L, layers[p.layer], p.head, token);
    });
    const range = new Map();  // per layer: the colour scale shared by its heads
    panels.forEach((p, i) => {
      if (!values[i]) return;
      const r = range.get(p.layer) || [0, -Infinity];
      for (const v of values[i]) { if (v < r[0]) r[0] = v; if (v > r[1]) r[1] = v; }
      range.set(p.layer, r);
    });
    panels.forEach((p, i) => {
      const L = run.layers[p.layer], token = pixelToToken(L, state.row, state.col);
      if (p.head < 0) {  // the layer's head panels follow it, in head order: their values are already decoded
        const tops = panels.map((q, j) => (q.layer === p.layer && q.head >= 0 ? keyToken(L, token, topKey(values[j])) : null))
          .filter((t) => t !== null);
        drawTaps(p.canvas, L, tops, token, pic);
        const [lo, hi] = range.get(p.layer) || [0, 0];
        p.scale.textContent = state.ownScale ? "own scale per head" : `colour ${lo.toPrecision(2)} to ${hi.toPrecision(2)}`;
        return;
      }
      let [lo, hi] = range.get(p.layer);
      if (state.ownScale) {
        lo = 0; hi = -Infinity;
        for (const v of values[i]) { if (v < lo) lo = v; if (v > hi) hi = v; }
      }
      drawHead(p.canvas, L, values[i], token, pic, lo, hi);
    });
    const li = shownLayers(run)[0], L = run.layers[li];
    drawQuery(pic, L);
    $("status").textContent = describe(run, L, layers[li], pixelToToken(L, state.row, state.col), set);
    $("row-out").textContent = state.row; $("col-out").textContent = state.col;
    $("row").value = state.row; $("col").value = state.col;
    syncEpoch(run);
    info.draws += 1; info.ready = true;
    document.body.dataset.ready = "1";
  }

  // -- controls -------------------------------------------------------------------------------------------
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
  function syncEpoch(run) {
    const n = epochs(run).length, slider = $("epoch");
    slider.disabled = n < 2; $("play").disabled = n < 2;
    slider.max = Math.max(0, n - 1); slider.value = n ? epochIndex(run) : 0;
    $("epoch-out").textContent = n ? `${run.epochs[epochIndex(run)]} of ${run.epochs[n - 1]}` : "trained only";
    $("play").textContent = playing ? "\u25a0 stop" : "\u25b6 watch it train";
  }
  function syncZoom(run) {
    const can = shownLayers(run).some((li) => zoomable(run.layers[li])), zoom = $("zoom");
    zoom.disabled = !can;
    zoom.checked = state.zoom && can;
    $("zoom-text").textContent = can ? "7x7 token zoom" : "7x7 token zoom (not needed: 7x7 tokens or fewer)";
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
    syncZoom(run);
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
  function stopPlaying() {
    if (playing) { clearInterval(playing); playing = null; }
  }
  function play() {  // from initialisation to the trained maps, one recorded epoch at a time
    if (playing) { stopPlaying(); render(); return; }
    const run = D.runs[state.run], n = epochs(run).length;
    if (n < 2) return;
    state.epoch = 0;
    render();
    playing = setInterval(() => {
      if (state.epoch >= n - 1) { stopPlaying(); state.epoch = null; render(); return; }
      state.epoch += 1;
      render();
    }, PLAY_MS);
  }
  $("run").addEventListener("change", (e) => {
    stopPlaying(); state.run = Number(e.target.value); state.epoch = null; syncControls(); render();
  });
  $("layer").addEventListener("change", (e) => {
    state.layer = e.target.value === "all" ? "all" : Number(e.target.value); syncZoom(D.runs[state.run]); buildPanels(); render();
  });
  $("image").addEventListener("change", (e) => { state.image = Number(e.target.value); render(); });
  $("mean").addEventListener("change", (e) => { state.mean = e.target.checked; render(); });
  $("zoom").addEventListener("change", (e) => { state.zoom = e.target.checked; render(); });
  $("own-scale").addEventListener("change", (e) => { state.ownScale = e.target.checked; render(); });
  $("epoch").addEventListener("input", (e) => { stopPlaying(); state.epoch = Number(e.target.value); render(); });
  $("play").addEventListener("click", play);
  $("row").addEventListener("input", (e) => setQuery(Number(e.target.value), state.col));
  $("col").addEventListener("input", (e) => setQuery(state.row, Number(e.target.value)));
  const qc = $("query-canvas");
  // a mouse moves the query until a click pins it; a finger or pen drags it (and leaves it pinned where it lifts)
  qc.addEventListener("pointermove", (e) => {
    if (e.pointerType === "mouse" ? !state.pinned : e.buttons) setQuery(...canvasPixel(e));
  });
  qc.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse") return;
    try { qc.setPointerCapture(e.pointerId); } catch (err) { /* a pointer the browser no longer tracks */ }
    state.pinned = true;
    const [r, c] = canvasPixel(e);
    if (r === state.row && c === state.col) render(); else setQuery(r, c);
  });
  qc.addEventListener("click", (e) => {
    if (e.pointerType && e.pointerType !== "mouse") return;
    state.pinned = !state.pinned;
    const [r, c] = canvasPixel(e);
    if (r === state.row && c === state.col) render(); else setQuery(r, c);
  });
  qc.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.pinned) { state.pinned = false; render(); return; }
    const step = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[e.key];
    if (step) { e.preventDefault(); state.pinned = true; setQuery(state.row + step[0], state.col + step[1]); }
  });
  let resizing = null, lastWidth = 0;
  window.addEventListener("resize", () => {  // the panels follow the page's width (a phone turned, a window resized)
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      const w = $("heads").clientWidth;
      if (w !== lastWidth) { lastWidth = w; buildPanels(); render(); }
    }, 150);
  });
  try {
    $("zoom").checked = state.zoom;
    drawColourbar();
    syncControls();
    lastWidth = $("heads").clientWidth;
    render();
  } catch (err) {
    fail(err);
  }
})();
