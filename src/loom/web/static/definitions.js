// The definitions view: each registered workflow's steps as a graph, optionally coloured by how
// far one run got.

import { allEvents, api, navigate, pageParams, workflowApi, workflowHref } from "./api.js";
import { byId, el, statusBadge, svgEl } from "./format.js";

/** step name -> "done" | "current" | "stopped", from a run's history. */
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

export function definitionsView() {
  const runId = pageParams().get("run") || "";
  byId("run-id").value = runId;
  byId("live").textContent = "";
  byId("run-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const q = new URLSearchParams();
    const id = byId("run-id").value.trim();
    if (id) q.set("run", id);
    navigate("/definitions?" + q.toString());
  });

  async function load() {
    const data = await api("/api/definitions");
    let run = null;
    let phases = null;
    if (runId) {
      try {
        run = await api(workflowApi(runId));
        phases = phasesOf(run, await allEvents(runId));
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
      const queries = (def.queries || []).map(function (q) {
        return q.name + "(" + q.parameters.join(", ") + ")";
      });
      if (queries.length) {
        parts.push(el("p", { class: "muted", text: "Queries: " + queries.join(", ") }));
      }
      holder.append(el("article", { class: "definition", "data-name": def.name }, parts));
    }
    if (!data.definitions.length) holder.append(el("p", { text: "No workflows registered." }));
  }

  load().catch(function (err) {
    byId("defs-error").textContent = err.message;
  });
}
