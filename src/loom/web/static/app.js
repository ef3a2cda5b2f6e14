// Loom dashboard: renders the list and detail pages from the JSON API.
// Every value from the server is put in the page as text (textContent / text nodes), never
// parsed as HTML.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");

  // -- helpers -------------------------------------------------------------------------------

  function withToken(path) {
    if (!token) return path;
    const url = new URL(path, window.location.origin);
    url.searchParams.set("token", token);
    return url.pathname + url.search;
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method: opts.method || "GET", headers: headers };
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.json);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || "HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function pretty(value) {
    return value === undefined ? "" : JSON.stringify(value, null, 2);
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "-";
  }

  function seconds(value) {
    if (value === null || value === undefined) return "-";
    if (value < 60) return value.toFixed(1) + " s";
    if (value < 3600) return (value / 60).toFixed(1) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  function statusBadge(status) {
    return el("span", { class: "status status-" + String(status).toLowerCase(), text: status });
  }

  function workflowHref(id) {
    return withToken("/workflows/" + encodeURIComponent(id));
  }

  function debounce(fn, ms) {
    let timer = null;
    return function () {
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(function () {
        timer = null;
        fn();
      }, ms);
    };
  }

  function follow(path, eventName, onMessage) {
    const live = byId("live");
    const source = new EventSource(withToken(path));
    source.onopen = function () {
      live.textContent = "live";
      live.className = "live on";
    };
    source.onerror = function () {
      live.textContent = "reconnecting";
      live.className = "live off";
    };
    source.addEventListener(eventName, function (message) {
      onMessage(JSON.parse(message.data));
    });
    return source;
  }

  function parseJson(text, what) {
    try {
      return JSON.parse(text.trim() === "" ? "null" : text);
    } catch (err) {
      throw new Error(what + " is not valid JSON: " + err.message);
    }
  }

  for (const link of document.querySelectorAll("a[data-keep-token]")) {
    link.setAttribute("href", withToken(link.getAttribute("href")));
  }


  // -- svg helpers ---------------------------------------------------------------------------

  const SVG_NS = "http://www.w3.org/2000/svg";

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function barChart(holder, items) {
    // items: [label, value, cssClass]
    const rowH = 28;
    const label = 150;
    const width = 600;
    const max = Math.max(1, ...items.map(function (i) {
      return i[1];
    }));
    const chart = svgEl("svg", {
      class: "bars",
      viewBox: "0 0 " + width + " " + (items.length * rowH + 4),
      role: "img",
    });
    items.forEach(function ([name, value, cls], index) {
      const y = index * rowH + 2;
      const w = Math.max(value ? 3 : 0, (value / max) * (width - label - 60));
      const group = svgEl("g", { class: "bar-row " + (cls || ""), "data-label": name });
      group.append(svgEl("text", { x: 0, y: y + 18, class: "bar-label" }, name));
      group.append(svgEl("rect", { x: label, y: y + 5, width: w, height: rowH - 10, rx: 3 }));
      const valueAt = { x: label + w + 6, y: y + 18, class: "bar-value" };
      group.append(svgEl("text", valueAt, String(value)));
      chart.append(group);
    });
    holder.replaceChildren(chart);
  }

  function columnChart(holder, values, caption, slots) {
    const width = 1000;
    const height = 120;
    const max = Math.max(1, ...values);
    const chart = svgEl("svg", {
      class: "columns-chart",
      viewBox: "0 0 " + width + " " + (height + 20),
      role: "img",
      "aria-label": caption,
    });
    chart.append(svgEl("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }));
    chart.append(svgEl("text", { x: 2, y: 12, class: "bar-value" }, "max " + max));
    const count = Math.max(values.length, slots || 1);
    const step = width / count;
    const shift = count - values.length; // newest value at the right edge
    chart.append(svgEl("text", { x: width - 28, y: height + 16, class: "bar-value" }, "now"));
    values.forEach(function (value, index) {
      const h = (value / max) * (height - 20);
      const rect = svgEl("rect", {
        x: (index + shift) * step + 1,
        y: height - h,
        width: Math.max(1, step - 2),
        height: h,
      });
      rect.append(svgEl("title", {}, String(value)));
      chart.append(rect);
    });
    holder.replaceChildren(chart);
  }

  // -- definitions view ----------------------------------------------------------------------

  function phasesOf(wf, history) {
    const phases = {};
    for (const item of history) {
      const step = item.payload && item.payload.step;
      if (item.type === "STEP_STARTED" && step) phases[step] = "current";
      else if (item.type === "STEP_COMPLETED" && step) phases[step] = "done";
    }
    if (wf.status !== "RUNNING") {
      for (const [step, phase] of Object.entries(phases)) {
        if (phase === "current") phases[step] = "stopped";
      }
    }
    return phases;
  }

  function drawDefinition(def, phases) {
    const boxW = 210;
    const gap = 46;
    const lineH = 18;
    const heights = def.steps.map(function (step) {
      return 40 + lineH * Math.max((step.calls || []).length, 1);
    });
    const boxH = Math.max(60, ...heights);
    const width = Math.max(1, def.steps.length) * (boxW + gap) - gap + 8;
    const chart = svgEl("svg", {
      class: "graph",
      viewBox: "0 0 " + width + " " + (boxH + 8),
      width: width,
      height: boxH + 8,
      role: "img",
      "aria-label": "Steps of " + def.name,
    });
    def.steps.forEach(function (step, index) {
      const x = 4 + index * (boxW + gap);
      const phase = phases ? phases[step.name] || "pending" : "plain";
      const group = svgEl("g", { class: "node node-" + phase, "data-step": step.name });
      group.append(svgEl("rect", { x: x, y: 4, width: boxW, height: boxH, rx: 8 }));
      group.append(
        svgEl("text", { x: x + 10, y: 26, class: "node-title" }, index + 1 + ". " + step.name)
      );
      const calls = step.calls;
      let lines = calls && calls.length ? [] : ["(no durable calls)"];
      if (calls === null) lines = ["(source unavailable)"];
      for (const call of calls || []) {
        lines.push(call.kind + (call.name ? " " + call.name : ""));
      }
      lines.forEach(function (line, i) {
        const text = line.length > 30 ? line.slice(0, 29) + "…" : line;
        const node = svgEl("text", { x: x + 12, y: 48 + i * lineH, class: "node-call" }, text);
        node.append(svgEl("title", {}, line));
        group.append(node);
      });
      const about = step.description ? ": " + step.description : "";
      group.append(svgEl("title", {}, step.name + about));
      chart.append(group);
      if (index > 0) {
        const y = 4 + boxH / 2;
        chart.append(svgEl("line", { x1: x - gap + 2, y1: y, x2: x - 8, y2: y, class: "edge" }));
        chart.append(
          svgEl("polygon", {
            points: [x - 2, y, x - 10, y - 5, x - 10, y + 5].join(" "),
            class: "arrow",
          })
        );
      }
    });
    return chart;
  }

  function definitionsView() {
    const runId = params.get("run") || "";
    byId("run-id").value = runId;
    byId("live").textContent = "";
    byId("run-form").addEventListener("submit", function (event) {
      event.preventDefault();
      const q = new URLSearchParams();
      const id = byId("run-id").value.trim();
      if (id) q.set("run", id);
      window.location.assign(withToken("/definitions?" + q.toString()));
    });

    async function load() {
      const data = await api("/api/definitions");
      let run = null;
      let phases = null;
      if (runId) {
        const path = "/api/workflows/" + encodeURIComponent(runId);
        try {
          run = await api(path);
          phases = phasesOf(run, (await api(path + "/events")).events);
        } catch (err) {
          byId("defs-error").textContent = "Run " + runId + ": " + err.message;
        }
      }
      const holder = byId("graphs");
      holder.replaceChildren();
      for (const def of data.definitions) {
        const mine = run && run.name === def.name;
        const title = el("h3", {}, [
          el("span", { text: def.name }),
          el("span", { class: "muted", text: " v" + def.version }),
        ]);
        const parts = [title];
        if (def.description) parts.push(el("p", { class: "muted", text: def.description }));
        if (mine) {
          parts.push(
            el("p", {}, [
              el("span", { text: "Run " }),
              el("a", { href: workflowHref(run.workflow_id), text: run.workflow_id }),
              el("span", { text: " " }),
              statusBadge(run.status),
            ])
          );
        }
        parts.push(el("div", { class: "graph-wrap" }, [drawDefinition(def, mine ? phases : null)]));
        holder.append(el("article", { class: "definition", "data-name": def.name }, parts));
      }
      if (!data.definitions.length) holder.append(el("p", { text: "No workflows registered." }));
    }

    load().catch(function (err) {
      byId("defs-error").textContent = err.message;
    });
  }

  // -- metrics view --------------------------------------------------------------------------

  function metricsView() {
    const depth = [];
    byId("live").textContent = "polling";

    async function load() {
      try {
        const [stats, queue] = await Promise.all([api("/api/stats"), api("/api/queue")]);
        byId("metrics-error").textContent = "";
        barChart(
          byId("chart-status"),
          Object.entries(stats.by_status).map(function ([status, count]) {
            return [status, count, "status-" + status.toLowerCase()];
          })
        );
        barChart(byId("chart-queue"), [
          ["pending (ready)", queue.ready, "q-ready"],
          ["leased (running)", queue.leased, "q-leased"],
          ["scheduled (timers)", queue.sleeping, "q-sleeping"],
          ["waiting", queue.waiting, "q-waiting"],
          ["signals pending", queue.signals_pending, "q-signals"],
        ]);
        byId("queue-age").textContent =
          "Oldest ready task: " +
          seconds(queue.oldest_ready_age_seconds) +
          ". Events stored: " +
          stats.events +
          ".";
        // The API gives the newest minute first; the charts run oldest to newest.
        const completed = (stats.completed_per_minute || [0]).slice().reverse();
        const failed = (stats.failed_per_minute || [0]).slice().reverse();
        columnChart(byId("chart-throughput"), completed, "Completed per minute", 30);
        columnChart(byId("chart-failures"), failed, "Failed per minute", 30);
        depth.push(queue.ready);
        if (depth.length > 150) depth.shift();
        columnChart(byId("chart-depth"), depth, "Ready tasks", 150);
      } catch (err) {
        byId("metrics-error").textContent = err.message;
      }
    }

    load();
    setInterval(load, 2000);
  }

  // -- list page -----------------------------------------------------------------------------

  function listPage() {
    const limit = 50;
    let offset = Number(params.get("offset") || 0) || 0;
    byId("filter-status").value = params.get("status") || "";
    byId("filter-q").value = params.get("q") || "";
    let wantedName = params.get("name") || "";

    function query() {
      const q = new URLSearchParams();
      const status = byId("filter-status").value;
      const name = byId("filter-name").value;
      const text = byId("filter-q").value.trim();
      if (status) q.set("status", status);
      if (name) q.set("name", name);
      if (text) q.set("q", text);
      if (offset) q.set("offset", String(offset));
      return q;
    }

    async function loadStats() {
      const stats = await api("/api/stats");
      const list = byId("stats");
      const items = [];
      for (const [status, count] of Object.entries(stats.by_status)) {
        items.push([status, String(count)]);
      }
      items.push(["ready", String(stats.ready)]);
      items.push(["leased", String(stats.leased)]);
      items.push(["sleeping", String(stats.sleeping)]);
      items.push(["waiting", String(stats.waiting)]);
      items.push(["oldest ready", seconds(stats.oldest_ready_age)]);
      items.push(["completed last minute", String(stats.completed_last_minute)]);
      list.replaceChildren();
      for (const [term, value] of items) {
        list.append(el("div", {}, [el("dt", { text: term }), el("dd", { text: value })]));
      }
    }

    async function loadList() {
      const q = query();
      const shown = new URLSearchParams(q);
      if (token) shown.set("token", token);
      const search = shown.toString();
      window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
      q.set("limit", String(limit));
      const errorBox = byId("list-error");
      let page;
      try {
        page = await api("/api/workflows?" + q.toString());
        errorBox.textContent = "";
      } catch (err) {
        errorBox.textContent = err.message;
        return;
      }
      const body = byId("workflows").tBodies[0];
      body.replaceChildren();
      for (const wf of page.workflows) {
        const link = el("a", { href: workflowHref(wf.workflow_id), text: wf.workflow_id });
        const row = el("tr", { "data-id": wf.workflow_id }, [
          el("td", {}, [link]),
          el("td", { text: wf.name }),
          el("td", {}, [statusBadge(wf.status)]),
          el("td", { text: wf.current_step || "-" }),
          el("td", { text: when(wf.created_at) }),
          el("td", { text: when(wf.updated_at) }),
          el("td", { text: seconds(wf.duration_seconds) }),
        ]);
        body.append(row);
      }
      byId("empty").hidden = page.workflows.length > 0;
      byId("prev").disabled = offset === 0;
      byId("next").disabled = !page.has_more;
      const first = page.workflows.length ? offset + 1 : 0;
      byId("page-info").textContent = first + "–" + (offset + page.workflows.length);
    }

    async function loadDefinitions() {
      const data = await api("/api/definitions");
      const filter = byId("filter-name");
      const start = byId("start-name");
      for (const def of data.definitions) {
        filter.append(el("option", { value: def.name, text: def.name }));
        start.append(el("option", { value: def.name, text: def.name }));
      }
      filter.value = wantedName;
      wantedName = "";
    }

    const refresh = debounce(function () {
      loadList();
      loadStats().catch(function () {});
    }, 250);

    byId("filters").addEventListener("submit", function (event) {
      event.preventDefault();
      offset = 0;
      loadList();
    });
    byId("prev").addEventListener("click", function () {
      offset = Math.max(0, offset - limit);
      loadList();
    });
    byId("next").addEventListener("click", function () {
      offset += limit;
      loadList();
    });
    byId("start-form").addEventListener("submit", async function (event) {
      event.preventDefault();
      const errorBox = byId("start-error");
      errorBox.textContent = "";
      try {
        const body = {
          name: byId("start-name").value,
          input: parseJson(byId("start-input").value, "Input"),
        };
        const id = byId("start-id").value.trim();
        if (id) body.id = id;
        const started = await api("/api/workflows", { method: "POST", json: body });
        window.location.assign(workflowHref(started.workflow_id));
      } catch (err) {
        errorBox.textContent = err.message;
      }
    });

    loadDefinitions()
      .catch(function (err) {
        byId("list-error").textContent = err.message;
      })
      .then(function () {
        follow("/api/events/stream", "workflow", refresh);
        loadList();
        loadStats().catch(function () {});
      });
  }

  // -- detail page ---------------------------------------------------------------------------

  function workflowPage() {
    const prefix = "/workflows/";
    const workflowId = decodeURIComponent(window.location.pathname.slice(prefix.length));
    const base = "/api/workflows/" + encodeURIComponent(workflowId);
    let definition = null;
    let lastSeq = 0;
    document.title = "Loom: " + workflowId;
    byId("workflow-id").textContent = workflowId;

    let current = null;
    const events = [];
    const SVG = "http://www.w3.org/2000/svg";

    function svg(tag, attrs, text) {
      const node = document.createElementNS(SVG, tag);
      for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
      if (text !== undefined) node.textContent = text;
      return node;
    }

    function renderSummary(wf) {
      current = wf;
      const list = byId("summary");
      const items = [
        ["Name", wf.name],
        ["Version", String(wf.version)],
        ["Status", statusBadge(wf.status)],
        ["Current step", wf.current_step || "-"],
        ["Started", when(wf.created_at)],
        ["Updated", when(wf.updated_at)],
        ["Duration", seconds(wf.duration_seconds)],
        ["Events", String(wf.last_seq)],
      ];
      if (wf.cancel_requested) items.push(["Cancel", "requested"]);
      list.replaceChildren();
      for (const [term, value] of items) {
        list.append(el("div", {}, [el("dt", { text: term }), el("dd", {}, [value])]));
      }
      byId("input").textContent = pretty(wf.input);
      byId("state").textContent = pretty(wf.state);
      renderError(wf.error);
      const running = wf.status === "RUNNING";
      byId("signal-send").disabled = !running;
      byId("cancel-send").disabled = !running;
      byId("retry").disabled = wf.status !== "FAILED";
      renderSteps(wf);
    }

    function lastActivityFailure() {
      for (let i = events.length - 1; i >= 0; i -= 1) {
        const item = events[i];
        if (item.type === "WORKFLOW_RETRIED") return null;
        if (item.type === "ACTIVITY_FAILED") return item;
      }
      return null;
    }

    function errorLine(prefix, error, where) {
      return el("p", { class: "error-head" }, [
        el("strong", { text: prefix + (error.type || "Error") + ": " }),
        el("span", { class: "error-message", text: String(error.message || "") + where }),
      ]);
    }

    function renderError(error) {
      const box = byId("error");
      box.replaceChildren();
      byId("error-section").hidden = !error;
      if (!error) return;
      box.append(errorLine("", error, error.step ? " (in step " + error.step + ")" : ""));
      const failure = lastActivityFailure();
      if (failure && failure.payload && failure.payload.error) {
        const p = failure.payload;
        const where = " (activity " + p.name + ", attempt " + p.attempt + ")";
        box.append(errorLine("Caused by ", p.error, where));
      }
      const rest = Object.assign({}, error);
      delete rest.traceback;
      box.append(
        el("details", {}, [
          el("summary", { text: "Error details and traceback" }),
          el("pre", { text: pretty(rest) + (error.traceback ? "\n\n" + error.traceback : "") }),
        ])
      );
    }

    function stepTimes() {
      // step name -> {start, end} from STEP_STARTED / STEP_COMPLETED (the latest attempt).
      const times = {};
      for (const item of events) {
        const step = item.payload && item.payload.step;
        if (item.type === "STEP_STARTED" && step) {
          times[step] = { start: item.timestamp, end: null };
        }
        else if (item.type === "STEP_COMPLETED" && step && times[step]) {
          times[step].end = item.timestamp;
        }
      }
      return times;
    }

    function renderSteps(wf) {
      const list = byId("steps");
      list.replaceChildren();
      const times = stepTimes();
      const names = definition
        ? definition.steps.map(function (s) {
            return s.name;
          })
        : Object.keys(times);
      const calls = {};
      if (definition) {
        for (const s of definition.steps) calls[s.name] = s.calls || [];
      }
      const starts = Object.values(times).map(function (t) {
        return t.start;
      });
      const first = starts.length ? Math.min.apply(null, starts) : null;
      const last = wf.status === "RUNNING" ? Date.now() / 1000 : wf.updated;
      let end = first;
      for (const t of Object.values(times)) end = Math.max(end, t.end || last);
      const span = first === null ? 1 : Math.max(end - first, 0.001);
      const width = 1000;
      const label = 180;
      const barArea = width - label - 90;
      const rowH = 26;
      const chart = svg("svg", {
        class: "gantt",
        viewBox: "0 0 " + width + " " + (names.length * rowH + 4),
        role: "img",
        "aria-label": "Step timeline",
      });
      names.forEach(function (name, index) {
        const t = times[name];
        let phase = "pending";
        if (t && t.end !== null) phase = "done";
        else if (t) phase = wf.status === "RUNNING" ? "current" : "stopped";
        if (wf.status === "COMPLETED" && !t) phase = "done";
        const y = index * rowH + 2;
        const group = svg("g", { class: "bar bar-" + phase, "data-step": name });
        group.append(svg("text", { x: 0, y: y + 17, class: "bar-label" }, name));
        if (t) {
          const stop = t.end !== null ? t.end : last;
          const x = label + ((t.start - first) / span) * barArea;
          const w = Math.max(3, ((stop - t.start) / span) * barArea);
          group.append(svg("rect", { x: x, y: y + 4, width: w, height: rowH - 8, rx: 3 }));
          group.append(
            svg("text", { x: x + w + 6, y: y + 17, class: "bar-time" }, seconds(stop - t.start))
          );
        } else {
          group.append(
            svg("text", { x: label, y: y + 17, class: "bar-time" }, phase === "done" ? "" : "not started")
          );
        }
        group.append(svg("title", {}, name + ": " + phase));
        chart.append(group);
        const what = (calls[name] || []).map(function (c) {
          return c.kind + (c.name ? " " + c.name : "");
        });
        list.append(
          el("li", { class: "step step-" + phase, "data-step": name }, [
            el("strong", { text: name }),
            el("span", {
              class: "muted",
              text: " " + phase + (what.length ? " — " + what.join(", ") : ""),
            }),
          ])
        );
      });
      if (!definition) {
        const note = "Definition not registered in this server.";
        list.append(el("li", { class: "muted", text: note }));
      }
      const holder = byId("timeline");
      holder.replaceChildren(chart);
    }

    function describeEvent(item) {
      const payload = item.payload || {};
      const keys = Object.keys(payload).filter(function (k) {
        return k !== "traceback";
      });
      const parts = keys.slice(0, 4).map(function (k) {
        const v = JSON.stringify(payload[k]);
        return k + "=" + (v && v.length > 40 ? v.slice(0, 40) + "…" : v);
      });
      return parts.join(" ") + (keys.length > 4 ? " …" : "");
    }

    function appendEvent(item) {
      if (item.seq <= lastSeq) return;
      lastSeq = item.seq;
      events.push(item);
      const details = el("details", {}, [
        el("summary", { text: describeEvent(item) || "(no payload)" }),
        el("pre", { class: "payload", text: pretty(item.payload) }),
      ]);
      const kind = "ev ev-" + item.type.toLowerCase();
      const row = el("tr", { "data-seq": String(item.seq), class: kind }, [
        el("td", { text: String(item.seq) }),
        el("td", { text: when(item.created_at) }),
        el("td", { text: item.type }),
        el("td", {}, [details]),
      ]);
      byId("events").tBodies[0].append(row);
    }

    async function loadWorkflow() {
      try {
        renderSummary(await api(base));
        byId("load-error").textContent = "";
        return true;
      } catch (err) {
        byId("load-error").textContent = err.message;
        return false;
      }
    }

    const refresh = debounce(loadWorkflow, 200);
    setInterval(function () {
      if (current && current.status === "RUNNING") renderSteps(current);
    }, 1000);

    function showResult(text, failed) {
      const box = byId("action-result");
      box.textContent = text;
      box.className = failed ? "error" : "ok";
    }

    async function act(what, question, path, body, done) {
      if (!window.confirm(question + " workflow " + workflowId + "?")) {
        showResult(what + ": not sent (not confirmed).", false);
        return;
      }
      try {
        const result = await api(base + path, { method: "POST", json: body });
        showResult(done(result), false);
        refresh();
      } catch (err) {
        showResult(what + " failed: " + err.message, true);
      }
    }

    byId("signal-form").addEventListener("submit", function (event) {
      event.preventDefault();
      const name = byId("signal-name").value.trim();
      let payload;
      try {
        if (!name) throw new Error("Give the signal a name.");
        payload = parseJson(byId("signal-payload").value, "Payload");
      } catch (err) {
        showResult("Signal failed: " + err.message, true);
        return;
      }
      const question = "Send signal " + JSON.stringify(name) + " to";
      act("Signal", question, "/signal", { name: name, payload: payload }, function () {
        return "Signal " + name + " sent.";
      });
    });
    byId("cancel-form").addEventListener("submit", function (event) {
      event.preventDefault();
      const reason = byId("cancel-reason").value.trim();
      act("Cancel", "Cancel", "/cancel", reason ? { reason: reason } : {}, function (result) {
        return "Cancel: " + result.outcome;
      });
    });
    byId("retry").addEventListener("click", function () {
      act("Retry", "Retry", "/retry", {}, function () {
        return "Retried: the workflow resumes from the step that failed.";
      });
    });

    Promise.all([api("/api/definitions"), api(base)])
      .then(function ([defs, wf]) {
        definition =
          defs.definitions.find(function (d) {
            return d.name === wf.name;
          }) || null;
        renderSummary(wf);
        follow(base + "/events/stream", "history", function (item) {
          appendEvent(item);
          refresh();
        });
      })
      .catch(function (err) {
        byId("load-error").textContent = err.message;
        byId("live").textContent = "offline";
      });
  }

  // Each view has a path of its own (/definitions, /metrics or /queue); ?view= works too.
  const paths = { "/definitions": "definitions", "/metrics": "metrics", "/queue": "metrics" };
  const view = paths[window.location.pathname] || params.get("view") || "list";
  if (document.body.dataset.page === "list") {
    const known = { list: listPage, definitions: definitionsView, metrics: metricsView };
    const chosen = known[view] ? view : "list";
    for (const name of Object.keys(known)) byId("view-" + name).hidden = name !== chosen;
    for (const link of document.querySelectorAll("nav.tabs a")) {
      if (link.dataset.view === chosen) link.setAttribute("aria-current", "page");
    }
    document.title = "Loom: " + (chosen === "list" ? "workflows" : chosen);
    known[chosen]();
  }
  else if (document.body.dataset.page === "workflow") workflowPage();
})();
