// The page of one workflow: summary, steps, input and state, error, queries, actions and the
// history.
//
// The history follows the workflow's event stream (each message one event, in order). Input,
// state and error are not all in the events, so a new event has the workflow read again, once
// per burst; an answer older than the newest request is dropped. Heartbeats are not events:
// while the workflow runs they are read every second and drawn on the step timeline, with where
// its activities run (a routed one: waiting for a worker of its queue, or the worker running it).

import {
  api,
  debounce,
  follow,
  newestOnly,
  workflowApi,
  workflowHref,
  workflowIdOfPage,
} from "./api.js";
import { timelineChart } from "./charts.js";
import { queryPanel } from "./queries.js";
import {
  byId,
  el,
  errorDetails,
  errorLine,
  parseJson,
  payloadView,
  pretty,
  seconds,
  statusBadge,
  when,
  withoutTraceback,
} from "./format.js";

const WITHDRAWN = new Set([
  "ACTIVITY_CANCELED",
  "TIMER_CANCELED",
  "SIGNAL_WAIT_CANCELED",
  "CHILD_WORKFLOW_CANCELED",
]);

function withdrawnLabel(item) {
  const p = item.payload || {};
  const kind = item.type.split("_")[0].toLowerCase();
  return kind + (p.name ? " " + p.name : "") + " withdrawn (seq " + p.scheduled + ")";
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

export function workflowPage() {
  const workflowId = workflowIdOfPage();
  let definition = null;
  let lastSeq = 0;
  let current = null;
  let heartbeats = [];
  let activities = [];
  const events = [];
  const reads = newestOnly();
  const beatReads = newestOnly();
  const activityReads = newestOnly();
  document.title = "Loom: " + workflowId;
  byId("workflow-id").textContent = workflowId;

  function renderSummary(wf) {
    current = wf;
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
    items.push(["Queue", el("a", { href: "/queues", text: wf.queue || "default" })]);
    if (wf.priority) items.push(["Priority", String(wf.priority)]);
    const tags = Object.entries(wf.tags || {});
    if (tags.length) {
      // Each tag finds the workflows that share it.
      items.push([
        "Tags",
        el(
          "span",
          { class: "tags" },
          tags.map(function ([key, value]) {
            const tag = key + "=" + value;
            return el("a", { href: "/?" + new URLSearchParams({ tag: tag }), text: tag });
          })
        ),
      ]);
    }
    if (wf.cancel_requested) items.push(["Cancel", "requested"]);
    if (wf.parent_id) {
      items.push(["Parent", el("a", { href: workflowHref(wf.parent_id), text: wf.parent_id })]);
    }
    byId("summary").replaceChildren(
      ...items.map(function ([term, value]) {
        return el("div", {}, [el("dt", { text: term }), el("dd", {}, [value])]);
      })
    );
    byId("input").textContent = pretty(wf.input);
    byId("state").textContent = pretty(wf.state);
    renderError(wf.error);
    const running = wf.status === "RUNNING";
    byId("signal-send").disabled = !running;
    byId("cancel-send").disabled = !running;
    byId("retry").disabled = wf.status !== "FAILED";
    byId("reset-send").disabled = wf.reset_requested === true;
    renderSteps(wf);
    renderResetSteps();
    loadActivities();
    loadChildren();
    loadRuns();
  }

  const runReads = newestOnly();
  async function loadRuns() {
    // The runs of this id, oldest first; an earlier run's history is read when opened.
    try {
      const answer = await runReads(function (signal) {
        return api(workflowApi(workflowId, "/runs"), { signal: signal });
      });
      if (answer === null) return;
      const runs = answer.value.runs;
      byId("runs-section").hidden = runs.length < 2;
      const list = byId("runs");
      if (list.dataset.key === JSON.stringify(runs)) return; // keep opened histories open
      list.dataset.key = JSON.stringify(runs);
      list.replaceChildren(
        ...runs.map(function (r) {
          const label = "Run " + r.number + " · " + r.status + " · " + r.events + " events";
          const body = el("ol", { class: "run-events" });
          const item = el("details", { "data-run": r.run_id }, [
            el("summary", { text: label + " · " + r.run_id }),
            body,
          ]);
          item.addEventListener("toggle", async function () {
            if (!item.open || body.childElementCount) return;
            try {
              const path = "/runs/" + encodeURIComponent(r.run_id) + "/events";
              const history = await api(workflowApi(workflowId, path));
              body.replaceChildren(
                ...history.events.map(function (e) {
                  return el("li", { text: e.seq + " " + e.type + " " + describeEvent(e) });
                })
              );
            } catch (err) {
              body.replaceChildren(el("li", { class: "error", text: err.message }));
            }
          });
          return el("li", {}, [item]);
        })
      );
    } catch (err) {
      byId("load-error").textContent = err.message;
    }
  }

  const childReads = newestOnly();
  async function loadChildren() {
    // The workflows this one started, oldest first, each linking to its own page.
    try {
      const path = "/api/workflows?limit=500&parent=" + encodeURIComponent(workflowId);
      const answer = await childReads(function (signal) {
        return api(path, { signal: signal });
      });
      if (answer === null) return;
      // Oldest first; the list is newest first, and children started together keep its order.
      const children = answer.value.workflows.slice().sort(function (a, b) {
        if (a.created_at === b.created_at) return 0;
        return a.created_at < b.created_at ? -1 : 1;
      });
      byId("children-section").hidden = children.length === 0;
      byId("children").tBodies[0].replaceChildren(
        ...children.map(function (c) {
          return el("tr", { "data-child": c.workflow_id }, [
            el("td", {}, [el("a", { href: workflowHref(c.workflow_id), text: c.workflow_id })]),
            el("td", { text: c.name }),
            el("td", {}, [statusBadge(c.status)]),
            el("td", { text: c.current_step || "-" }),
          ]);
        })
      );
    } catch (err) {
      byId("load-error").textContent = err.message;
    }
  }

  function lastActivityFailure() {
    for (let i = events.length - 1; i >= 0; i -= 1) {
      const item = events[i];
      if (item.type === "WORKFLOW_RETRIED" || item.type === "WORKFLOW_RESET") return null;
      if (item.type === "ACTIVITY_FAILED") return item;
    }
    return null;
  }

  function renderError(error) {
    const box = byId("error");
    byId("error-section").hidden = !error;
    if (!error) {
      box.replaceChildren();
      return;
    }
    const parts = [errorLine("", error, error.step ? " (in step " + error.step + ")" : "")];
    const failure = lastActivityFailure();
    if (failure && failure.payload && failure.payload.error) {
      const p = failure.payload;
      const where = " (activity " + p.name + ", attempt " + p.attempt + ")";
      parts.push(errorLine("Caused by ", p.error, where));
      parts.push(...errorDetails(p.error, "Activity"));
    }
    parts.push(...errorDetails(withoutTraceback(error)));
    parts.push(...errorDetails({ traceback: error.traceback }, "Workflow"));
    parts.push(
      el("details", { class: "error-data" }, [
        el("summary", { text: "Error details" }),
        el("pre", { text: pretty(withoutTraceback(error)) }),
      ])
    );
    // Rebuilt only when it changes, so a block the user opened stays open.
    const key = JSON.stringify([error, failure && failure.seq]);
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren(...parts);
  }

  function stepTimes() {
    // step name -> {start, end, marks} from STEP_STARTED / STEP_COMPLETED (the latest
    // attempt); marks are the calls the step withdrew and the signals its handlers applied. A
    // reset forgets the steps from the one it restarts from: they have not run since.
    const times = {};
    let running = null;
    for (const item of events) {
      const payload = item.payload || {};
      const step = payload.step;
      if (item.type === "WORKFLOW_RESET") {
        for (const name of Object.keys(times)) {
          if (times[name].index >= payload.index) delete times[name];
        }
        running = null;
      } else if (item.type === "STEP_STARTED" && step) {
        const index = payload.index;
        running = times[step] = { start: item.timestamp, end: null, marks: [], index: index };
      } else if (item.type === "STEP_COMPLETED" && step && times[step]) {
        times[step].end = item.timestamp;
        running = null;
      } else if (running && WITHDRAWN.has(item.type)) {
        running.marks.push({ at: item.timestamp, kind: "withdrawn", what: withdrawnLabel(item) });
      } else if (running && item.type === "SIGNAL_RECEIVED" && payload.scheduled == null) {
        running.marks.push({ at: item.timestamp, kind: "handled", what: "signal " + payload.name });
      } else if (running && item.type === "CHILD_WORKFLOW_STARTED") {
        running.marks.push({ at: item.timestamp, kind: "child", what: "child " + payload.workflow_id });
      }
    }
    return times;
  }

  function stepBeats(wf) {
    // step name -> the latest heartbeat of its activities (one whose scheduling is not in the
    // history yet, an activity running inline, belongs to the current step).
    const stepOfSeq = {};
    for (const item of events) {
      if (item.type === "ACTIVITY_SCHEDULED" && item.payload) {
        stepOfSeq[item.seq] = item.payload.step;
      }
    }
    const beats = {};
    for (const beat of heartbeats) {
      const step = stepOfSeq[beat.seq] || wf.current_step;
      if (step && (!beats[step] || beat.timestamp > beats[step].timestamp)) beats[step] = beat;
    }
    return beats;
  }

  async function loadHeartbeats() {
    try {
      const answer = await beatReads(function (signal) {
        return api(workflowApi(workflowId, "/heartbeats"), { signal: signal });
      });
      if (answer !== null) heartbeats = answer.value.heartbeats || [];
    } catch (err) {
      heartbeats = [];
    }
  }

  async function loadActivities() {
    // Each activity call, the worker each attempt ran on, and where one in flight stands.
    try {
      const answer = await activityReads(function (signal) {
        return api(workflowApi(workflowId, "/activities"), { signal: signal });
      });
      if (answer === null) return;
      activities = answer.value.activities || [];
      renderActivities();
      if (current) renderSteps(current);
    } catch (err) {
      byId("load-error").textContent = err.message;
    }
  }

  function renderActivities() {
    byId("activities-section").hidden = activities.length === 0;
    byId("activities").tBodies[0].replaceChildren(
      ...activities.map(function (a) {
        const ran = a.attempts
          .map(function (t) {
            return "attempt " + t.attempt + " " + t.outcome + " on " + (t.worker || "?");
          })
          .join("; ");
        return el("tr", { "data-seq": String(a.seq), class: "activity-" + a.status }, [
          el("td", { text: String(a.seq) }),
          el("td", { text: a.activity }),
          el("td", { text: a.step || "-" }),
          el("td", { text: String(a.attempt) }),
          el("td", { text: a.status }),
          el("td", { text: a.where, title: ran }),
        ]);
      })
    );
  }

  function stepWhere(wf) {
    // step name -> where its routed activities in flight stand, while the workflow runs.
    const where = {};
    if (wf.status !== "RUNNING") return where;
    for (const a of activities) {
      if ((a.status === "waiting" || a.status === "running") && a.step) {
        (where[a.step] = where[a.step] || []).push(a.activity + " " + a.where);
      }
    }
    return where;
  }

  function renderSteps(wf) {
    const times = stepTimes();
    const beats = wf.status === "RUNNING" ? stepBeats(wf) : {};
    const where = stepWhere(wf);
    const names = definition
      ? definition.steps.map(function (s) {
          return s.name;
        })
      : Object.keys(times);
    const calls = {};
    if (definition) {
      for (const s of definition.steps) calls[s.name] = s.calls || [];
    }
    const rows = names.map(function (name) {
      const t = times[name];
      let phase = "pending";
      if (t && t.end !== null) phase = "done";
      else if (t) phase = wf.status === "RUNNING" ? "current" : "stopped";
      if (wf.status === "COMPLETED" && !t) phase = "done";
      return [name, phase, t, t ? beats[name] : undefined];
    });
    const now = wf.status === "RUNNING" ? Date.now() / 1000 : wf.updated;
    byId("timeline").replaceChildren(timelineChart(rows, now));
    const items = rows.map(function ([name, phase, , beat]) {
      const what = (calls[name] || []).map(function (c) {
        return c.kind + (c.name ? " " + c.name : "");
      });
      const parts = [
        el("strong", { text: name }),
        el("span", {
          class: "muted",
          text: " " + phase + (what.length ? " — " + what.join(", ") : ""),
        }),
      ];
      if (beat) {
        const ago = seconds(Math.max(0, Date.now() / 1000 - beat.timestamp));
        const text = " — heartbeat of " + beat.activity + " " + ago + " ago";
        parts.push(el("span", { class: "beat-note", text: text }));
      }
      if (where[name]) {
        parts.push(el("span", { class: "where-note", text: " — " + where[name].join(", ") }));
      }
      return el("li", { class: "step step-" + phase, "data-step": name }, parts);
    });
    if (!definition) {
      items.push(el("li", { class: "muted", text: "Definition not registered in this server." }));
    } else if (Object.keys(definition.signal_handlers || {}).length) {
      const handled = Object.entries(definition.signal_handlers).map(function ([name, method]) {
        return name + " → " + method + "()";
      });
      items.push(el("li", { class: "muted", text: "Signal handlers: " + handled.join(", ") }));
    }
    byId("steps").replaceChildren(...items);
  }

  function renderResetSteps() {
    // The steps a reset can restart from: the class's (the server says which it cannot), or,
    // without it, those the history shows.
    const names = definition
      ? definition.steps.map(function (s) {
          return s.name;
        })
      : Array.from(
          new Set(
            events
              .filter(function (e) {
                return e.type === "STEP_STARTED";
              })
              .map(function (e) {
                return e.payload.step;
              })
          )
        );
    const select = byId("reset-step");
    if (select.dataset.key === JSON.stringify(names)) return; // keep the choice made
    select.dataset.key = JSON.stringify(names);
    select.replaceChildren(
      ...names.map(function (name) {
        return el("option", { value: name, text: name });
      })
    );
  }

  function appendEvent(item) {
    if (item.seq <= lastSeq) return;
    lastSeq = item.seq;
    events.push(item);
    const details = el("details", {}, [
      el("summary", { text: describeEvent(item) || "(no payload)" }),
      ...payloadView(item.payload),
    ]);
    const kind = "ev ev-" + String(item.type).toLowerCase();
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
      const answer = await reads(function (signal) {
        return api(workflowApi(workflowId), { signal: signal });
      });
      if (answer === null) return;
      renderSummary(answer.value);
      byId("load-error").textContent = "";
    } catch (err) {
      byId("load-error").textContent = err.message;
    }
  }

  const refresh = debounce(loadWorkflow, 200);
  setInterval(async function () {
    if (!current || current.status !== "RUNNING") return;
    await Promise.all([loadHeartbeats(), loadActivities()]);
    if (current) renderSteps(current);
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
      const result = await api(workflowApi(workflowId, path), { method: "POST", json: body });
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
  byId("reset-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const step = byId("reset-step").value;
    if (!step) {
      showResult("Reset failed: choose the step to restart from.", true);
      return;
    }
    const reason = byId("reset-reason").value.trim();
    const body = reason ? { to_step: step, reason: reason } : { to_step: step };
    const question = "Reset to step " + JSON.stringify(step) + ":";
    act("Reset", question, "/reset", body, function (result) {
      if (result.outcome === "REQUESTED") {
        return "Reset requested: the worker running it restarts it from " + step + ".";
      }
      return "Reset: it runs again from step " + step + ".";
    });
  });
  byId("retry").addEventListener("click", function () {
    act("Retry", "Retry", "/retry", {}, function () {
      return "Retried: the workflow resumes from the step that failed.";
    });
  });

  byId("download-history").href = workflowApi(workflowId, "/history.json");

  Promise.all([api("/api/definitions"), api(workflowApi(workflowId))])
    .then(async function ([defs, wf]) {
      definition =
        defs.definitions.find(function (d) {
          return d.name === wf.name;
        }) || null;
      if (wf.status === "RUNNING") await loadHeartbeats();
      renderSummary(wf);
      byId("queries").replaceChildren(...queryPanel(workflowId, definition));
      follow(workflowApi(workflowId, "/events/stream"), "history", function (item) {
        appendEvent(item);
        refresh();
      });
    })
    .catch(function (err) {
      byId("load-error").textContent = err.message;
      byId("live").textContent = "offline";
      byId("queries").replaceChildren();
    });
}
