// The queue and metrics view: polled every 2 s, one poll at a time, the newest answer only.

import { api, newestOnly } from "./api.js";
import { barChart, columnChart } from "./charts.js";
import { byId, seconds } from "./format.js";

const EVERY_MS = 2000;

function render(stats, queue, depth) {
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
  columnChart(byId("chart-depth"), depth, "Ready tasks", 150);
}

export function metricsView() {
  const depth = [];
  const poll = newestOnly();
  byId("live").textContent = "polling";

  async function load() {
    try {
      const answer = await poll(function (signal) {
        return Promise.all([api("/api/stats", { signal }), api("/api/queue", { signal })]);
      });
      if (answer === null) return;
      const [stats, queue] = answer.value;
      byId("metrics-error").textContent = "";
      depth.push(queue.ready);
      if (depth.length > 150) depth.shift();
      render(stats, queue, depth);
    } catch (err) {
      byId("metrics-error").textContent = err.message;
    }
  }

  // The next poll is planned when this one ends, so a slow server never has two at once.
  async function loop() {
    await load();
    setTimeout(loop, EVERY_MS);
  }
  loop();
}
