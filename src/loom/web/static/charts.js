// SVG charts drawn from plain numbers: horizontal bars, columns over time and the step timeline.

import { seconds, svgEl } from "./format.js";

/** Horizontal bars into `holder`; items: [label, value, cssClass]. */
export function barChart(holder, items) {
  const rowH = 28;
  const label = 150;
  const width = 600;
  const max = Math.max(1, ...items.map(function (i) {
    return i[1];
  }));
  const chart = svgEl("svg", {
    class: "bars",
    viewBox: "0 0 " + width + " " + (items.length * rowH + 4),
    role: "img",
  });
  items.forEach(function ([name, value, cls], index) {
    const y = index * rowH + 2;
    const w = Math.max(value ? 3 : 0, (value / max) * (width - label - 60));
    const group = svgEl("g", { class: "bar-row " + (cls || ""), "data-label": name });
    group.append(svgEl("text", { x: 0, y: y + 18, class: "bar-label" }, name));
    group.append(svgEl("rect", { x: label, y: y + 5, width: w, height: rowH - 10, rx: 3 }));
    const valueAt = { x: label + w + 6, y: y + 18, class: "bar-value" };
    group.append(svgEl("text", valueAt, String(value)));
    chart.append(group);
  });
  holder.replaceChildren(chart);
}

/** Columns into `holder`, oldest value first, the newest at the right edge of `slots`. */
export function columnChart(holder, values, caption, slots) {
  const width = 1000;
  const height = 120;
  const max = Math.max(1, ...values);
  const chart = svgEl("svg", {
    class: "columns-chart",
    viewBox: "0 0 " + width + " " + (height + 20),
    role: "img",
    "aria-label": caption,
  });
  chart.append(svgEl("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }));
  chart.append(svgEl("text", { x: 2, y: 12, class: "bar-value" }, "max " + max));
  const count = Math.max(values.length, slots || 1);
  const step = width / count;
  const shift = count - values.length;
  chart.append(svgEl("text", { x: width - 28, y: height + 16, class: "bar-value" }, "now"));
  values.forEach(function (value, index) {
    const h = (value / max) * (height - 20);
    const rect = svgEl("rect", {
      x: (index + shift) * step + 1,
      y: height - h,
      width: Math.max(1, step - 2),
      height: h,
    });
    rect.append(svgEl("title", {}, String(value)));
    chart.append(rect);
  });
  holder.replaceChildren(chart);
}

/**
 * The step timeline (a Gantt chart): rows are [name, phase, times, beat] where times is
 * {start, end} in epoch seconds (end null while running) or undefined for a step not started,
 * and beat the last heartbeat of the step's activities ({timestamp, activity, attempt,
 * details}, drawn as a mark on its bar) or undefined; `now` is where an unfinished bar ends.
 */
export function timelineChart(rows, now) {
  const starts = rows
    .filter(function (r) {
      return r[2];
    })
    .map(function (r) {
      return r[2].start;
    });
  const first = starts.length ? Math.min(...starts) : null;
  let end = first;
  for (const [, , t] of rows) if (t) end = Math.max(end, t.end || now);
  const span = first === null ? 1 : Math.max(end - first, 0.001);
  const width = 1000;
  const label = 180;
  const barArea = width - label - 90;
  const rowH = 26;
  const chart = svgEl("svg", {
    class: "gantt",
    viewBox: "0 0 " + width + " " + (rows.length * rowH + 4),
    role: "img",
    "aria-label": "Step timeline",
  });
  rows.forEach(function ([name, phase, t, beat], index) {
    const y = index * rowH + 2;
    const group = svgEl("g", { class: "bar bar-" + phase, "data-step": name });
    group.append(svgEl("text", { x: 0, y: y + 17, class: "bar-label" }, name));
    if (t) {
      const stop = t.end !== null ? t.end : now;
      const x = label + ((t.start - first) / span) * barArea;
      const w = Math.max(3, ((stop - t.start) / span) * barArea);
      group.append(svgEl("rect", { x: x, y: y + 4, width: w, height: rowH - 8, rx: 3 }));
      const at = { x: x + w + 6, y: y + 17, class: "bar-time" };
      group.append(svgEl("text", at, seconds(stop - t.start)));
      for (const mark of t.marks || []) {
        // A tick where the step withdrew a call or a handler applied a signal.
        const mx = label + ((mark.at - first) / span) * barArea;
        const tick = svgEl("rect", {
          x: mx - 1,
          y: y + 1,
          width: 3,
          height: rowH - 2,
          class: "mark mark-" + mark.kind,
        });
        tick.append(svgEl("title", {}, mark.what));
        group.append(tick);
      }
      if (beat) {
        const beatX = label + ((beat.timestamp - first) / span) * barArea;
        group.append(heartbeatMark(beat, Math.min(beatX, x + w), y + rowH / 2));
      }
    } else {
      const text = phase === "done" ? "" : "not started";
      group.append(svgEl("text", { x: label, y: y + 17, class: "bar-time" }, text));
    }
    group.append(svgEl("title", {}, name + ": " + phase));
    chart.append(group);
  });
  return chart;
}

/** A heartbeat on a step's bar: a mark at its time, its activity and details in its title. */
function heartbeatMark(beat, x, y) {
  const mark = svgEl("circle", { cx: x, cy: y, r: 5, class: "beat" });
  const none = beat.details === null || beat.details === undefined;
  const details = none ? "" : " " + JSON.stringify(beat.details);
  const when = new Date(beat.timestamp * 1000).toLocaleTimeString();
  const text =
    "heartbeat of " + beat.activity + " (attempt " + beat.attempt + ") at " + when + details;
  mark.append(svgEl("title", {}, text.length > 300 ? text.slice(0, 300) + "…" : text));
  return mark;
}
