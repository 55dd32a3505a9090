/* actiontrace viewer: the page. Plain JavaScript, no build step; every request goes to
   this server's own JSON API (docs/viewer.md). Data is always put in the page as text
   (textContent), never as markup. */
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const main = document.getElementById("main");
  const MAX_GRAPH = 400; // actions drawn in a flow's graph (the timeline shows them all)

  // -- small helpers ---------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

  function pad(n, w) { return String(n).padStart(w || 2, "0"); }
  function fmtTime(us) {
    if (us === null || us === undefined) return "-";
    // UTC, as the command line prints it (and as since/until read a time without offset).
    const d = new Date(us / 1000);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}Z`;
  }
  function fmtDur(us) {
    if (us === null || us === undefined) return "-";
    if (us < 1000) return `${Math.round(us)} µs`;
    if (us < 1e6) return `${(us / 1000).toFixed(1)} ms`;
    return `${(us / 1e6).toFixed(2)} s`;
  }
  function shortId(id) { return id ? id.slice(0, 8) + "…" + id.slice(-4) : "-"; }
  function lastSeg(uri) { const i = uri.lastIndexOf("::"); return i < 0 ? uri : uri.slice(i + 2); }
  function json(v) { return JSON.stringify(v, null, 2); }
  function badge(status) { return h("span", { class: `badge ${status || ""}`, text: status || "?" }); }
  function textWidth(text, px) { return text.length * px; }

  async function api(path) {
    const resp = await fetch(path, { headers: { Accept: "application/json" } });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = data && data.error ? data.error : `${resp.status} ${resp.statusText}`;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    const link = resp.headers.get("Link") || "";
    const m = /<([^>]*)>;\s*rel="next"/.exec(link);
    return { data, next: m ? m[1] : null };
  }

  function showError(err) {
    main.append(h("div", { class: "error-box", text: `Could not load: ${err.message}` }));
  }

  // -- routing: #/flows?..., #/flow/<token>?action=<id>, #/syncs, #/stats -------------------

  function route() {
    const hash = location.hash.replace(/^#\/?/, "") || "flows";
    const [path, query] = hash.split("?");
    const parts = path.split("/");
    const params = new URLSearchParams(query || "");
    const view = parts[0];
    for (const a of document.querySelectorAll("header nav a")) {
      a.classList.toggle("active", a.dataset.view === (view === "flow" ? "flows" : view));
    }
    clear(main);
    const loading = h("p", { class: "muted", id: "loading", text: "Loading…" });
    main.append(loading);
    const run = { flows: viewFlows, flow: viewFlow, syncs: viewSyncs, stats: viewStats }[view];
    (run || viewFlows)(params, parts.slice(1)).catch(showError).finally(() => loading.remove());
  }
  window.addEventListener("hashchange", route);

  function go(view, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v) q.set(k, v);
    const qs = q.toString();
    location.hash = `#/${view}${qs ? "?" + qs : ""}`;
  }

  // -- flows, and the search by input value -------------------------------------------------

  const FILTERS = ["input", "concept", "action", "status", "since", "until"];

  async function viewFlows(params) {
    const form = h("form", { class: "filters", id: "filters" },
      h("label", {}, "Input value", h("input", { name: "input", class: "wide", placeholder: "passage_id=42",
        value: params.get("input") || "", title: "KEY=VALUE: actions whose inputs hold it (uses the input index)" })),
      h("label", {}, "Concept", h("input", { name: "concept", placeholder: "wkmp-ap::Queue", value: params.get("concept") || "" })),
      h("label", {}, "Action", h("input", { name: "action", placeholder: "play_passage", value: params.get("action") || "" })),
      h("label", {}, "Status", statusSelect(params.get("status") || "")),
      h("label", {}, "Since", h("input", { name: "since", placeholder: "1h, 2d or ISO", value: params.get("since") || "" })),
      h("label", {}, "Until", h("input", { name: "until", placeholder: "ISO or 10m", value: params.get("until") || "" })),
      h("button", { class: "primary", type: "submit", text: "Search" }),
      h("button", { type: "button", text: "Clear", onclick: () => go("flows", {}) }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      const p = {};
      for (const k of FILTERS) p[k] = (fd.get(k) || "").trim();
      go("flows", p);
    });
    main.append(h("div", { class: "card" }, form));
    const box = h("div", { class: "card", id: "results" });
    main.append(box);
    const q = new URLSearchParams();
    for (const k of FILTERS) if (params.get(k) && (k !== "status" || !params.get("input"))) q.set(k, params.get(k));
    const cursor = params.get("before") || params.get("after");
    if (params.get("input")) {
      if (params.get("after")) q.set("after", params.get("after"));
      q.set("limit", "50");
      const res = await api(`api/actions?${q}`);
      box.append(h("h2", {}, `Actions whose inputs hold ${params.get("input")}`,
        h("span", { class: "muted", text: "  (oldest first)" })));
      box.append(actionsTable(res.data));
      box.append(pager(params, res.next, "after", cursor));
    } else {
      if (params.get("before")) q.set("before", params.get("before"));
      q.set("limit", "50");
      const res = await api(`api/flows?${q}`);
      box.append(h("h2", {}, "Flows", h("span", { class: "muted", text: "  (newest first)" })));
      box.append(flowsTable(res.data));
      box.append(pager(params, res.next, "before", cursor));
    }
  }

  function statusSelect(value) {
    const sel = h("select", { name: "status" });
    for (const [v, label] of [["", "any"], ["error", "has errors"], ["ok", "ok"], ["running", "running"]]) {
      sel.append(h("option", { value: v, text: label, selected: v === value }));
    }
    return sel;
  }

  function pager(params, next, name, cursor) {
    const p = {};
    for (const k of FILTERS) p[k] = params.get(k);
    const nextParams = next ? new URL(next, location.href).searchParams.get(name) : null;
    return h("div", { class: "pager" },
      h("button", { type: "button", text: "⇤ First page", disabled: !cursor, onclick: () => go("flows", p) }),
      h("button", { type: "button", id: "older", text: name === "before" ? "Older →" : "Later →", disabled: !nextParams,
        onclick: () => go("flows", Object.assign({}, p, { [name]: nextParams })) }));
  }

  function flowsTable(rows) {
    if (!rows.length) return h("p", { class: "muted", text: "No flows match." });
    const body = h("tbody");
    for (const f of rows) {
      body.append(h("tr", { class: "flow-row", "data-flow": f.flow_token, onclick: () => go(`flow/${f.flow_token}`) },
        h("td", { class: "mono", text: fmtTime(f.created_at) }),
        h("td", {}, h("b", { text: f.root || "(root not stored yet)" })),
        h("td", { class: "num", text: f.actions }),
        h("td", { class: "num" }, f.errors ? h("span", { class: "badge error", text: `${f.errors} failed` }) : "0"),
        h("td", {}, badge(f.errors ? "error" : f.status)),
        h("td", { class: "num mono", text: fmtDur(f.duration_us) }),
        h("td", { class: "mono muted", text: f.module }),
        h("td", { class: "mono muted", title: f.flow_token, text: shortId(f.flow_token) })));
    }
    return h("table", { class: "list", id: "flows-table" },
      h("thead", {}, h("tr", {}, ["Started", "Root", "Actions", "Errors", "Status", "Duration", "Module", "Flow"]
        .map((t) => h("th", { class: ["Actions", "Errors", "Duration"].includes(t) ? "num" : "", text: t })))),
      body);
  }

  function actionsTable(rows) {
    if (!rows.length) return h("p", { class: "muted", text: "No actions match." });
    const body = h("tbody");
    for (const a of rows) {
      body.append(h("tr", { class: "action-row", "data-action": a.id,
        onclick: () => go(`flow/${a.flow_token}`, { action: a.id }) },
        h("td", { class: "mono", text: fmtTime(a.timestamp) }),
        h("td", {}, h("span", { class: "muted", text: a.concept_uri + "::" }), h("b", { text: a.action })),
        h("td", {}, badge(a.status)),
        h("td", { class: "num mono", text: fmtDur(a.duration_us) }),
        h("td", { class: "mono", text: compact(a.inputs, 70) }),
        h("td", { class: "mono muted", title: a.flow_token, text: shortId(a.flow_token) })));
    }
    return h("table", { class: "list", id: "actions-table" },
      h("thead", {}, h("tr", {}, ["Started", "Action", "Status", "Duration", "Inputs", "Flow"]
        .map((t) => h("th", { class: t === "Duration" ? "num" : "", text: t })))),
      body);
  }

  function compact(v, width) {
    const t = JSON.stringify(v);
    return t.length > width ? t.slice(0, width - 1) + "…" : t;
  }

  // -- one flow: graph, timeline, details, why ------------------------------------------------

  async function viewFlow(params, rest) {
    const token = rest[0];
    const { data: trace } = await api(`api/flows/${encodeURIComponent(token)}`);
    const actions = Object.values(trace.actions);
    const byId = new Map(actions.map((a) => [a.id, a]));
    const root = byId.get(trace.root_action_id);
    const producedBy = new Map(); // action id -> [edge]
    for (const e of trace.provenance_edges) {
      if (!producedBy.has(e.to_action)) producedBy.set(e.to_action, []);
      producedBy.get(e.to_action).push(e);
    }
    const errors = actions.filter((a) => a.status === "error").length;
    main.append(h("div", { class: "card" },
      h("h1", {}, root ? `${root.concept_uri}::${root.action}` : "flow"),
      h("div", { class: "muted" },
        `flow `, h("span", { class: "mono", text: trace.flow_token }),
        ` · ${fmtTime(trace.created_at)} · module `, h("span", { class: "mono", text: trace.module }),
        ` · ${actions.length} action${actions.length === 1 ? "" : "s"}`,
        errors ? h("span", {}, " · ", h("span", { class: "badge error", text: `${errors} failed` })) : "",
        ` · ${trace.provenance_edges.length} provenance edge${trace.provenance_edges.length === 1 ? "" : "s"}`,
        trace.sampled ? "" : " · kept for its error (not sampled)",
        " · ", h("a", { href: `api/flows/${trace.flow_token}`, target: "_blank", text: "JSON" }))));

    const state = { selected: null, chain: [] };
    const graphCard = h("div", { class: "card grow" }, h("h2", { text: "Actions and why they happened" }));
    const detail = h("aside", { class: "card detail", id: "detail" },
      h("p", { class: "muted", text: "Click an action to see its inputs, outputs, log events and causal chain." }));
    main.append(h("div", { class: "row" }, graphCard, detail));
    const timeline = h("div", { class: "card" }, h("h2", { text: "Timeline" }));
    main.append(timeline);

    const graph = flowGraph(trace, actions, byId, (id) => select(id), graphCard.clientWidth - 34);
    graphCard.append(graph.el,
      h("div", { class: "legend" },
        h("span", {}, h("i", { class: "call" }), "called inside (parent → child)"),
        h("span", {}, h("i", { class: "sync" }), "provenance: synchronization → action it produced"),
        h("span", {}, h("i", { class: "chain" }), "causal chain of the selected action"),
        h("span", {}, h("span", { class: "badge error", text: "error" }), " failed")));
    const wf = waterfall(actions, byId, producedBy, (id) => select(id));
    timeline.append(h("div", { class: "timeline-wrap" }, wf.el));

    async function select(id) {
      state.selected = id;
      graph.mark(id, []);
      wf.mark(id, []);
      const rec = byId.get(id);
      clear(detail);
      if (!rec) return;
      const syncs = (producedBy.get(id) || []).map((e) => e.synchronization);
      detail.append(
        h("h2", {}, h("span", { class: "muted", text: rec.concept_uri + "::" }), h("span", { text: rec.action }), " ", badge(rec.status)),
        h("dl", { class: "kv" },
          h("dt", { text: "id" }), h("dd", { class: "mono", text: rec.id }),
          h("dt", { text: "started" }), h("dd", { class: "mono", text: fmtTime(rec.timestamp) }),
          h("dt", { text: "duration" }), h("dd", { class: "mono", text: fmtDur(rec.duration_us) }),
          h("dt", { text: "called in" }), h("dd", {}, rec.parent_id && byId.get(rec.parent_id)
            ? h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); select(rec.parent_id); }, text: label(byId.get(rec.parent_id)) })
            : h("span", { class: "muted", text: rec.parent_id ? shortId(rec.parent_id) : "(top level)" })),
          h("dt", { text: "produced by" }), h("dd", {}, syncs.length ? syncs.map((n) => h("span", { class: "badge sync", text: n })) : h("span", { class: "muted", text: "no synchronization" }))),
        h("h2", { text: "Inputs" }), h("pre", { class: "json", id: "inputs", text: json(rec.inputs) }),
        h("h2", { text: rec.status === "error" ? "Error" : "Outputs" }),
        h("pre", { class: `json ${rec.status === "error" ? "error" : ""}`, id: "outputs", text: rec.status === "running" ? "(still running)" : json(rec.outputs) }));
      const logs = (trace.logs || []).filter((ev) => ev.action_id === id);
      detail.append(h("h2", { text: `Log events (${logs.length})` }));
      detail.append(logs.length
        ? h("ul", { class: "logs", id: "logs" }, logs.map((ev) => h("li", {},
          h("span", { class: `level ${ev.level}`, text: ev.level }), ev.event,
          ev.fields && Object.keys(ev.fields).length ? h("span", { class: "muted", text: " " + compact(ev.fields, 120) }) : "")))
        : h("p", { class: "muted", text: "None attached to this action." }));
      const whyBox = h("div", { id: "why" }, h("h2", { text: "Why did it happen?" }), h("p", { class: "muted", text: "…" }));
      detail.append(whyBox);
      try {
        const { data: chain } = await api(`api/actions/${id}/chain`);
        if (state.selected !== id) return;
        graph.mark(id, chain);
        wf.mark(id, chain);
        clear(whyBox);
        whyBox.append(h("h2", { text: `Why did it happen? (${chain.length} step${chain.length === 1 ? "" : "s"}, root first)` }));
        const list = h("ol", { class: "chain", id: "chain" });
        for (let i = 0; i < chain.length; i++) {
          const step = chain[i];
          const how = i === 0 ? null : howOf(step, chain[i - 1], producedBy);
          const here = byId.has(step.id);
          list.append(h("li", { "data-action": step.id, onclick: () => here ? select(step.id) : go(`flow/${step.flow_token}`, { action: step.id }) },
            how ? h("div", { class: `how ${how.sync ? "" : "call"}`, text: how.sync ? `⟵ ${how.sync}` : how.text }) : null,
            h("div", {}, h("span", { class: "muted", text: step.concept_uri + "::" }), h("b", { text: step.action }), " ", badge(step.status)),
            h("div", { class: "mono muted", text: compact(step.inputs, 60) }),
            here ? null : h("div", { class: "muted", text: `in flow ${shortId(step.flow_token)}` })));
        }
        whyBox.append(list);
        // Steps recorded in another flow (another process or service): ask who produced them.
        for (const li of list.children) {
          const stepId = li.dataset.action;
          const how = li.querySelector(".how");
          if (!byId.has(stepId) && how && how.classList.contains("call")) {
            api(`api/actions/${stepId}`).then(({ data }) => {
              if (data.synchronization) { how.textContent = `⟵ ${data.synchronization}`; how.classList.remove("call"); }
            }).catch(() => {});
          }
        }
      } catch (err) {
        clear(whyBox);
        whyBox.append(h("div", { class: "error-box", text: `Could not load the chain: ${err.message}` }));
      }
    }

    const wanted = params.get("action");
    if (wanted && byId.has(wanted)) select(wanted);
  }

  function label(rec) { return `${lastSeg(rec.concept_uri)}::${rec.action}`; }

  function howOf(step, prev, producedBy) {
    const edges = producedBy.get(step.id) || [];
    const e = edges.find((x) => x.from_action === prev.id) || edges[0];
    if (e) return { sync: e.synchronization };
    return { text: step.parent_id === prev.id ? "⟵ called inside" : "⟵ follows" };
  }

  // A flow as a layered DAG: dagre places the nodes; we draw the SVG.
  function flowGraph(trace, actions, byId, onClick, avail) {
    const wrap = h("div", { class: "graph-wrap", id: "flow-graph" });
    const shown = actions.slice(0, MAX_GRAPH);
    const shownIds = new Set(shown.map((a) => a.id));
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: "TB", nodesep: 34, ranksep: 46, edgesep: 14, marginx: 18, marginy: 18 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const a of shown) {
      const w = Math.max(150, textWidth(a.concept_uri, 6.3), textWidth(a.action, 8.4), textWidth(metaOf(a), 6.8)) + 24;
      g.setNode(a.id, { width: w, height: 60, rec: a });
    }
    const edges = [];
    for (const a of shown) {
      if (a.parent_id && shownIds.has(a.parent_id)) {
        g.setEdge(a.parent_id, a.id, { kind: "call", weight: 2, minlen: 1 }, `call:${a.id}`);
        edges.push({ v: a.parent_id, w: a.id, name: `call:${a.id}` });
      }
    }
    trace.provenance_edges.forEach((e, i) => {
      if (!shownIds.has(e.from_action) || !shownIds.has(e.to_action)) return;
      const name = `sync:${i}`;
      g.setEdge(e.from_action, e.to_action, { kind: "sync", sync: e.synchronization, label: e.synchronization,
        width: textWidth(e.synchronization, 7.2) + 14, height: 20, labelpos: "c", weight: 1 }, name);
      edges.push({ v: e.from_action, w: e.to_action, name });
    });
    dagre.layout(g);
    if (g.graph().width > 1.5 * avail && g.graph().height < g.graph().width) {
      // Many siblings: a top-down layout would be too wide to read; lay it out sideways.
      g.setGraph(Object.assign(g.graph(), { rankdir: "LR", nodesep: 16, ranksep: 60 }));
      dagre.layout(g);
    }
    const gw = g.graph().width, gh = g.graph().height;
    // Shrunk to fit when that keeps the text readable; else drawn full size and scrolled.
    const fits = gw * 0.75 <= avail;
    const svg = s("svg", { class: `graph ${fits ? "" : "natural"}`, width: gw, height: gh, viewBox: `0 0 ${gw} ${gh}` });
    svg.append(markers());
    const edgeLayer = s("g"), labelLayer = s("g"), nodeLayer = s("g");
    svg.append(edgeLayer, labelLayer, nodeLayer);
    const edgeEls = [];
    for (const ref of edges) {
      const e = g.edge(ref);
      const el = s("g", { class: `edge ${e.kind}`, "data-from": ref.v, "data-to": ref.w, "data-kind": e.kind },
        s("path", { d: curve(e.points), "marker-end": `url(#arrow-${e.kind})` }));
      edgeLayer.append(el);
      let lab = null;
      if (e.kind === "sync") {
        lab = s("g", { class: "edge-label", transform: `translate(${e.x},${e.y})` },
          s("rect", { x: -e.width / 2, y: -10, width: e.width, height: 20, rx: 10 }),
          s("text", { "text-anchor": "middle", y: 4, text: e.sync }));
        labelLayer.append(lab);
      }
      edgeEls.push({ v: ref.v, w: ref.w, kind: e.kind, el, lab });
    }
    const nodeEls = new Map();
    for (const id of g.nodes()) {
      const n = g.node(id), a = n.rec;
      const el = s("g", { class: `node ${a.status}`, "data-action": a.id, "data-name": a.action,
        transform: `translate(${n.x - n.width / 2},${n.y - n.height / 2})`, onclick: () => onClick(a.id) },
        s("title", { text: `${a.concept_uri}::${a.action}\n${a.id}` }),
        s("rect", { width: n.width, height: n.height, rx: 8 }),
        s("text", { class: "concept", x: 12, y: 17, text: a.concept_uri }),
        s("text", { class: "action", x: 12, y: 35, text: a.action }),
        s("text", { class: "meta", x: 12, y: 51, text: metaOf(a) }));
      nodeLayer.append(el);
      nodeEls.set(id, el);
    }
    wrap.append(svg);
    if (actions.length > MAX_GRAPH) {
      wrap.append(h("p", { class: "muted", text: `Showing the first ${MAX_GRAPH} of ${actions.length} actions; the timeline lists them all.` }));
    }
    function mark(selected, chain) {
      const inChain = new Set(chain.map((c) => c.id));
      const pairs = new Set();
      for (let i = 1; i < chain.length; i++) pairs.add(`${chain[i - 1].id}>${chain[i].id}`);
      for (const [id, el] of nodeEls) {
        el.classList.toggle("selected", id === selected);
        el.classList.toggle("in-chain", inChain.has(id));
      }
      // A step follows its synchronization edge when there is one, else the call edge.
      const syncPairs = new Set(edgeEls.filter((e) => e.kind === "sync").map((e) => `${e.v}>${e.w}`));
      for (const e of edgeEls) {
        const key = `${e.v}>${e.w}`;
        const on = pairs.has(key) && (e.kind === "sync" || !syncPairs.has(key));
        e.el.classList.toggle("in-chain", on);
        if (e.lab) e.lab.classList.toggle("in-chain", on);
      }
      const el = nodeEls.get(selected);
      if (el) el.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    return { el: wrap, mark };
  }

  function metaOf(a) {
    if (a.status === "error") {
      const t = a.outputs && a.outputs.error_type ? lastSeg(a.outputs.error_type.replace(/\./g, "::")) : "error";
      return `✗ ${t} · ${fmtDur(a.duration_us)}`;
    }
    return `${a.status} · ${fmtDur(a.duration_us)}`;
  }

  function markers() {
    const defs = s("defs");
    for (const [kind, color] of [["call", "#b6bdc8"], ["sync", "#7c3aed"], ["flowing", "#9b7be0"], ["dead", "#dc2626"]]) {
      defs.append(s("marker", { id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", fill: color })));
    }
    return defs;
  }

  function curve(points) {
    if (points.length < 3) return `M${points.map((p) => `${p.x},${p.y}`).join(" L")}`;
    let d = `M${points[0].x},${points[0].y}`;
    for (let i = 1; i < points.length - 1; i++) {
      const p = points[i], q = points[i + 1];
      const mx = i === points.length - 2 ? q.x : (p.x + q.x) / 2, my = i === points.length - 2 ? q.y : (p.y + q.y) / 2;
      d += ` Q${p.x},${p.y} ${mx},${my}`;
    }
    return d;
  }

  // The same actions on a time axis, one lane each, indented by call depth.
  function waterfall(actions, byId, producedBy, onClick) {
    const sorted = actions.slice().sort((a, b) => a.timestamp - b.timestamp || (a.id < b.id ? -1 : 1)).slice(0, 2000);
    const t0 = Math.min(...sorted.map((a) => a.timestamp));
    const t1 = Math.max(...sorted.map((a) => a.timestamp + (a.duration_us || 0)), t0 + 1);
    const depth = new Map();
    const depthOf = (a) => {
      let d = 0, cur = a;
      const seen = new Set();
      while (cur && cur.parent_id && byId.has(cur.parent_id) && !seen.has(cur.id)) { seen.add(cur.id); d++; cur = byId.get(cur.parent_id); }
      return d;
    };
    for (const a of sorted) depth.set(a.id, depthOf(a));
    const W = 1100, left = 300, right = 90, lane = 24, top = 26;
    const span = t1 - t0, x = (t) => left + ((t - t0) / span) * (W - left - right);
    const H = top + sorted.length * lane + 6;
    const svg = s("svg", { class: "waterfall", id: "waterfall", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "xMinYMin meet" });
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (span * i) / 4, gx = x(t);
      svg.append(s("line", { class: "grid", x1: gx, x2: gx, y1: top - 8, y2: H }),
        s("text", { class: "t", x: gx, y: 14, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", text: `+${fmtDur(t - t0)}` }));
    }
    const lanes = new Map();
    sorted.forEach((a, i) => {
      const y = top + i * lane;
      const bx = x(a.timestamp), bw = Math.max(3, x(a.timestamp + (a.duration_us || 0)) - bx);
      const kind = a.status === "error" ? "error" : a.status === "running" ? "running" : producedBy.has(a.id) ? "sync" : "";
      const g = s("g", { class: "lane", "data-action": a.id, onclick: () => onClick(a.id) },
        s("rect", { class: "band", x: 0, y, width: W, height: lane }),
        s("text", { x: 8 + depth.get(a.id) * 14, y: y + 16, text: `${label(a)}${a.status === "error" ? "  ✗" : ""}` }),
        s("rect", { class: `bar ${kind}`, x: bx, y: y + 5, width: bw, height: lane - 10, rx: 3 }),
        s("text", { class: "t", x: Math.min(bx + bw + 6, W - right + 4), y: y + 16, text: fmtDur(a.duration_us) }));
      svg.append(g);
      lanes.set(a.id, g);
    });
    function mark(selected, chain) {
      const inChain = new Set(chain.map((c) => c.id));
      for (const [id, g] of lanes) {
        g.classList.toggle("selected", id === selected);
        g.classList.toggle("in-chain", inChain.has(id));
      }
      const lane = lanes.get(selected);
      const box = svg.parentNode;
      if (lane && box && box.scrollHeight > box.clientHeight) {
        // Scroll the timeline itself (not the page) to the selected lane.
        const r = lane.getBoundingClientRect(), b = box.getBoundingClientRect();
        if (r.top < b.top || r.bottom > b.bottom) box.scrollTop += r.top - b.top - b.height / 2;
      }
    }
    return { el: svg, mark };
  }

  // -- synchronizations ----------------------------------------------------------------------

  async function viewSyncs() {
    const { data } = await api("api/synchronizations");
    const card = h("div", { class: "card" },
      h("h1", { text: "Synchronizations" }),
      h("p", { class: "muted", text: "What triggers what: concept::action → synchronization → concept::action, from the declared reactions and the provenance edges in the store. A declared reaction that never fired is dashed red." }));
    main.append(card);
    const perf = new Map(data.syncs.map((x) => [x.synchronization, x]));
    if (!data.links.length && !data.declared.length) {
      card.append(h("p", { class: "muted", text: "No synchronization has fired yet, and none is declared here (serve --import MODULE shows a module's declared reactions)." }));
      return;
    }
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: "LR", nodesep: 22, ranksep: 44, marginx: 16, marginy: 16 });
    const addAction = (key) => {
      if (!g.hasNode(`a:${key}`)) {
        const i = key.lastIndexOf("::");
        const concept = i < 0 ? "" : key.slice(0, i), name = i < 0 ? key : key.slice(i + 2);
        g.setNode(`a:${key}`, { kind: "action", concept, name, width: Math.max(textWidth(concept, 6.3), textWidth(name, 8.4)) + 26, height: 44 });
      }
    };
    const addSync = (name) => {
      if (!g.hasNode(`s:${name}`)) {
        const p = perf.get(name) || { count: 0 };
        const meta = syncMeta(p);
        g.setNode(`s:${name}`, { kind: "sync", name, p, meta, width: Math.max(textWidth(name, 8.3), textWidth(meta, 6.7)) + 28, height: 44 });
      }
    };
    const seen = new Set();
    for (const l of data.links) {
      addAction(l.from); addSync(l.synchronization); addAction(l.to);
      const k1 = `${l.from}>${l.synchronization}`, k2 = `${l.synchronization}>${l.to}`;
      if (!seen.has(k1)) { seen.add(k1); g.setEdge(`a:${l.from}`, `s:${l.synchronization}`, { kind: "flowing", count: l.count }, k1); }
      if (!seen.has(k2)) { seen.add(k2); g.setEdge(`s:${l.synchronization}`, `a:${l.to}`, { kind: "flowing", count: l.count }, k2); }
    }
    for (const d of data.declared) {
      addAction(d.when); addSync(d.synchronization);
      const k = `${d.when}>${d.synchronization}`;
      if (!seen.has(k)) { seen.add(k); g.setEdge(`a:${d.when}`, `s:${d.synchronization}`, { kind: d.fired ? "flowing" : "dead", count: 0 }, k); }
    }
    dagre.layout(g);
    const gw = g.graph().width, gh = g.graph().height;
    const svg = s("svg", { class: "graph", id: "sync-graph", width: gw, height: gh, viewBox: `0 0 ${gw} ${gh}` });
    svg.append(markers());
    const maxCount = Math.max(1, ...data.links.map((l) => l.count));
    for (const ref of g.edges()) {
      const e = g.edge(ref);
      const width = e.count ? 1.2 + 3.5 * Math.log(1 + e.count) / Math.log(1 + maxCount) : 1.4;
      const path = s("path", { d: curve(e.points), "marker-end": `url(#arrow-${e.kind})` });
      path.style.strokeWidth = `${width}px`;
      svg.append(s("g", { class: `edge ${e.kind}` }, path));
    }
    for (const id of g.nodes()) {
      const n = g.node(id);
      const tr = `translate(${n.x - n.width / 2},${n.y - n.height / 2})`;
      if (n.kind === "action") {
        svg.append(s("g", { class: "node", transform: tr, "data-key": id.slice(2),
          onclick: () => { const i = n.name; go("flows", { concept: n.concept, action: i }); } },
          s("title", { text: `flows with ${id.slice(2)}` }),
          s("rect", { width: n.width, height: n.height, rx: 8 }),
          s("text", { class: "concept", x: 12, y: 17, text: n.concept }),
          s("text", { class: "action", x: 12, y: 34, text: n.name })));
      } else {
        const dead = !n.p.count;
        svg.append(s("g", { class: `sync-node ${dead ? "dead" : ""}`, transform: tr, "data-sync": n.name },
          s("rect", { width: n.width, height: n.height, rx: 22 }),
          s("text", { x: 13, y: 18, text: n.name }),
          s("text", { class: "meta", x: 13, y: 34, text: n.meta })));
      }
    }
    card.append(h("div", { class: "graph-wrap" }, svg),
      h("div", { class: "legend" },
        h("span", {}, h("i", { class: "sync" }), "fired (thicker: more often)"),
        h("span", {}, h("i", { class: "dead" }), "declared, never fired")));
    if (data.links_sampled) {
      card.append(h("p", { class: "muted", text: `A large store: the links are drawn from the newest ${data.links_sampled} firings of each synchronization; the counts on the synchronizations are for the whole store.` }));
    }
    if (data.links_total > data.links.length) {
      card.append(h("p", { class: "muted", text: `Showing the ${data.links.length} most frequent of ${data.links_total} links.` }));
    }
    const body = h("tbody");
    for (const x of data.syncs) {
      const cells = [0, 1, 2].map(() => h("td", { class: "num mono", text: "-" }));
      const fill = (l) => {
        cells[0].textContent = fmtDur(l.median); cells[1].textContent = fmtDur(l.p95); cells[2].textContent = fmtDur(l.p99);
      };
      if (x.latency_us) fill(x.latency_us);
      else if (x.count) {
        clear(cells[0]);
        cells[0].append(h("button", { type: "button", class: "measure", text: "measure", onclick: async () => {
          cells[0].textContent = "…";
          try {
            const { data: one } = await api(`api/synchronizations/${encodeURIComponent(x.synchronization)}`);
            if (one.latency_us.count) fill(one.latency_us); else cells[0].textContent = "-";
          } catch (err) { cells[0].textContent = "failed"; }
        } }));
      }
      body.append(h("tr", { "data-sync": x.synchronization },
        h("td", {}, h("b", { text: x.synchronization })),
        h("td", {}, x.declared ? h("span", { class: "badge sync", text: "declared" }) : h("span", { class: "muted", text: "seen in the store" }),
          x.declared && !x.count ? [" ", h("span", { class: "badge dead", text: "never fired" })] : ""),
        h("td", { class: "num", text: x.count }),
        cells));
    }
    main.append(h("div", { class: "card" }, h("h2", { text: "Firing counts and latency of the actions each produced" }),
      h("table", { class: "list", id: "syncs-table" },
        h("thead", {}, h("tr", {}, ["Synchronization", "Kind", "Fired", "p50", "p95", "p99"].map((t) => h("th", { class: ["Fired", "p50", "p95", "p99"].includes(t) ? "num" : "", text: t })))),
        body)));
  }

  function syncMeta(p) {
    if (!p.count) return "never fired";
    const l = p.latency_us;
    return l ? `${p.count}× · p50 ${fmtDur(l.median)} · p99 ${fmtDur(l.p99)}` : `${p.count}×`;
  }

  // -- stats: our own SVG charts ---------------------------------------------------------------

  async function viewStats() {
    const { data } = await api("api/stats?limit=10");
    main.append(h("div", { class: "card" }, h("h1", { text: "Statistics" }),
      h("p", { class: "muted", text: "From the analyzer (TraceAnalyzer) over the whole store." })));
    const grid = h("div", { class: "charts" });
    main.append(grid);
    grid.append(h("div", { class: "card", id: "chart-top" }, h("h2", { text: "Top synchronizations (actions produced)" }),
      barChart(data.top_synchronizations.map((x) => ({ label: x.synchronization, value: x.count, text: String(x.count), cls: "sync" })))));
    grid.append(h("div", { class: "card", id: "chart-chains" }, h("h2", { text: "Longest causal chains (actions on the path)" }),
      barChart(data.longest_chains.map((x) => ({ label: shortId(x.flow_token), value: x.depth, text: String(x.depth), href: `#/flow/${x.flow_token}` })))));
    grid.append(h("div", { class: "card", id: "chart-latency" }, h("h2", { text: "Latency of the actions each synchronization produced" }),
      latencyChart(Object.entries(data.latency_us))));
  }

  const CHART_W = 480; // every chart's width, so their text is drawn at one size
  const CLIP = 30; // characters of a chart label; the whole name is in its tooltip
  function clip(text) { return text.length > CLIP ? text.slice(0, CLIP - 1) + "…" : text; }
  function labelRoom(labels) {
    return Math.max(80, Math.min(CLIP, Math.max(...labels.map((l) => l.length))) * 7.4 + 14);
  }

  function barChart(items) {
    if (!items.length) return h("p", { class: "muted", text: "Nothing recorded yet." });
    const W = CHART_W, left = labelRoom(items.map((i) => i.label)), right = 44, row = 26;
    const H = items.length * row + 8;
    const max = Math.max(...items.map((i) => i.value), 1);
    const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}` });
    items.forEach((it, i) => {
      const y = 4 + i * row, w = Math.max(2, ((W - left - right) * it.value) / max);
      const g = s("g", {},
        s("title", { text: `${it.label}: ${it.text}` }),
        s("text", { x: left - 8, y: y + 16, "text-anchor": "end", text: clip(it.label) }),
        s("rect", { class: `bar ${it.cls || ""}`, x: left, y: y + 4, width: w, height: row - 8, rx: 3 }),
        s("text", { class: "v", x: left + w + 6, y: y + 16, text: it.text }));
      svg.append(it.href ? s("a", { href: it.href }, g) : g);
    });
    return svg;
  }

  function latencyChart(entries) {
    const items = entries.filter(([, m]) => m && m.count);
    if (!items.length) return h("p", { class: "muted", text: "No synchronization has produced an action yet." });
    const W = CHART_W, left = labelRoom(items.map(([name]) => name)), right = 84, row = 46;
    const H = items.length * row + 30;
    const max = Math.max(...items.map(([, m]) => m.p99), 1);
    const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}` });
    const x = (v) => left + ((W - left - right) * v) / max;
    items.forEach(([name, m], i) => {
      const y = 6 + i * row;
      svg.append(s("text", { x: left - 8, y: y + 21, "text-anchor": "end", text: clip(name) },
        s("title", { text: name })));
      [["p50", m.median], ["p95", m.p95], ["p99", m.p99]].forEach(([k, v], j) => {
        const w = Math.max(2, x(v) - left);
        svg.append(s("g", {}, s("title", { text: `${name} ${k}: ${fmtDur(v)}` }),
          s("rect", { class: k, x: left, y: y + 3 + j * 12, width: w, height: 10, rx: 2 }),
          s("text", { class: "v", x: left + w + 5, y: y + 12 + j * 12, text: `${k} ${fmtDur(v)}` })));
      });
    });
    const ly = H - 12;
    [["p50", "median"], ["p95", "p95"], ["p99", "p99"]].forEach(([k, t], j) => {
      svg.append(s("rect", { class: k, x: left + j * 90, y: ly - 9, width: 12, height: 10, rx: 2 }),
        s("text", { class: "v", x: left + j * 90 + 17, y: ly, text: t }));
    });
    return svg;
  }

  // -- start ------------------------------------------------------------------------------------

  api("api/meta").then(({ data }) => {
    document.getElementById("store").textContent = `${data.store} · actiontrace ${data.version}`;
  }).catch(() => {});
  route();
})();
