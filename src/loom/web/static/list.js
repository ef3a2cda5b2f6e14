// The workflow list: filters, pages, the overview counts and the start form.
//
// The list is fetched when the filters or the page change; after that it follows
// /api/events/stream, whose every message is the full summary of a workflow that changed: the
// summary is applied to the rows shown (updated, inserted where the server's order puts it, or
// removed when it no longer matches the filters) without asking the server again. A summary
// older than the row shown (`updated`) is dropped, so repeats and late messages do no harm. The
// overview counts are not in the messages: they are fetched again, at most once a second, while
// changes arrive.

import {
  api,
  debounce,
  follow,
  navigate,
  newestOnly,
  pageParams,
  throttle,
  workflowHref,
} from "./api.js";
import { byId, el, parseJson, seconds, statusBadge, when } from "./format.js";

const LIMIT = 50;

/** The server's order: newest created first, then by id. */
function order(a, b) {
  const byCreated = Date.parse(b.created_at) - Date.parse(a.created_at);
  if (byCreated) return byCreated;
  if (a.workflow_id === b.workflow_id) return 0;
  return a.workflow_id < b.workflow_id ? -1 : 1;
}

/** A datetime-local value (the browser's time zone) as epoch seconds, or 0 when empty. */
function epochOf(value) {
  const ms = value ? new Date(value).getTime() : NaN;
  return Number.isFinite(ms) ? ms / 1000 : 0;
}

function matches(wf, filters) {
  if (filters.status && wf.status !== filters.status) return false;
  if (filters.name && wf.name !== filters.name) return false;
  const created = Date.parse(wf.created_at) / 1000;
  if (filters.from && created < filters.from) return false;
  if (filters.to && created >= filters.to) return false;
  const q = filters.q.toLowerCase();
  return !q || String(wf.workflow_id).toLowerCase().includes(q);
}

const received = new WeakMap(); // summary -> when it arrived (ms), to age a running duration

function duration(wf) {
  const since = received.has(wf) ? (Date.now() - received.get(wf)) / 1000 : 0;
  const running = wf.status === "RUNNING" && typeof wf.duration_seconds === "number";
  return seconds(running ? wf.duration_seconds + since : wf.duration_seconds);
}

function makeRow(wf) {
  const link = el("a", { href: workflowHref(wf.workflow_id), text: wf.workflow_id });
  return el("tr", { "data-id": wf.workflow_id }, [
    el("td", {}, [link]),
    el("td", { text: wf.name }),
    el("td", {}, [statusBadge(wf.status)]),
    el("td", { text: wf.current_step || "-" }),
    el("td", { text: when(wf.created_at) }),
    el("td", { text: when(wf.updated_at) }),
    el("td", { class: "duration", text: duration(wf) }),
  ]);
}

function renderStats(stats) {
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
  byId("stats").replaceChildren(
    ...items.map(function ([term, value]) {
      return el("div", {}, [el("dt", { text: term }), el("dd", { text: value })]);
    })
  );
}

