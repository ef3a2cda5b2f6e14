// The task queues view: each queue's waiting and running work, its limits and its oldest waiting
// item, polled every 2 s (one poll at a time, the newest answer only); and a form that sets a
// queue's limits, which every worker obeys from its next claim.

import { api, newestOnly } from "./api.js";
import { byId, el, seconds } from "./format.js";

const EVERY_MS = 2000;

function limitText(value) {
  return value === null || value === undefined ? "-" : String(value);
}

function render(queues) {
  const body = byId("queues").tBodies[0];
  body.replaceChildren();
  for (const q of queues) {
    const rate = q.rate === null ? "-" : q.started_in_window + " of " + q.rate;
    const row = el("tr", { "data-queue": q.name }, [
      el("td", {}, [el("button", { type: "button", class: "link", text: q.name })]),
      el("td", { class: "num", text: String(q.depth) }),
      el("td", { class: "num", text: String(q.running) }),
      el("td", { class: "num", text: limitText(q.concurrency) }),
      el("td", { class: "num", text: rate }),
      el("td", { class: "num", text: seconds(q.oldest_waiting_age_seconds) }),
    ]);
    // Picking a queue fills the form with its limits, to edit them.
    row.querySelector("button").addEventListener("click", function () {
      byId("queue-name").value = q.name;
      byId("queue-concurrency").value = q.concurrency === null ? "" : String(q.concurrency);
      byId("queue-rate").value = q.rate === null ? "" : q.rate;
    });
    body.append(row);
  }
  if (queues.length === 0) {
    body.append(el("tr", {}, [el("td", { colspan: "6", text: "No queue holds work or limits." })]));
  }
}

export function queuesView() {
  const poll = newestOnly();
  byId("live").textContent = "polling";

  async function load() {
    try {
      const answer = await poll(function (signal) {
        return api("/api/queues", { signal });
      });
      if (answer === null) return;
      byId("queues-error").textContent = "";
      render(answer.value.queues);
    } catch (err) {
      byId("queues-error").textContent = err.message;
    }
  }

  byId("queue-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const name = byId("queue-name").value.trim();
    const concurrency = byId("queue-concurrency").value.trim();
    const rate = byId("queue-rate").value.trim();
    const body = {
      concurrency: concurrency === "" ? null : Number(concurrency),
      rate: rate === "" ? null : rate,
    };
    const result = byId("queue-result");
    try {
      const saved = await api("/api/queues/" + encodeURIComponent(name), {
        method: "PUT",
        json: body,
      });
      result.classList.remove("error");
      result.textContent =
        "Saved " + saved.name + ": concurrency " + limitText(saved.concurrency) +
        ", rate " + limitText(saved.rate) + ".";
      load();
    } catch (err) {
      result.classList.add("error");
      result.textContent = "Not saved: " + err.message;
    }
  });

  async function loop() {
    await load();
    setTimeout(loop, EVERY_MS);
  }
  loop();
}
