// Loom dashboard: the entry module. It picks the view the page's address names and hands over
// to that view's module; no build step, no third-party code. Every value from the server is put
// in the page as text, never parsed as HTML.

import { pageParams } from "./api.js";
import { definitionsView } from "./definitions.js";
import { workflowPage } from "./detail.js";
import { listPage } from "./list.js";
import { metricsView } from "./metrics.js";
import { queuesView } from "./queues.js";

// Each view has a path of its own (/definitions, /charts, /queue, /queues); ?view= works too.
// (/metrics is Prometheus's: the server answers it with the metrics, not with this page.)
const PATHS = {
  "/definitions": "definitions",
  "/charts": "charts",
  "/queue": "charts",
  "/queues": "queues",
};
const VIEWS = {
  list: listPage,
  definitions: definitionsView,
  charts: metricsView,
  queues: queuesView,
};

function start() {
  const page = document.body.dataset.page;
  if (page === "workflow") {
    workflowPage();
    return;
  }
  if (page !== "list") return;
  const wanted = PATHS[window.location.pathname] || pageParams().get("view") || "list";
  const chosen = Object.hasOwn(VIEWS, wanted) ? wanted : "list";
  for (const name of Object.keys(VIEWS)) {
    document.getElementById("view-" + name).hidden = name !== chosen;
  }
  for (const link of document.querySelectorAll("nav.tabs a")) {
    if (link.dataset.view === chosen) link.setAttribute("aria-current", "page");
  }
  document.title = "Loom: " + (chosen === "list" ? "workflows" : chosen);
  VIEWS[chosen]();
}

start();
