/* The attention grid: one hypothesis's subwords and attention matrix, shaded by weight; and the
   model card, a nested dict as headed sections of key/value rows (cardBody).

   Shared by the attention explorer (nmt/evaluation/explorer.html) and nmt-serve's demo page
   (nmt/serving/demo.html): Python inlines this file, and attention_grid.css, into both pages
   (nmt.evaluation.attention_grid.inline_attention_grid), so both shade with this one code.

   A hypothesis is {tokens: [...], attention: [[w, ...], ...]}: SentencePiece pieces without
   </s>, and weights as floats, rows the target subwords + </s> (no </s> row for a hypothesis cut
   at the length limit), columns the source subwords + </s>.

   The DOM contract: each source subword element has data-src-index, each target subword
   data-tgt-index (</s> is the last index on both axes); while target subword i is pointed at,
   every source subword element carries data-weight, its weight to 3 decimals; each heat-map cell
   (td[data-row][data-col]) has the background rgba(29, 78, 216, alpha(w)). */
const AttentionGrid = (() => {
  "use strict";
  const SHADE_RGB = "29, 78, 216";  // var(--accent) of the pages

  /** An element with attributes ("class", "text", "data" are special) and children. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }
  /** A number to `digits` decimals with a real minus sign; "–" for null. */
  const fmt = (x, digits) => (x === null || x === undefined) ? "–"
    : x.toFixed(digits).replace("-", "\u2212");
  /** Shade strength for weight w: sqrt spreads small weights apart; monotone, 1 at w = 1. */
  const alpha = (w) => (w > 0 ? Math.min(1, Math.sqrt(w)) : 0);
  const shadeColour = (w) => `rgba(${SHADE_RGB}, ${alpha(w).toFixed(3)})`;
  /** A piece as a reader sees it: "▁" (word start) as a space, trimmed. */
  const readable = (piece) => piece.replace(/\u2581/g, " ").trim() || piece;

  /** A SentencePiece piece as a chip: "▁" (word start) becomes a gap, "</s>" is muted. */
  function chip(piece, kind, index, isEos) {
    const node = el("span", { class: "tok", tabindex: index === 0 ? "0" : "-1" });
    node.dataset[kind === "src" ? "srcIndex" : "tgtIndex"] = String(index);
    if (isEos) { node.classList.add("eos"); node.textContent = "</s>"; return node; }
    if (piece.startsWith("\u2581")) { node.classList.add("ws"); piece = piece.slice(1) || "\u2581"; }
    node.textContent = piece;
    return node;
  }
  function shade(node, w) {
    const a = alpha(w);
    node.dataset.weight = w.toFixed(3);
    node.style.backgroundColor = shadeColour(w);
    node.classList.toggle("dark", a > 0.62);
  }
  function unshade(node) {
    delete node.dataset.weight;
    node.style.backgroundColor = "";
    node.classList.remove("dark", "active");
  }

  /** The source row and the target row of chips of hypothesis h (</s> on the target only when
      the hypothesis predicted it). */
  function subwordRows(sourceTokens, h) {
    const src = el("div", { class: "row src", lang: "en" }, el("span", { class: "label", text: "src" }),
      ...sourceTokens.map((p, j) => chip(p, "src", j, false)),
      chip("", "src", sourceTokens.length, true));
    const tgt = el("div", { class: "row tgt", lang: "ko" }, el("span", { class: "label", text: "tgt" }),
      ...h.tokens.map((p, i) => chip(p, "tgt", i, false)));
    // the subwords of a constraint the output met (a glossary term, a requested phrase)
    for (const i of h.constrained_tokens || []) {
      const node = tgt.querySelector(`[data-tgt-index="${i}"]`);
      if (node) { node.classList.add("constrained"); node.title = "constraint"; }
    }
    if (h.attention.length > h.tokens.length) tgt.append(chip("", "tgt", h.tokens.length, true));
    return [src, tgt];
  }

  /** The whole matrix as a heat map: target rows × source columns, each cell shaded. */
  /** The heat map of h.attention; `columns` labels the columns (default: the source subwords
      and </s>; a decoder's self-attention passes its inputs). */
  function matrixTable(sourceTokens, h, columns) {
    const srcLabels = columns || [...sourceTokens, "</s>"];
    const tgtLabels = [...h.tokens, "</s>"].slice(0, h.attention.length);
    const head = el("tr", {}, el("th"), ...srcLabels.map((p, j) =>
      el("th", { scope: "col", data: { col: String(j) }, text: p })));
    const body = h.attention.map((row, i) => el("tr", { data: { row: String(i) } },
      el("th", { scope: "row", data: { row: String(i) }, text: tgtLabels[i] }),
      ...row.map((w, j) => {
        const cell = el("td", { data: { row: String(i), col: String(j) },
          title: `${tgtLabels[i]} ← ${srcLabels[j]}: ${w.toFixed(3)}` });
        cell.style.backgroundColor = shadeColour(w);
        return cell;
      })));
    return el("div", { class: "matrix-wrap" }, el("table", { class: "matrix" },
      el("thead", {}, head), el("tbody", {}, ...body)));
  }

  function markMatrix(node, row, col) {
    if (row !== undefined) node.querySelector(`table.matrix tr[data-row="${row}"]`)?.classList.add("active-row");
    if (col !== undefined) {
      node.querySelector(`table.matrix thead th[data-col="${col}"]`)?.classList.add("active-col");
      if (row !== undefined) node.querySelector(`table.matrix td[data-row="${row}"][data-col="${col}"]`)?.classList.add("active-cell");
    }
  }

  /** Shade the grid in `node` (its subword rows, its .readout, its matrix) for `point`:
      {kind: "tgt", index, col?} shades the source subwords by row `index`; {kind: "src", index}
      shades the target subwords by column `index`; null clears. */
  function highlight(node, sourceTokens, h, point) {
    const srcs = node.querySelectorAll(".row.src [data-src-index]");
    const tgts = node.querySelectorAll(".row.tgt [data-tgt-index]");
    srcs.forEach(unshade); tgts.forEach(unshade);
    node.querySelectorAll(".active-row, .active-col, .active-cell").forEach((x) =>
      x.classList.remove("active-row", "active-col", "active-cell"));
    const readout = node.querySelector(".readout");
    if (readout) readout.textContent = "";
    if (!point) return;
    const srcLabels = [...sourceTokens, "</s>"], tgtLabels = [...h.tokens, "</s>"];
    if (point.kind === "tgt") {
      const row = h.attention[point.index];
      if (!row) return;  // this hypothesis is shorter
      srcs.forEach((n, j) => shade(n, row[j]));
      tgts[point.index].classList.add("active");
      const best = row.indexOf(Math.max(...row));
      if (readout) readout.textContent = `${readable(tgtLabels[point.index])} ← ${readable(srcLabels[best])} ${row[best].toFixed(3)} (strongest)`;
      markMatrix(node, point.index, point.col);
    } else {
      const column = h.attention.map((row) => row[point.index]);
      column.forEach((w, i) => shade(tgts[i], w));
      srcs[point.index].classList.add("active");
      const total = column.reduce((a, b) => a + b, 0);
      if (readout) readout.textContent = `${readable(srcLabels[point.index])}: attention received ${total.toFixed(3)} over ${column.length} target steps`;
      markMatrix(node, undefined, point.index);
    }
  }

  /** What a DOM node under the pointer (or focused) stands for: {kind, index, col?} or null. */
  function pointOf(target) {
    const tok = target.closest("[data-tgt-index], [data-src-index]");
    if (tok && tok.dataset.tgtIndex !== undefined) return { kind: "tgt", index: Number(tok.dataset.tgtIndex) };
    if (tok) return { kind: "src", index: Number(tok.dataset.srcIndex) };
    const cell = target.closest("table.matrix td, table.matrix th");
    if (cell && cell.dataset.row !== undefined) {
      const col = cell.dataset.col === undefined ? undefined : Number(cell.dataset.col);
      return { kind: "tgt", index: Number(cell.dataset.row), col };
    }
    if (cell && cell.dataset.col !== undefined) return { kind: "src", index: Number(cell.dataset.col) };
    return null;
  }

  /** Roving tabindex: the focused subword becomes its row's one Tab stop. */
  function rove(tok) {
    tok.parentElement.querySelectorAll(".tok").forEach((n) => n.setAttribute("tabindex", n === tok ? "0" : "-1"));
  }

  /** The subword ←/→/Home/End lead to from `tok` along its row; null for any other key. */
  function stepInRow(tok, key) {
    const toks = [...tok.parentElement.querySelectorAll(".tok")], i = toks.indexOf(tok);
    if (key === "ArrowRight") return toks[Math.min(i + 1, toks.length - 1)];
    if (key === "ArrowLeft") return toks[Math.max(i - 1, 0)];
    if (key === "Home") return toks[0];
    if (key === "End") return toks[toks.length - 1];
    return null;
  }

  // ---- the model card (GET /v1/model's "card", the explorer's models[i].card) ------------------
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const listOfObjects = (v) => Array.isArray(v) && v.length > 0 && v.every(isObject);
  /** A leaf value as text: lists joined, numbers to at most 4 decimals, null as "–". */
  function cardValue(v) {
    if (v === null || v === undefined) return "–";
    if (Array.isArray(v)) return v.length ? v.map(cardValue).join(", ") : "(none)";
    if (typeof v === "number" && !Number.isInteger(v)) {
      return Math.abs(v) >= 0.001 ? String(Number(v.toFixed(4))) : v.toExponential(2);
    }
    if (isObject(v)) return JSON.stringify(v);
    return String(v);
  }
  /** A dict's leaves as key/value rows, then its dicts as headed sections, to any depth. */
  function cardBody(obj, depth) {
    const entries = Object.entries(obj);
    const nested = ([, v]) => isObject(v) || listOfObjects(v);
    const leaves = entries.filter((e) => !nested(e)), parts = [];
    if (leaves.length) parts.push(el("dl", { class: "kv" }, ...leaves.map(([key, value]) =>
      el("div", { data: { key } }, el("dt", { text: key.replace(/_/g, " ") }),
        el("dd", { text: cardValue(value) })))));
    for (const [key, value] of entries.filter(nested)) {
      if (isObject(value)) parts.push(cardSection(key, value, depth + 1));
      else value.forEach((item, i) => parts.push(cardSection(`${key} ${i + 1}`, item, depth + 1)));
    }
    if (!entries.length) parts.push(el("p", { class: "help", text: "(empty)" }));
    return parts;
  }
  function cardSection(title, value, depth) {
    return el("section", { class: "card-section", data: { section: title } },
      el(`h${Math.min(6, depth + 2)}`, { text: title.replace(/_/g, " ") }), ...cardBody(value, depth));
  }

  return Object.freeze({ el, fmt, alpha, readable, chip, shade, unshade, subwordRows, matrixTable,
    highlight, pointOf, rove, stepInRow, isObject, cardBody });
})();