export function listPage() {
  const params = pageParams();
  let offset = Number(params.get("offset") || 0) || 0;
  byId("filter-status").value = params.get("status") || "";
  byId("filter-q").value = params.get("q") || "";
  byId("filter-tag").value = params.get("tag") || "";
  let wantedName = params.get("name") || "";

  let filters = null; // those of the rows shown (null until the first answer)
  let shown = []; // summaries, in the server's order
  let hasMore = false;
  let rows = new Map(); // workflow id -> { wf, node } of the rows in the table
  let pending = null; // summaries streamed while a list request is in flight
  const listRequests = newestOnly();
  const statsRequests = newestOnly();

  function formFilters() {
    return {
      status: byId("filter-status").value,
      name: byId("filter-name").value,
      q: byId("filter-q").value.trim(),
      tag: byId("filter-tag").value.trim(),
      from: epochOf(byId("filter-from").value),
      to: epochOf(byId("filter-to").value),
    };
  }

  function render() {
    const next = new Map();
    const nodes = shown.map(function (wf) {
      const had = rows.get(wf.workflow_id);
      const node = had && had.wf === wf ? had.node : makeRow(wf);
      next.set(wf.workflow_id, { wf: wf, node: node });
      return node;
    });
    rows = next;
    byId("workflows").tBodies[0].replaceChildren(...nodes);
    byId("empty").hidden = shown.length > 0;
    byId("prev").disabled = offset === 0;
    byId("next").disabled = !hasMore;
    const first = shown.length ? offset + 1 : 0;
    byId("page-info").textContent = first + "–" + (offset + shown.length);
  }

  /** Apply one streamed summary to the rows shown; true when the table changed. */
  function apply(wf) {
    if (filters === null) return false; // kept in `pending` for the first answer
    const at = shown.findIndex(function (w) {
      return w.workflow_id === wf.workflow_id;
    });
    if (at >= 0 && shown[at].updated > wf.updated) return false; // older than the row shown
    if (filters.tag && at < 0) {
      // A summary carries no tags: whether a new one belongs here is the server's to say.
      resync();
      return false;
    }
    if (!matches(wf, filters)) {
      if (at < 0) return false;
      shown.splice(at, 1);
      if (hasMore) resync(); // the next page's first row moves up into this one
      return true;
    }
    if (at >= 0) {
      shown[at] = wf;
      return true;
    }
    let pos = shown.findIndex(function (w) {
      return order(wf, w) < 0;
    });
    if (pos < 0) pos = shown.length;
    if (pos === 0 && offset > 0) return false; // it sorts onto an earlier page
    if (pos === shown.length && hasMore) return false; // onto a later page
    shown.splice(pos, 0, wf);
    if (shown.length > LIMIT) {
      shown.pop();
      hasMore = true;
    }
    return true;
  }

  function onChange(wf) {
    received.set(wf, Date.now());
    if (pending !== null) pending.push(wf);
    if (apply(wf)) render();
    statsSoon();
  }

  async function loadList() {
    const wanted = formFilters();
    const q = new URLSearchParams();
    if (wanted.status) q.set("status", wanted.status);
    if (wanted.name) q.set("name", wanted.name);
    if (wanted.q) q.set("q", wanted.q);
    if (wanted.tag) q.set("tag", wanted.tag);
    if (wanted.from) q.set("created_after", String(wanted.from));
    if (wanted.to) q.set("created_before", String(wanted.to));
    if (offset) q.set("offset", String(offset));
    const search = q.toString();
    window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
    q.set("limit", String(LIMIT));
    const errorBox = byId("list-error");
    pending = [];
    let answer;
    try {
      answer = await listRequests(function (signal) {
        return api("/api/workflows?" + q.toString(), { signal: signal });
      });
    } catch (err) {
      pending = null;
      errorBox.textContent = err.message;
      // A server or network problem passes: ask again. A refused request stays refused.
      if (!(err.status >= 400 && err.status < 500)) retrySoon();
      return;
    }
    if (answer === null) return; // a newer request replaced this one
    errorBox.textContent = "";
    filters = wanted;
    shown = answer.value.workflows.slice();
    const now = Date.now();
    for (const wf of shown) received.set(wf, now);
    hasMore = answer.value.has_more;
    const streamed = pending;
    pending = null;
    for (const wf of streamed) apply(wf); // changes that may be newer than the answer
    render();
  }

  async function loadStats() {
    try {
      const answer = await statsRequests(function (signal) {
        return api("/api/stats", { signal: signal });
      });
      if (answer !== null) renderStats(answer.value);
    } catch (err) {
      // The counts are an overview: the next change fetches them again.
    }
  }

  const statsSoon = throttle(loadStats, 1000);
  // A running workflow's duration grows without a change to stream: it is aged here.
  setInterval(function () {
    for (const { wf, node } of rows.values()) {
      if (wf.status === "RUNNING") node.querySelector("td.duration").textContent = duration(wf);
    }
  }, 1000);
  const resync = debounce(loadList, 300);
  const retrySoon = debounce(loadList, 3000);

  async function loadDefinitions() {
    const data = await api("/api/definitions");
    const filter = byId("filter-name");
    const start = byId("start-name");
    const names = [...new Set(data.definitions.map((def) => def.name))]; // one per version
    for (const name of names) {
      filter.append(el("option", { value: name, text: name }));
      start.append(el("option", { value: name, text: name }));
    }
    filter.value = wantedName;
    wantedName = "";
  }

  byId("filters").addEventListener("submit", function (event) {
    event.preventDefault();
    offset = 0;
    loadList();
  });
  byId("prev").addEventListener("click", function () {
    offset = Math.max(0, offset - LIMIT);
    loadList();
  });
  byId("next").addEventListener("click", function () {
    offset += LIMIT;
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
      navigate(workflowHref(started.workflow_id));
    } catch (err) {
      errorBox.textContent = err.message;
    }
  });

  loadDefinitions()
    .catch(function (err) {
      byId("list-error").textContent = err.message;
    })
    .then(function () {
      follow("/api/events/stream", "workflow", onChange);
      loadList();
      loadStats();
    });
}
