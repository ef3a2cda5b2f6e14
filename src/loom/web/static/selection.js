// The workflow list's selection and what can be done to it: cancel, retry or reset (to the
// step named in #bulk-step) the workflows checked, or every workflow the list's filters match ("select all matching", counted by the
// server). Each workflow is acted on by itself (POST /api/bulk/<action>); the result line says
// how many it worked for and why it did not for the others.

import { api } from "./api.js";
import { byId, el } from "./format.js";

const ACTIONS = { cancel: "Cancel", retry: "Retry", reset: "Reset" };

/**
 * The selection of the list. `appliedFilter()` gives the filters of the rows shown, as the
 * API's bulk filter; `acted()` is called after an action, to read the list again.
 */
export function bulkSelection(appliedFilter, acted) {
  const picked = new Set(); // ids of the rows checked
  let allMatching = null; // { filter, count } while "select all matching" is on

  function count() {
    return allMatching !== null ? allMatching.count : picked.size;
  }

  function showResult(text, failed) {
    const box = byId("bulk-result");
    box.textContent = text;
    box.className = failed ? "error" : "ok";
  }

  /** The checkbox of one row. */
  function checkbox(workflowId) {
    const box = el("input", {
      type: "checkbox",
      class: "pick",
      "data-id": workflowId,
      "aria-label": "Select " + workflowId,
    });
    box.checked = allMatching !== null || picked.has(workflowId);
    box.disabled = allMatching !== null;
    box.addEventListener("change", function () {
      if (box.checked) picked.add(workflowId);
      else picked.delete(workflowId);
      render();
    });
    return box;
  }

  function boxes() {
    return Array.from(document.querySelectorAll("#workflows tbody input.pick"));
  }

  function render() {
    const n = count();
    let label = "None selected";
    if (allMatching !== null) label = "All " + n + " matching workflows selected";
    else if (n) label = n + " selected";
    byId("bulk-count").textContent = label;
    for (const name of Object.keys(ACTIONS)) byId("bulk-" + name).disabled = n === 0;
    byId("bulk-all").textContent = allMatching !== null ? "Clear selection" : "Select all matching";
    const shown = boxes();
    for (const box of shown) {
      box.checked = allMatching !== null || picked.has(box.dataset.id);
      box.disabled = allMatching !== null;
    }
    const page = byId("pick-page");
    page.disabled = allMatching !== null;
    page.checked = shown.length > 0 && shown.every((box) => box.checked);
  }

  function clear() {
    picked.clear();
    allMatching = null;
    render();
  }

  async function selectAllMatching() {
    if (allMatching !== null) {
      clear();
      return;
    }
    const filter = appliedFilter();
    try {
      const answer = await api("/api/bulk/cancel", {
        method: "POST",
        json: { filter: filter, preview: true },
      });
      allMatching = { filter: filter, count: answer.matched };
      render();
    } catch (err) {
      showResult("Could not count the matching workflows: " + err.message, true);
    }
  }

  async function act(action) {
    const n = count();
    const which = allMatching !== null ? " matching the filters" : "";
    const step = byId("bulk-step").value.trim();
    if (action === "reset" && !step) {
      showResult("Reset: name the step to restart from first.", true);
      return;
    }
    const target = action === "reset" ? " to step " + JSON.stringify(step) : "";
    if (!window.confirm(ACTIONS[action] + " " + n + " workflow(s)" + which + target + "?")) {
      showResult(ACTIONS[action] + ": not sent (not confirmed).", false);
      return;
    }
    // The count confirmed goes along: the server acts on none if the filter now matches
    // another number of workflows.
    const body =
      allMatching !== null
        ? { filter: allMatching.filter, expected: allMatching.count }
        : { ids: Array.from(picked) };
    if (action === "reset") body.to_step = step;
    try {
      const result = await api("/api/bulk/" + action, { method: "POST", json: body });
      const failures = result.results.filter((r) => !r.ok);
      let text = ACTIONS[action] + ": done for " + result.succeeded + " of " + result.matched;
      if (failures.length) {
        const shown = failures.slice(0, 3).map((r) => r.workflow_id + ": " + r.error);
        text += "; failed for " + failures.length + " (" + shown.join("; ") + ")";
      }
      showResult(text + ".", failures.length > 0);
      clear();
      acted();
    } catch (err) {
      showResult(ACTIONS[action] + " failed: " + err.message, true);
      if (allMatching !== null) clear(); // its count is stale: select again to count again
    }
  }

  for (const action of Object.keys(ACTIONS)) {
    byId("bulk-" + action).addEventListener("click", function () {
      act(action);
    });
  }
  byId("bulk-all").addEventListener("click", selectAllMatching);
  byId("pick-page").addEventListener("change", function (event) {
    for (const box of boxes()) {
      if (event.target.checked) picked.add(box.dataset.id);
      else picked.delete(box.dataset.id);
    }
    render();
  });
  render();
  return { checkbox: checkbox, clear: clear, render: render };
}
