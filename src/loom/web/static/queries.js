// The queries of one workflow (its @loom.query methods): a Run button per query, with a JSON
// array of arguments when the query takes any, and the answer (or the server's error) shown
// under it. A query changes nothing, so it runs without a confirmation; each query shows only
// the answer to its newest run.

import { api, newestOnly, workflowApi } from "./api.js";
import { el, parseJson, pretty } from "./format.js";

function queryPath(workflowId, name, args) {
  const query = args.length ? "?args=" + encodeURIComponent(JSON.stringify(args)) : "";
  return workflowApi(workflowId, "/query/" + encodeURIComponent(name)) + query;
}

function queryRow(workflowId, query) {
  const run = newestOnly();
  const takes = query.parameters || [];
  const result = el("pre", { class: "query-result", hidden: "" });
  const args = el("input", {
    class: "query-args",
    value: "[]",
    autocomplete: "off",
    "aria-label": "Arguments of " + query.name + " (a JSON array)",
    placeholder: "[" + takes.join(", ") + "]",
  });
  const button = el("button", { type: "submit", text: "Run" });
  const fields = [el("strong", { class: "query-name", text: query.name })];
  if (takes.length) {
    fields.push(el("label", {}, ["Arguments (" + takes.join(", ") + ")", args]));
  }
  fields.push(button);
  const form = el("form", { class: "row query", "data-query": query.name }, fields);
  const parts = [form];
  if (query.description) parts.push(el("p", { class: "muted", text: query.description }));
  parts.push(result);

  function show(text, failed) {
    result.hidden = false;
    result.textContent = text;
    result.className = "query-result " + (failed ? "error" : "ok");
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    let values = [];
    try {
      values = takes.length ? parseJson(args.value, "Arguments") : [];
      if (!Array.isArray(values)) throw new Error("Arguments must be a JSON array.");
    } catch (err) {
      show(err.message, true);
      return;
    }
    button.disabled = true;
    try {
      const answer = await run(function (signal) {
        return api(queryPath(workflowId, query.name, values), { signal: signal });
      });
      if (answer !== null) show(pretty(answer.value.result), false);
    } catch (err) {
      show(query.name + " failed: " + err.message, true);
    } finally {
      button.disabled = false;
    }
  });
  return el("div", { class: "query-item" }, parts);
}

/** The queries section's content for `definition` (null: not registered in this server). */
export function queryPanel(workflowId, definition) {
  if (!definition) {
    return [el("p", { class: "muted", text: "Definition not registered in this server." })];
  }
  const queries = definition.queries || [];
  if (!queries.length) {
    return [el("p", { class: "muted", text: "This workflow defines no queries." })];
  }
  return queries.map(function (query) {
    return queryRow(workflowId, query);
  });
}
