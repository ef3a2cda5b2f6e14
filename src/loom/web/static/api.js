// Talking to the server: JSON requests, event streams, page addresses and request pacing.
//
// Sign-in: the server exchanges a `?token=` in a page address for an HttpOnly cookie and
// redirects to the address without it, so requests here are same-origin with credentials and
// carry no token of their own. A server that does not make that exchange serves a page opened
// with `?token=` as it is: the token is then taken out of the address bar at once and kept in
// memory for this page only. It is sent as `Authorization: Bearer`, added to event stream
// addresses (EventSource cannot send headers), and added to the address of a page opened from
// here only at the moment it is opened, so no link on the page ever holds it.

const pageToken = takeToken();

function takeToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token === null) return null;
  url.searchParams.delete("token");
  window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  return token || null;
}

/** The query of this page's address (without any token). */
export function pageParams() {
  return new URLSearchParams(window.location.search);
}

function withToken(path) {
  if (!pageToken) return path;
  const url = new URL(path, window.location.origin);
  url.searchParams.set("token", pageToken);
  return url.pathname + url.search + url.hash;
}

/** Open a page of this dashboard. */
export function navigate(path) {
  window.location.assign(withToken(path));
}

// A link click carries the in-memory token along (see above); with the cookie it is a plain link.
document.addEventListener("click", function (event) {
  if (!pageToken || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (!link || link.origin !== window.location.origin || link.target) return;
  event.preventDefault();
  navigate(link.pathname + link.search + link.hash);
});

// -- addresses -------------------------------------------------------------------------------

/** A workflow id as one path segment: ids may hold "/", "?", "#", "%", spaces, any unicode. */
function segment(workflowId) {
  return encodeURIComponent(String(workflowId));
}

/** The dashboard page of one workflow. */
export function workflowHref(workflowId) {
  return "/workflows/" + segment(workflowId);
}

/** The API address of one workflow, or of one of its sub-resources ("/events", "/signal"...). */
export function workflowApi(workflowId, suffix) {
  return "/api/workflows/" + segment(workflowId) + (suffix || "");
}

/** The workflow id a /workflows/<id> page address names. */
export function workflowIdOfPage() {
  return decodeURIComponent(window.location.pathname.slice("/workflows/".length));
}

// -- requests --------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/**
 * One JSON request. `json` is the body of a POST (always sent as application/json, `{}` when
 * not given); `signal` aborts it. Rejects with an ApiError carrying the server's message.
 */
export async function api(path, options) {
  const opts = options || {};
  const method = opts.method || "GET";
  const headers = { Accept: "application/json" };
  if (pageToken) headers.Authorization = "Bearer " + pageToken;
  const init = {
    method: method,
    headers: headers,
    credentials: "same-origin",
    cache: "no-store",
    signal: opts.signal,
  };
  if (method !== "GET" && method !== "HEAD") {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.json === undefined ? {} : opts.json);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : null;
    throw new ApiError(message || "HTTP " + response.status, response.status);
  }
  return data;
}

/**
 * Every event of a workflow, oldest first, page by page (`after_seq`) until a page is empty or
 * the server says there is no more.
 */
export async function allEvents(workflowId, signal) {
  const events = [];
  let after = 0;
  for (;;) {
    const query = after ? "?after_seq=" + after : "";
    const page = await api(workflowApi(workflowId, "/events") + query, { signal: signal });
    const found = page.events || [];
    events.push(...found);
    if (!found.length || page.has_more === false) return events;
    after = found[found.length - 1].seq;
  }
}

/**
 * Requests for one purpose (the list, the stats, one workflow...) where only the newest answer
 * counts: a new call aborts the one in flight, and an answer is handed back only if no newer
 * call was made since. `run(request)` calls `request(signal)` and resolves to `{ value }`, or to
 * null when the answer is stale (an error of a stale call is dropped too).
 */
export function newestOnly() {
  let newest = 0;
  let controller = null;
  return async function run(request) {
    newest += 1;
    const mine = newest;
    if (controller) controller.abort();
    controller = new AbortController();
    try {
      const value = await request(controller.signal);
      return mine === newest ? { value: value } : null;
    } catch (err) {
      if (mine !== newest || (err && err.name === "AbortError")) return null;
      throw err;
    } finally {
      if (mine === newest) controller = null;
    }
  };
}

// -- pacing ----------------------------------------------------------------------------------

/** `fn` once, `ms` after the last of a burst of calls. */
export function debounce(fn, ms) {
  let timer = null;
  return function () {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(function () {
      timer = null;
      fn();
    }, ms);
  };
}

/** `fn` at once, then at most once every `ms` while calls keep coming (the last one included). */
export function throttle(fn, ms) {
  let timer = null;
  let again = false;
  function fire() {
    again = false;
    fn();
    timer = setTimeout(function () {
      timer = null;
      if (again) fire();
    }, ms);
  }
  return function () {
    if (timer === null) fire();
    else again = true;
  };
}

// -- event streams ---------------------------------------------------------------------------

/**
 * Follow a server-sent event stream; `onMessage` gets each message's parsed data. The status
 * element `#live` says whether the stream is connected (the browser reconnects by itself,
 * resuming after the last message id).
 */
export function follow(path, eventName, onMessage) {
  const live = document.getElementById("live");
  const source = new EventSource(withToken(path));
  source.onopen = function () {
    live.textContent = "live";
    live.className = "live on";
  };
  source.onerror = function () {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
  source.addEventListener(eventName, function (message) {
    onMessage(JSON.parse(message.data));
  });
  return source;
}
