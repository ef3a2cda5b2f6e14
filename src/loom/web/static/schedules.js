// The schedules view: every schedule with its state and next run, polled every 2 s (one poll
// at a time, the newest answer only), with Pause/Resume, Trigger and Delete buttons; the
// selected schedule's next run times and recent runs, each linked to its workflow's page.

import { api, newestOnly, pageParams, workflowHref } from "./api.js";
import { byId, el, statusBadge, when } from "./format.js";

const EVERY_MS = 2000;

/** The API address of one schedule (names never hold "/", but may hold "%", "?", spaces). */
function scheduleApi(name, suffix) {
  return "/api/schedules/" + encodeURIComponent(String(name)) + (suffix || "");
}

function button(label, onClick) {
  const node = el("button", { type: "button", text: label });
  node.addEventListener("click", onClick);
  return node;
}

function runLink(workflowId) {
  return workflowId ? el("a", { href: workflowHref(workflowId), text: workflowId }) : "-";
}

export function schedulesView() {
  const poll = newestOnly();
  let selected = pageParams().get("schedule");
  byId("live").textContent = "polling";

  function say(text, isError) {
    byId("schedules-error").textContent = isError ? text : "";
    byId("schedules-note").textContent = isError ? "" : text;
  }

  async function act(name, action) {
    const questions = { trigger: "Start a run of schedule ", delete: "Delete schedule " };
    if (questions[action] && !window.confirm(questions[action] + name + " now?")) {
      say(action + ": not sent (not confirmed).", false);
      return;
    }
    try {
      if (action === "delete") {
        await api(scheduleApi(name), { method: "DELETE" });
        if (selected === name) selected = null;
        say("deleted schedule " + name, false);
      } else {
        const answer = await api(scheduleApi(name, "/" + action), { method: "POST" });
        say(action === "trigger" ? "started " + answer.workflow_id : action + "d " + name, false);
        selected = name;
      }
    } catch (err) {
      say(err.message, true);
    }
    await load();
  }

  function select(name) {
    selected = name;
    const url = new URL(window.location.href);
    url.searchParams.set("schedule", name);
    window.history.replaceState(window.history.state, "", url.pathname + url.search);
    load();
  }

  function row(s) {
    const name = el("a", { href: "/schedules?schedule=" + encodeURIComponent(s.name), text: s.name });
    name.addEventListener("click", function (event) {
      event.preventDefault();
      select(s.name);
    });
    const state = el("span", { class: s.paused ? "status status-canceled" : "status status-completed", text: s.paused ? "paused" : "active" });
    const actions = el("td", { class: "actions" }, [
      button(s.paused ? "Resume" : "Pause", function () {
        act(s.name, s.paused ? "resume" : "pause");
      }),
      button("Trigger", function () {
        act(s.name, "trigger");
      }),
      button("Delete", function () {
        act(s.name, "delete");
      }),
    ]);
    return el("tr", { "data-name": s.name, class: s.name === selected ? "selected" : "" }, [
      el("td", {}, [name]),
      el("td", { text: s.workflow }),
      el("td", {}, [el("code", { text: s.spec })]),
      el("td", {}, [state]),
      el("td", { text: s.paused ? "-" : when(s.next_run) }),
      el("td", {}, [runLink(s.last_run_id)]),
      actions,
    ]);
  }

  function showDetail(detail) {
    const section = byId("schedule-detail");
    section.hidden = detail === null;
    if (detail === null) return;
    byId("schedule-title").textContent = "Schedule " + detail.name;
    const facts = [
      ["workflow", detail.workflow],
      ["timing", detail.spec],
      ["overlap", detail.overlap],
      ["catch-up", detail.catch_up + (detail.catch_up === "all" ? " (at most " + detail.catch_up_limit + ")" : "")],
      ["input", JSON.stringify(detail.input)],
    ];
    if (detail.buffered_run) facts.push(["buffered", when(detail.buffered_run)]);
    byId("schedule-facts").replaceChildren(
      ...facts.flatMap(function ([term, value]) {
        return [el("dt", { text: term }), el("dd", { text: value })];
      })
    );
    const upcoming = detail.upcoming.map(function (iso) {
      return el("li", { text: when(iso) });
    });
    byId("schedule-upcoming").replaceChildren(
      ...(upcoming.length ? upcoming : [el("li", { class: "muted", text: detail.paused ? "none while paused" : "none" })])
    );
    const runs = detail.recent_runs.map(function (wf) {
      return el("tr", { "data-id": wf.workflow_id }, [
        el("td", {}, [runLink(wf.workflow_id)]),
        el("td", {}, [statusBadge(wf.status)]),
        el("td", { text: when(wf.created_at) }),
      ]);
    });
    byId("schedule-runs").querySelector("tbody").replaceChildren(...runs);
    byId("schedule-no-runs").hidden = runs.length > 0;
  }

  async function load() {
    try {
      const answer = await poll(function (signal) {
        const detail = selected
          ? api(scheduleApi(selected), { signal }).catch(function (err) {
              if (err.status === 404) return null;
              throw err;
            })
          : Promise.resolve(null);
        return Promise.all([api("/api/schedules", { signal }), detail]);
      });
      if (answer === null) return;
      const [list, detail] = answer.value;
      byId("schedules-error").textContent = "";
      byId("schedules").querySelector("tbody").replaceChildren(...list.schedules.map(row));
      byId("schedules-empty").hidden = list.schedules.length > 0;
      showDetail(detail);
    } catch (err) {
      byId("schedules-error").textContent = err.message;
    }
  }

  // The next poll is planned when this one ends, so a slow server never has two at once.
  async function loop() {
    await load();
    setTimeout(loop, EVERY_MS);
  }
  loop();
}
