// Rendering helpers. Every value from the server is put in the page as text (textContent, text
// nodes, attributes), never parsed as HTML.

export function byId(id) {
  return document.getElementById(id);
}

/** An element with `props` (`text`, `class` or attributes) and children (nodes or strings). */
export function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children || []) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function pretty(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "-";
}

export function seconds(value) {
  if (value === null || value === undefined) return "-";
  if (value < 60) return value.toFixed(1) + " s";
  if (value < 3600) return (value / 60).toFixed(1) + " min";
  return (value / 3600).toFixed(1) + " h";
}

export function statusBadge(status) {
  return el("span", { class: "status status-" + String(status).toLowerCase(), text: status });
}

export function parseJson(text, what) {
  try {
    return JSON.parse(text.trim() === "" ? "null" : text);
  } catch (err) {
    throw new Error(what + " is not valid JSON: " + err.message);
  }
}

// -- errors ----------------------------------------------------------------------------------

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** "Type: message" of a recorded error (or of one link of its cause chain). */
function describe(error) {
  return String(error.type || "Error") + ": " + String(error.message === undefined ? "" : error.message);
}

/** The headline of an error: `prefix` + "Type: message" + `where`. */
export function errorLine(prefix, error, where) {
  return el("p", { class: "error-head" }, [
    el("strong", { text: prefix + String(error.type || "Error") + ": " }),
    el("span", { class: "error-message", text: String(error.message || "") + (where || "") }),
  ]);
}

/**
 * What a recorded error says beyond its headline: the chain of exceptions that caused it
 * (`error.cause`: {type, message, cause}, nested) as a list, and its traceback
 * (`error.traceback`) in a block that expands on click. Errors recorded without either give
 * no nodes.
 */
export function errorDetails(error, label) {
  const nodes = [];
  if (!isObject(error)) return nodes;
  const chain = [];
  let link = error.cause;
  while (isObject(link) && chain.length < 20) {
    chain.push(el("li", { text: describe(link) }));
    link = link.cause;
  }
  if (chain.length) {
    nodes.push(
      el("div", { class: "error-cause" }, [
        el("span", { class: "muted", text: (label ? label + ": " : "") + "caused by" }),
        el("ol", { class: "cause-chain" }, chain),
      ])
    );
  }
  if (typeof error.traceback === "string" && error.traceback !== "") {
    nodes.push(
      el("details", { class: "traceback" }, [
        el("summary", { text: (label ? label + " traceback" : "Traceback") }),
        el("pre", { class: "traceback-text", text: error.traceback.replace(/\s+$/, "") }),
      ])
    );
  }
  return nodes;
}

/** A copy of a recorded error without its traceback (shown on its own). */
export function withoutTraceback(error) {
  if (!isObject(error)) return error;
  const rest = Object.assign({}, error);
  delete rest.traceback;
  return rest;
}

/**
 * An event payload, expanded: the JSON (an error's traceback left out of it), then the error's
 * cause chain and traceback as errorDetails() shows them.
 */
export function payloadView(payload) {
  if (!isObject(payload)) return [el("pre", { class: "payload", text: pretty(payload) })];
  const shown = Object.assign({}, payload);
  delete shown.traceback;
  if (isObject(payload.error)) shown.error = withoutTraceback(payload.error);
  return [
    el("pre", { class: "payload", text: pretty(shown) }),
    ...errorDetails(payload.error),
    ...errorDetails({ traceback: payload.traceback }),
  ];
}
