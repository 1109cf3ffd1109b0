// Review page for `curator review`: reads window.CURATOR_REVIEW (data.js), renders one page of rows
// at a time from in-memory columns, and keeps accept/reject decisions in localStorage per run/set.
// Every string from the data goes through textContent or an attribute, never innerHTML.
(function () {
  "use strict";
  var D = window.CURATOR_REVIEW;
  var $ = function (id) { return document.getElementById(id); };
  if (!D) { $("missing").hidden = false; return; }

  var R = D.rows, N = R.s.length, PAGE = D.page_size || 100;
  var STORE_KEY = "curator-review:" + D.key;
  var T = D.around ? D.around.t : D.threshold;
  var state = { visible: [], cursor: 0, orders: {}, haystack: null };
  var decisions = loadDecisions();

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function textId(i) { return D.texts.id[R.t[i]] || ""; }
  function audioId(i) { return D.clips.id[R.c[i]]; }
  function pairKey(i) { return textId(i) + "\t" + audioId(i); }
  function fmt(x, digits) { return x === null || x === undefined ? "—" : Number(x).toFixed(digits); }

  // -- decisions ---------------------------------------------------------------------------------
  function loadDecisions() {
    try { return JSON.parse(window.localStorage.getItem(STORE_KEY) || "{}") || {}; }
    catch (e) { return {}; }
  }
  function saveDecisions() {
    try { window.localStorage.setItem(STORE_KEY, JSON.stringify(decisions)); }
    catch (e) { /* storage full or disabled: decisions still live until export */ }
  }
  function decide(i, value) {
    var key = pairKey(i);
    if (value) decisions[key] = value; else delete decisions[key];
    saveDecisions();
    var row = document.querySelector('.row[data-i="' + i + '"]');
    if (row) paintDecision(row, value);
    updateCounts();
  }
  function paintDecision(row, value) {
    row.classList.toggle("accept", value === "accept");
    row.classList.toggle("reject", value === "reject");
    row.setAttribute("data-decision", value || "");
  }
  function exportRows() {
    var out = [], seen = {};
    for (var i = 0; i < N; i++) {
      var key = pairKey(i), d = decisions[key];
      if (d && !seen[key]) { seen[key] = true; out.push({ text_id: textId(i), audio_id: audioId(i), decision: d }); }
    }
    // Decisions made on an earlier build of the same run (another --sample) are kept too.
    Object.keys(decisions).sort().forEach(function (key) {
      if (seen[key]) return;
      var parts = key.split("\t");
      out.push({ text_id: parts[0], audio_id: parts[1], decision: decisions[key] });
    });
    return out;
  }
  function csvField(v) { v = String(v); return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
  function download(kind) {
    var rows = exportRows(), text, type;
    if (kind === "csv") {
      text = "text_id,audio_id,decision\n" + rows.map(function (r) {
        return [r.text_id, r.audio_id, r.decision].map(csvField).join(",");
      }).join("\n") + (rows.length ? "\n" : "");
      type = "text/csv";
    } else {
      text = JSON.stringify(rows, null, 1) + "\n";
      type = "application/json";
    }
    var a = $("download");
    a.href = URL.createObjectURL(new Blob([text], { type: type }));
    a.download = "decisions-" + D.key.replace(/[^A-Za-z0-9_.-]+/g, "_") + "." + kind;
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 60000);
  }

  // -- filtering and ordering --------------------------------------------------------------------
  function order(mode) {
    if (state.orders[mode]) return state.orders[mode];
    var idx = new Array(N);
    for (var i = 0; i < N; i++) idx[i] = i;
    // data.js arrives already in this order: skip a 100k-element sort on page load.
    if (mode === D.order) { state.orders[mode] = idx; return idx; }
    var s = R.s, key;
    if (mode === "desc") key = function (i) { return s[i] === null ? Infinity : -s[i]; };
    else if (mode === "asc") key = function (i) { return s[i] === null ? Infinity : s[i]; };
    else key = function (i) { return s[i] === null ? Infinity : Math.abs(s[i] - T); };
    var keys = new Float64Array(N);
    for (var j = 0; j < N; j++) keys[j] = key(j);
    idx.sort(function (a, b) { return keys[a] - keys[b] || (mode === "near" ? (s[b] - s[a]) || a - b : a - b); });
    state.orders[mode] = idx;
    return idx;
  }
  function haystack() {
    if (!state.haystack) {
      state.haystack = new Array(N);
      for (var i = 0; i < N; i++) {
        var label = R.l[i] >= 0 ? D.labels[R.l[i]] : "";
        state.haystack[i] = ((D.texts.text[R.t[i]] || "") + " " + label).toLowerCase();
      }
    }
    return state.haystack;
  }
  function bound(input, fallback) { var v = parseFloat(input.value); return isNaN(v) ? fallback : v; }
  function applyFilter() {
    var lo = bound($("score-min"), -Infinity), hi = bound($("score-max"), Infinity);
    var show = $("show").value, needle = $("search").value.trim().toLowerCase();
    var hay = needle ? haystack() : null, idx = order($("sort").value), out = [];
    for (var k = 0; k < N; k++) {
      var i = idx[k], s = R.s[i];
      if (s !== null && (s < lo || s > hi)) continue;
      if (show !== "all") {
        var d = decisions[pairKey(i)];
        if (show === "undecided" ? d : d !== show) continue;
      }
      if (hay && hay[i].indexOf(needle) < 0) continue;
      out.push(i);
    }
    state.visible = out;
    state.cursor = 0;
    render();
    drawRange(lo, hi);
  }
  var pending = null;
  function filterSoon() { clearTimeout(pending); pending = setTimeout(applyFilter, 120); }

  // -- rendering ---------------------------------------------------------------------------------
  function pageOf(pos) { return Math.floor(pos / PAGE); }
  function pages() { return Math.max(1, Math.ceil(state.visible.length / PAGE)); }
  function render() {
    var page = pageOf(state.cursor), start = page * PAGE;
    var slice = state.visible.slice(start, start + PAGE);
    var box = $("rows"), frag = document.createDocumentFragment();
    slice.forEach(function (i, k) { frag.appendChild(rowElement(i, start + k)); });
    box.replaceChildren(frag);
    if (!slice.length) box.appendChild(el("p", "empty", "no rows in this range"));
    $("page-info").textContent = "page " + (page + 1) + " of " + pages();
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages() - 1;
    markCursor(false);
    updateCounts();
  }
  function rowElement(i, pos) {
    var c = R.c[i], row = el("article", "row");
    row.setAttribute("data-i", i);
    row.setAttribute("data-pos", pos);
    row.appendChild(el("div", "num", pos + 1));
    row.addEventListener("click", function () { state.cursor = pos; markCursor(false); });
    var spec = D.clips.spec[c];
    if (spec) {
      var img = el("img", "spec");
      img.width = 128; img.height = 48; img.alt = "log-mel spectrogram"; img.src = spec;
      row.appendChild(img);
    } else row.appendChild(el("div", "spec none", "no spectrogram"));
    var src = D.clips.src[c];
    if (src) {
      var audio = el("audio");
      audio.controls = true; audio.preload = "metadata"; audio.src = src;
      row.appendChild(audio);
    } else row.appendChild(el("div", "nomedia", "audio not included (beyond --media, or not a local file)"));
    var body = el("div", "body");
    body.appendChild(el("p", "caption", D.texts.text[R.t[i]] || "(no text)"));
    var bits = [];
    if (R.l[i] >= 0) bits.push("label: " + D.labels[R.l[i]]);
    var clipLabels = D.clips.labels[c];
    if (clipLabels && clipLabels.length) bits.push("clip labels: " + clipLabels.join(", "));
    if (bits.length) body.appendChild(el("p", "label", bits.join(" · ")));
    body.appendChild(el("p", "ids", (textId(i) || "—") + " · " + audioId(i) + " · " + (D.clips.uri[c] || "")));
    row.appendChild(body);
    row.appendChild(el("div", "score", fmt(R.s[i], 4)));
    var buttons = el("div", "decide");
    [["accept", "accept (a)"], ["reject", "reject (r)"]].forEach(function (b) {
      var btn = el("button", b[0], b[1]);
      btn.type = "button";
      btn.addEventListener("click", function () {
        state.cursor = pos; markCursor(false);
        decide(i, decisions[pairKey(i)] === b[0] ? null : b[0]);
      });
      buttons.appendChild(btn);
    });
    row.appendChild(buttons);
    paintDecision(row, decisions[pairKey(i)]);
    return row;
  }
  function currentRow() { return document.querySelector('.row[data-pos="' + state.cursor + '"]'); }
  function markCursor(scroll) {
    var old = document.querySelector(".row.current");
    if (old) old.classList.remove("current");
    var row = currentRow();
    if (row) { row.classList.add("current"); if (scroll) row.scrollIntoView({ block: "nearest" }); }
  }
  function moveTo(pos) {
    if (!state.visible.length) return;
    pos = Math.max(0, Math.min(state.visible.length - 1, pos));
    var turn = pageOf(pos) !== pageOf(state.cursor);
    state.cursor = pos;
    if (turn) { render(); window.scrollTo(0, 0); }
    markCursor(true);
  }
  function updateCounts() {
    var a = 0, r = 0;
    Object.keys(decisions).forEach(function (k) { if (decisions[k] === "accept") a++; else if (decisions[k] === "reject") r++; });
    $("counts").textContent = state.visible.length + " of " + N + " rows · " + a + " accepted · " + r + " rejected";
  }

  // -- summary -----------------------------------------------------------------------------------
  function renderSummary() {
    $("title").textContent = "review: " + D.title;
    document.title = "curator review: " + D.title;
    var meta = $("meta");
    Object.keys(D.meta).forEach(function (k) {
      var v = D.meta[k];
      if (v === null || v === undefined || (Array.isArray(v) && !v.length)) return;
      meta.appendChild(el("dt", null, k));
      meta.appendChild(el("dd", null, Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : v));
    });
    var S = D.summary, stats = $("stats");
    var lines = [
      ["pairs", S.pairs + (S.shown !== S.pairs ? " (" + S.shown + " in this page, sampled)" : "")],
      ["captions", S.per_caption.distinct + " · pairs per caption mean " + S.per_caption.mean + ", max " + S.per_caption.max],
      ["clips", S.per_clip.distinct + " · pairs per clip mean " + S.per_clip.mean + ", max " + S.per_clip.max],
      [D.score_name, "min " + fmt(S.score_min, 4) + " · mean " + fmt(S.score_mean, 4) + " · max " + fmt(S.score_max, 4)],
      ["media", D.media.clips + " clips with " + (D.media.linked ? "linked" : "copied") + " audio and spectrograms"]
    ];
    if (D.around) lines.push(["around", D.around.t + " ± " + D.around.band]);
    lines.forEach(function (p) { stats.appendChild(el("dt", null, p[0])); stats.appendChild(el("dd", null, p[1])); });
    drawHistogram();
  }
  var SVG = "http://www.w3.org/2000/svg", W = 420, H = 96, hist = null;
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function xOf(v) { var e = hist.edges; return ((v - e[0]) / (e[e.length - 1] - e[0])) * W; }
  function drawHistogram() {
    hist = D.summary.hist;
    if (!hist) return;
    var root = svg("svg", { width: W, height: H + 16, viewBox: "0 0 " + W + " " + (H + 16), role: "img" });
    root.appendChild(svg("rect", { id: "range", x: 0, y: 0, width: W, height: H, "class": "range" }));
    var top = Math.max.apply(null, hist.counts) || 1, bw = W / hist.counts.length;
    hist.counts.forEach(function (n, k) {
      var h = (n / top) * (H - 4), bar = svg("rect", { x: k * bw + 1, y: H - h, width: Math.max(1, bw - 2), height: h, "class": "bar" });
      var tip = svg("title", {});
      tip.textContent = fmt(hist.edges[k], 3) + "–" + fmt(hist.edges[k + 1], 3) + ": " + n;
      bar.appendChild(tip);
      root.appendChild(bar);
    });
    if (T !== null && T !== undefined) {
      root.appendChild(svg("line", { x1: xOf(T), x2: xOf(T), y1: 0, y2: H, "class": "threshold" }));
    }
    [[0, "start", hist.edges[0]], [W, "end", hist.edges[hist.edges.length - 1]]].forEach(function (p) {
      var t = svg("text", { x: p[0], y: H + 13, "text-anchor": p[1] });
      t.textContent = fmt(p[2], 3);
      root.appendChild(t);
    });
    $("histogram").insertBefore(root, $("histogram").firstChild);
  }
  function drawRange(lo, hi) {
    var r = document.getElementById("range");
    if (!r || !hist) return;
    var a = Math.max(0, isFinite(lo) ? xOf(lo) : 0), b = Math.min(W, isFinite(hi) ? xOf(hi) : W);
    r.setAttribute("x", a);
    r.setAttribute("width", Math.max(0, b - a));
  }

  // -- wiring ------------------------------------------------------------------------------------
  function initControls() {
    var S = D.summary, lo = S.score_min, hi = S.score_max;
    if (D.around) { lo = D.around.t - D.around.band; hi = D.around.t + D.around.band; }
    if (lo !== undefined && lo !== null) $("score-min").value = (Math.floor(lo * 1000) / 1000).toFixed(3);
    if (hi !== undefined && hi !== null) $("score-max").value = (Math.ceil(hi * 1000) / 1000).toFixed(3);
    var near = document.querySelector('#sort option[value="near"]');
    if (T === null || T === undefined) near.disabled = true;
    $("sort").value = D.around ? "near" : "desc";
    ["score-min", "score-max", "search"].forEach(function (id) { $(id).addEventListener("input", filterSoon); });
    ["show", "sort"].forEach(function (id) { $(id).addEventListener("change", applyFilter); });
    $("prev").addEventListener("click", function () { moveTo((pageOf(state.cursor) - 1) * PAGE); });
    $("next").addEventListener("click", function () { moveTo((pageOf(state.cursor) + 1) * PAGE); });
    $("export-csv").addEventListener("click", function () { download("csv"); });
    $("export-json").addEventListener("click", function () { download("json"); });
    $("clear").addEventListener("click", function () {
      if (!window.confirm("Forget all " + Object.keys(decisions).length + " decisions for " + D.title + "?")) return;
      decisions = {}; saveDecisions(); render();
    });
    document.addEventListener("keydown", onKey);
  }
  function onKey(ev) {
    var tag = ev.target && ev.target.tagName;
    if (ev.key === "Escape" && ev.target.blur) { ev.target.blur(); return; }  // leave a filter field
    if (ev.ctrlKey || ev.metaKey || ev.altKey || tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    var i = state.visible[state.cursor], handled = true;
    switch (ev.key) {
      case "a": if (i !== undefined) { decide(i, "accept"); moveTo(state.cursor + 1); } break;
      case "r": if (i !== undefined) { decide(i, "reject"); moveTo(state.cursor + 1); } break;
      case "u": if (i !== undefined) decide(i, null); break;
      case "j": case "ArrowDown": moveTo(state.cursor + 1); break;
      case "k": case "ArrowUp": moveTo(state.cursor - 1); break;
      case "ArrowRight": moveTo((pageOf(state.cursor) + 1) * PAGE); break;
      case "ArrowLeft": moveTo((pageOf(state.cursor) - 1) * PAGE); break;
      case " ": {
        var row = currentRow(), audio = row && row.querySelector("audio");
        if (audio) { if (audio.paused) audio.play(); else audio.pause(); }
        break;
      }
      default: handled = false;
    }
    if (handled) ev.preventDefault();
  }

  renderSummary();
  initControls();
  applyFilter();
  window.curatorReview = { visible: function () { return state.visible.length; }, decisions: exportRows };
})();
