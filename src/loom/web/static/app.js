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

    function renderSummary(wf) {
      const list = byId("summary");
      const items = [
        ["Name", wf.name],
        ["Version", wf.version],
        ["Status", statusBadge(wf.status)],
        ["Current step", wf.current_step || "-"],
        ["Started", when(wf.created_at)],
        ["Updated", when(wf.updated_at)],
        ["Duration", seconds(wf.duration_seconds)],
        ["Events", String(wf.last_seq)],
      ];
      list.replaceChildren();
      for (const [term, value] of items) {
        list.append(el("div", {}, [el("dt", { text: term }), el("dd", {}, [value])]));
      }
      byId("input").textContent = pretty(wf.input);
      byId("state").textContent = pretty(wf.state);
      byId("error-section").hidden = !wf.error;
      byId("error").textContent = wf.error ? pretty(wf.error) : "";
      renderSteps(wf);
    }

    function renderSteps(wf) {
      const list = byId("steps");
      list.replaceChildren();
      if (!definition) {
        list.append(el("li", { text: "Definition not registered in this server." }));
        return;
      }
      const current = definition.steps.findIndex(function (s) {
        return s.name === wf.current_step;
      });
      definition.steps.forEach(function (step, index) {
        let phase = "pending";
        if (wf.status === "COMPLETED" || (current >= 0 && index < current)) phase = "done";
        else if (index === current) phase = wf.status === "RUNNING" ? "current" : "stopped";
        const calls = (step.calls || []).map(function (c) {
          return c.kind + (c.name ? " " + c.name : "");
        });
        const item = el("li", { class: "step step-" + phase, "data-step": step.name }, [
          el("strong", { text: step.name }),
          el("span", { class: "muted", text: calls.length ? " — " + calls.join(", ") : "" }),
        ]);
        list.append(item);
      });
    }

    function describeEvent(item) {
      const payload = Object.assign({}, item.payload);
      return JSON.stringify(payload);
    }

    function appendEvent(item) {
      if (item.seq <= lastSeq) return;
      lastSeq = item.seq;
      const row = el("tr", { "data-seq": String(item.seq) }, [
        el("td", { text: String(item.seq) }),
        el("td", { text: when(item.created_at) }),
        el("td", { text: item.type }),
        el("td", {}, [el("code", { text: describeEvent(item) })]),
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

    function showResult(text, failed) {
      const box = byId("action-result");
      box.textContent = text;
      box.className = failed ? "error" : "ok";
    }

    async function act(path, body, done) {
      try {
        const result = await api(base + path, { method: "POST", json: body });
        showResult(done(result), false);
        refresh();
      } catch (err) {
        showResult(err.message, true);
      }
    }

    byId("signal-form").addEventListener("submit", function (event) {
      event.preventDefault();
      let payload;
      try {
        payload = parseJson(byId("signal-payload").value, "Payload");
      } catch (err) {
        showResult(err.message, true);
        return;
      }
      const name = byId("signal-name").value;
      act("/signal", { name: name, payload: payload }, function () {
        return "Signal " + name + " sent.";
      });
    });
    byId("cancel-form").addEventListener("submit", function (event) {
      event.preventDefault();
      const reason = byId("cancel-reason").value.trim();
      act("/cancel", reason ? { reason: reason } : {}, function (result) {
        return "Cancel: " + result.outcome;
      });
    });
    byId("retry").addEventListener("click", function () {
      act("/retry", {}, function () {
        return "Retried.";
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

  if (document.body.dataset.page === "list") listPage();
  else if (document.body.dataset.page === "workflow") workflowPage();
})();
