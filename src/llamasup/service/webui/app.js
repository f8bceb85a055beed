// llamasup dashboard. Plain ES2020, no dependencies, no build step.
//
// Security notes (see README "Web dashboard"): the page never holds an API key. It logs in
// once (POST /ui/session), gets an HttpOnly SameSite=Strict cookie it cannot read and an
// anti-CSRF token that lives only in this module's memory, and sends that token with every
// call that changes something. All text from the server goes into the page as text nodes
// (textContent), never as HTML; the Content-Security-Policy requires Trusted Types for any
// HTML sink, so a stray innerHTML would fail instead of running.

const LOG_LINES = 2000;
const CSRF_HEADER = "X-Llamasup-CSRF";

const $ = (id) => document.getElementById(id);

const state = {
  session: null, // {authenticated, scope, key, keys, csrf}
  status: null,
  events: null,
  view: "overview",
  logAbort: null,
  logLines: [],
  chatAbort: null,
  profiles: null, // {files: {name: text}, ...} as on disk
  edits: {}, // name -> edited text
  diffed: null, // JSON of the file set whose dry run is shown, when it succeeded
  errorsByFile: {}, // name -> [issue]
  renderedPasses: "",
};

// -- small helpers ---------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function formatTime(epoch) {
  if (!epoch) return "–";
  return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
}

function issueText(issue) {
  const where = issue.line === null || issue.line === undefined ? issue.file : `${issue.file}:${issue.line}`;
  const key = issue.path ? ` ${issue.path}:` : "";
  return `${where}:${key} ${issue.message}`;
}

function basename(path) {
  return String(path || "").split("/").pop();
}

function notice(text, kind = "info") {
  const node = $("notice");
  node.textContent = text;
  node.dataset.kind = kind;
}

class ApiError extends Error {
  constructor(status, body) {
    const message = body && body.error ? body.error.message : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
    this.code = body && body.error ? body.error.code : null;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session && state.session.csrf) headers[CSRF_HEADER] = state.session.csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  let data = null;
  const text = await response.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { text };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && path !== "/ui/session") sessionLost(error.message);
    throw error;
  }
  return data;
}

// -- theme -----------------------------------------------------------------------------------

const THEMES = ["auto", "light", "dark"];
const THEME_LABELS = { auto: "◐ Auto", light: "☀ Light", dark: "☾ Dark" };

function applyTheme(theme) {
  const root = document.documentElement;
  if (theme === "auto") delete root.dataset.theme;
  else root.dataset.theme = theme;
  const button = $("theme");
  button.textContent = THEME_LABELS[theme];
  button.setAttribute("aria-label", `Colour theme: ${theme === "auto" ? "automatic" : theme}`);
}

function setupTheme() {
  let theme = "auto";
  try {
    theme = localStorage.getItem("llamasup.theme") || "auto"; // a preference, not a secret
  } catch {
    /* storage off: automatic */
  }
  if (!THEMES.includes(theme)) theme = "auto";
  applyTheme(theme);
  $("theme").addEventListener("click", () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    applyTheme(theme);
    try {
      localStorage.setItem("llamasup.theme", theme);
    } catch {
      /* not kept */
    }
  });
}

// -- session ---------------------------------------------------------------------------------

const isAdmin = () => Boolean(state.session && state.session.scope === "admin");

async function boot() {
  setupTheme();
  setupTabs();
  setupLogin();
  setupOverview();
  setupLogs();
  setupProfiles();
  setupPlayground();
  let session;
  try {
    session = await api("GET", "/ui/session");
  } catch (error) {
    notice(`Cannot reach llamasup: ${error.message}`, "error");
    return;
  }
  if (session.authenticated) {
    startSession(session);
  } else if (!session.keys) {
    await login(null); // no key configured: every route is open, the session carries the token
  } else {
    showLogin();
  }
}

function setupLogin() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("login-key");
    $("login-error").textContent = "";
    try {
      await login(input.value);
      input.value = "";
    } catch (error) {
      $("login-error").textContent = error.message;
      input.focus();
    }
  });
  $("logout").addEventListener("click", async () => {
    try {
      await api("DELETE", "/ui/session");
    } catch {
      /* gone already */
    }
    stopLive();
    state.session = null;
    showLogin();
  });
}

async function login(key) {
  const body = key === null ? {} : { key };
  const session = await api("POST", "/ui/session", body);
  startSession(session);
}

function showLogin(message) {
  stopLive();
  $("tabs").hidden = true;
  $("logout").hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("view-login").hidden = false;
  $("live").textContent = "○ logged out";
  $("live").dataset.state = "lost";
  if (message) $("login-error").textContent = message;
  $("login-key").focus();
}

function sessionLost(message) {
  if (!state.session) return;
  state.session = null;
  if (message) notice(message, "error");
  boot();
}

function startSession(session) {
  state.session = session;
  $("view-login").hidden = true;
  $("tabs").hidden = false;
  $("logout").hidden = !session.keys;
  const admin = isAdmin();
  for (const node of document.querySelectorAll("[data-admin]")) node.hidden = !admin;
  for (const node of document.querySelectorAll("[data-admin-action]")) node.hidden = !admin;
  $("admin-overview").hidden = !admin;
  $("models-overview").hidden = admin;
  if (session.key) notice(`Logged in with key “${session.key}” (${session.scope}).`, "ok");
  showView(state.view === "login" ? "overview" : state.view);
  if (admin) startLive();
  else {
    $("host-line").textContent = location.host;
    $("live").textContent = "● read-only";
    $("live").dataset.state = "live";
    loadModels();
  }
}

// -- tabs ------------------------------------------------------------------------------------

const VIEWS = ["overview", "logs", "profiles", "playground"];

function setupTabs() {
  const tabs = () => VIEWS.map((name) => $(`tab-${name}`)).filter((tab) => !tab.hidden);
  for (const name of VIEWS) {
    const tab = $(`tab-${name}`);
    tab.addEventListener("click", () => showView(name));
    tab.addEventListener("keydown", (event) => {
      const list = tabs();
      const index = list.indexOf(tab);
      let next = null;
      if (event.key === "ArrowRight") next = list[(index + 1) % list.length];
      else if (event.key === "ArrowLeft") next = list[(index - 1 + list.length) % list.length];
      else if (event.key === "Home") next = list[0];
      else if (event.key === "End") next = list[list.length - 1];
      if (next) {
        event.preventDefault();
        showView(next.id.slice(4));
        next.focus();
      }
    });
  }
}

function showView(name) {
  if ($(`tab-${name}`).hidden) name = "overview";
  state.view = name;
  for (const view of VIEWS) {
    const tab = $(`tab-${view}`);
    const selected = view === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`view-${view}`).hidden = !selected;
  }
  if (name === "logs") refreshLogChoices();
  if (name === "profiles" && !state.profiles) loadProfiles();
  if (name === "playground") loadModels();
}

// -- overview: live status from /api/events ---------------------------------------------------

function startLive() {
  stopLive();
  const live = $("live");
  const source = new EventSource("/api/events");
  state.events = source;
  source.addEventListener("open", () => {
    live.textContent = "● live";
    live.dataset.state = "live";
  });
  source.addEventListener("status", (event) => renderStatus(JSON.parse(event.data)));
  source.addEventListener("reload", (event) => {
    const reload = JSON.parse(event.data);
    const errors = reload.errors.length ? ` (${reload.errors.length} errors)` : "";
    notice(`Profiles ${reload.trigger}: ${reload.result}${errors}`, reload.result === "error" ? "error" : "ok");
  });
  source.addEventListener("lagged", () => {
    live.textContent = "● live (caught up)";
  });
  source.addEventListener("error", async () => {
    live.textContent = "○ reconnecting…";
    live.dataset.state = "lost";
    if (source.readyState === EventSource.CLOSED) {
      // refused (a session that ended, a restart): ask again what we are
      try {
        const session = await api("GET", "/ui/session");
        if (!session.authenticated) sessionLost("The session ended; log in again.");
        else setTimeout(() => state.events === source && startLive(), 2000);
      } catch {
        setTimeout(() => state.events === source && startLive(), 2000);
      }
    }
  });
}

function stopLive() {
  if (state.events) state.events.close();
  state.events = null;
}

function setupOverview() {
  $("unload-all").addEventListener("click", () => unload({ all: true }, "all sidecars"));
}

async function unload(target, label) {
  try {
    const result = await api("POST", "/api/unload", target);
    const stopped = result.stopped.map((row) => row.model).join(", ") || "nothing";
    const skipped = result.skipped.length ? `; skipped ${result.skipped.map((r) => `${r.model} (${r.reason})`).join(", ")}` : "";
    notice(`Unload ${label}: stopped ${stopped}${skipped}.`, "ok");
  } catch (error) {
    notice(`Unload ${label} failed: ${error.message}`, "error");
  }
}

function renderStatus(doc) {
  state.status = doc;
  const profiles = doc.profiles;
  $("host-line").textContent = `${doc.listen} · llamasup ${doc.version} · profiles ${profiles.revision}`;
  renderLimits(doc.limits);
  renderReload(profiles);
  renderSidecars(doc.sidecars, doc.limits.memory_budget);
  renderPasses(doc.reconciler.recent, new Map(doc.sidecars.map((row) => [row.key, row.model])));
  if (state.view === "logs") refreshLogChoices();
}

function renderLimits(limits) {
  const max = limits.max_sidecars === null ? "no limit" : `at most ${limits.max_sidecars}`;
  $("limits-running").textContent = `${limits.running} running (${max})`;
  const budget = limits.memory_budget;
  const used = limits.memory_estimated;
  const bar = $("limits-bar");
  if (budget) {
    const share = used / budget;
    bar.hidden = false;
    bar.firstElementChild.style.width = `${Math.min(100, share * 100).toFixed(1)}%`;
    bar.dataset.over = String(share > 1);
    $("limits-memory").textContent = `Memory: ${formatBytes(used)} of ${formatBytes(budget)} budget (${(share * 100).toFixed(0)}%)`;
  } else {
    bar.hidden = true;
    $("limits-memory").textContent = `Memory: ${formatBytes(used)} estimated (no budget)`;
  }
}

function renderReload(profiles) {
  const reload = profiles.last_reload;
  const mark = reload.result === "error" ? "✗" : "✓";
  $("reload-summary").textContent = `${mark} ${formatTime(reload.at)} · ${reload.trigger} · ${reload.result}${reload.revision ? ` · revision ${reload.revision}` : ""}`;
  const errors = $("reload-errors");
  errors.replaceChildren(...reload.errors.map((issue) => el("li", { text: issueText(issue) })));
  for (const warning of profiles.warnings) errors.append(el("li", { class: "warn", text: `warning: ${issueText(warning)}` }));
  if (profiles.auth_error) errors.append(el("li", { text: profiles.auth_error }));
  const restart = $("restart-needed");
  restart.hidden = profiles.restart_needed.length === 0;
  restart.textContent = `⚠ Restart needed for: ${profiles.restart_needed.join(", ")}`;
  const watch = profiles.watch;
  $("watch-line").textContent = watch.state === "lost" ? `⚠ profile watch lost: ${watch.error || "retrying"}` : `Profile watch: ${watch.state}`;
  $("watch-line").className = watch.state === "lost" ? "warn" : "muted";
}

const STATE_MARKS = {
  ready: "●", starting: "◐", draining: "◑", stopping: "◑", stopped: "○", failed: "✗", refused: "✗", waiting: "…",
};

const COLUMNS = ["Model", "Agents", "State", "PID", "Port", "Uptime", "In flight", "Queue", "Memory", ""];

function renderSidecars(rows, budget) {
  const body = $("sidecars").tBodies[0];
  const existing = new Map([...body.rows].map((row) => [row.dataset.key, row]));
  const seen = new Set();
  let previous = null;
  for (const sidecar of rows) {
    seen.add(sidecar.key);
    let row = existing.get(sidecar.key);
    if (!row) row = makeSidecarRow(sidecar);
    updateSidecarRow(row, sidecar, budget);
    const wanted = previous ? previous.nextSibling : body.firstChild;
    if (wanted !== row) body.insertBefore(row, wanted);
    previous = row;
  }
  for (const [key, row] of existing) if (!seen.has(key)) row.remove();
  $("no-sidecars").hidden = rows.length > 0;
}

function makeSidecarRow(sidecar) {
  const row = el("tr", { dataset: { key: sidecar.key } });
  COLUMNS.forEach((label) => row.append(el("td", { dataset: { label } })));
  const [model, , , pid, port, uptime, inflight, queue] = row.cells;
  // one element per cell: on a phone each cell is a two-column grid (label, value)
  model.append(el("div", {}, el("span", { class: "model" }), el("span", { class: "badge", text: "pinned", hidden: true }), el("span", { class: "key mono" })));
  for (const cell of [pid, port, uptime, inflight, queue]) cell.className = "num";
  row.cells[2].append(el("div", {}, el("span", { class: "state" }), el("span", { class: "detail" })));
  row.cells[8].append(el("div", {}, el("div", { class: "bar", "aria-hidden": "true" }, el("span")), el("span", { class: "memtext" })));
  const unloadButton = el("button", {
    type: "button",
    class: "danger",
    "data-admin-action": true,
    onclick: () => unload({ key: sidecar.key }, sidecar.model),
  });
  const logsButton = el("button", {
    type: "button",
    class: "secondary",
    onclick: () => {
      $("logs-sidecar").value = sidecar.key;
      showView("logs");
      startLogs();
    },
  });
  row.cells[9].append(el("div", { class: "row-actions" }, unloadButton, logsButton));
  return row;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function updateSidecarRow(row, s, budget) {
  const [model, agents, stateCell, pid, port, uptime, inflight, queue, memory, actions] = row.cells;
  row.dataset.state = s.state;
  setText(model.querySelector(".model"), s.model);
  model.querySelector(".badge").hidden = !s.pinned;
  setText(model.querySelector(".key"), s.key);
  setText(agents, s.agents.length ? s.agents.join(", ") : "–");
  const mark = stateCell.querySelector(".state");
  mark.dataset.state = s.state;
  setText(mark, `${STATE_MARKS[s.state] || "?"} ${s.state}`);
  const detail = s.progress || s.drain || s.last_error || (s.gave_up ? "gave up: unload to reset" : "");
  setText(stateCell.querySelector(".detail"), detail);
  setText(pid, s.pid === null ? "–" : String(s.pid));
  setText(port, s.port === null ? "–" : String(s.port));
  setText(uptime, formatDuration(s.uptime));
  setText(inflight, String(s.in_flight));
  setText(queue, s.waiting ? `${s.waiting} (oldest ${formatDuration(s.oldest_wait)})` : "0");
  const bar = memory.querySelector(".bar");
  if (budget && s.memory !== null) {
    bar.hidden = false;
    bar.firstElementChild.style.width = `${Math.min(100, (s.memory / budget) * 100).toFixed(1)}%`;
    setText(memory.querySelector(".memtext"), `${formatBytes(s.memory)} of ${formatBytes(budget)}`);
  } else {
    bar.hidden = true;
    setText(memory.querySelector(".memtext"), formatBytes(s.memory));
  }
  const [unloadButton, logsButton] = actions.querySelectorAll("button");
  unloadButton.hidden = !isAdmin() || s.pid === null;
  setText(unloadButton, "Unload");
  unloadButton.setAttribute("aria-label", `Unload ${s.model} (${s.key})`);
  setText(logsButton, "Logs");
  logsButton.setAttribute("aria-label", `Logs of ${s.model} (${s.key})`);
}

function renderPasses(recent, models) {
  const signature = JSON.stringify(recent.map((pass) => pass.started));
  if (signature === state.renderedPasses) return;
  state.renderedPasses = signature;
  const list = $("passes");
  const items = [...recent].reverse().map((pass) => {
    const summary = `${formatTime(pass.started)} · ${pass.duration_ms.toFixed(1)} ms · ${pass.result}${pass.error ? `: ${pass.error}` : ""}`;
    const actions = el(
      "ul",
      { class: "actions" },
      pass.actions.map((action) =>
        el("li", { text: `${action.action} ${action.model || models.get(action.key) || action.key} (${action.reason})${action.detail ? `: ${action.detail}` : ""}` }),
      ),
    );
    return el("li", {}, summary, actions);
  });
  list.replaceChildren(...items);
  if (!items.length) list.append(el("li", { class: "muted", text: "No pass has changed anything yet." }));
}

async function loadModels() {
  let data;
  try {
    data = await api("GET", "/v1/models");
  } catch (error) {
    notice(`Cannot list models: ${error.message}`, "error");
    return;
  }
  const ids = (data.data || []).map((model) => model.id);
  const select = $("chat-model");
  const current = select.value;
  select.replaceChildren(...ids.map((id) => el("option", { value: id, text: id })));
  if (ids.includes(current)) select.value = current;
  const list = $("models");
  list.replaceChildren(
    ...(data.data || []).map((model) => {
      const status = model.status && model.status.value ? ` (${model.status.value})` : "";
      return el("li", { text: `${model.id}${status}` });
    }),
  );
}

// -- logs ------------------------------------------------------------------------------------

function setupLogs() {
  $("logs-sidecar").addEventListener("change", startLogs);
  $("logs-follow").addEventListener("change", startLogs);
  $("logs-clear").addEventListener("click", () => {
    state.logLines = [];
    renderLog();
  });
  $("logs-form").addEventListener("submit", (event) => event.preventDefault());
}

function refreshLogChoices() {
  const select = $("logs-sidecar");
  const rows = state.status ? state.status.sidecars : [];
  const current = select.value;
  const options = rows.map((row) => el("option", { value: row.key, text: `${row.model} · ${row.key} · ${row.state}` }));
  const same = select.options.length === options.length && options.every((opt, i) => select.options[i].value === opt.value && select.options[i].text === opt.text);
  if (!same) {
    select.replaceChildren(...options);
    if (current && rows.some((row) => row.key === current)) select.value = current;
  }
  if (!state.logAbort && select.value) startLogs();
}

function renderLog() {
  const pre = $("log");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  pre.textContent = state.logLines.join("\n");
  pre.dataset.lines = String(state.logLines.length);
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

async function startLogs() {
  if (state.logAbort) state.logAbort.abort();
  const key = $("logs-sidecar").value;
  if (!key) return;
  const follow = $("logs-follow").checked;
  const controller = new AbortController();
  state.logAbort = controller;
  state.logLines = [];
  renderLog();
  const status = $("logs-state");
  status.textContent = follow ? "following…" : "";
  let pending = "";
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    renderLog();
  };
  try {
    const response = await fetch(`/api/logs/${encodeURIComponent(key)}?lines=200${follow ? "&follow=1" : ""}`, {
      credentials: "same-origin",
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = new ApiError(response.status, await response.json().catch(() => null));
      if (response.status === 401) sessionLost(error.message);
      throw error;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop();
      state.logLines.push(...lines);
      if (state.logLines.length > LOG_LINES) state.logLines.splice(0, state.logLines.length - LOG_LINES);
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(flush);
      }
    }
    if (pending) state.logLines.push(pending);
    renderLog();
    status.textContent = follow ? "the log ended (the sidecar stopped)" : `${state.logLines.length} lines`;
  } catch (error) {
    if (error.name !== "AbortError") status.textContent = `log: ${error.message}`;
  } finally {
    if (state.logAbort === controller) state.logAbort = null;
  }
}

// -- profiles: edit, diff (dry run), apply ----------------------------------------------------

function setupProfiles() {
  const text = $("profile-text");
  text.addEventListener("input", () => {
    state.edits[$("profile-file").value] = text.value;
    renderGutter();
    updateApplyButton();
  });
  text.addEventListener("scroll", () => {
    $("gutter").scrollTop = text.scrollTop;
  });
  $("profile-file").addEventListener("change", () => showProfileFile($("profile-file").value));
  $("profile-revert").addEventListener("click", () => {
    if (!state.profiles) return;
    state.edits = { ...state.profiles.files };
    state.errorsByFile = {};
    showProfileFile($("profile-file").value);
    $("profile-errors").replaceChildren();
    $("profile-plan").replaceChildren();
    $("profile-textdiff").hidden = true;
  });
  $("profile-diff").addEventListener("click", () => sendProfiles(true));
  $("profile-apply").addEventListener("click", () => sendProfiles(false));
  $("reload").addEventListener("click", async () => {
    try {
      const result = await api("POST", "/api/reload");
      notice(`Reload: ${result.result}${result.revision ? ` (revision ${result.revision})` : ""}`, "ok");
      await loadProfiles();
    } catch (error) {
      const errors = error.body && error.body.errors ? error.body.errors.map(issueText).join("; ") : "";
      notice(`Reload rejected: ${errors || error.message}`, "error");
    }
  });
}

async function loadProfiles() {
  try {
    state.profiles = await api("GET", "/api/profiles");
  } catch (error) {
    notice(`Cannot read the profiles: ${error.message}`, "error");
    return;
  }
  state.edits = { ...state.profiles.files };
  state.errorsByFile = {};
  const names = Object.keys(state.profiles.files);
  const select = $("profile-file");
  const current = select.value;
  select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
  if (names.includes(current)) select.value = current;
  $("profile-source").textContent = `${state.profiles.source} · revision ${state.profiles.revision}`;
  showProfileFile(select.value);
}

function showProfileFile(name) {
  $("profile-text").value = state.edits[name] ?? "";
  renderGutter();
  updateApplyButton();
}

function renderGutter() {
  const name = $("profile-file").value;
  const count = $("profile-text").value.split("\n").length;
  const errors = new Map();
  for (const issue of state.errorsByFile[name] || []) {
    if (issue.line) errors.set(issue.line, [...(errors.get(issue.line) || []), issue.message]);
  }
  const gutter = $("gutter");
  const lines = [];
  for (let line = 1; line <= count; line += 1) {
    const messages = errors.get(line);
    lines.push(
      messages
        ? el("span", { class: "err", title: messages.join("\n"), dataset: { line: String(line) } }, `✗ ${line}`)
        : el("span", {}, String(line)),
    );
  }
  gutter.replaceChildren(...lines);
  gutter.scrollTop = $("profile-text").scrollTop;
}

function goToLine(name, line) {
  $("profile-file").value = name;
  showProfileFile(name);
  const text = $("profile-text");
  const lines = text.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, part) => sum + part.length + 1, 0);
  const end = start + (lines[line - 1] || "").length;
  text.focus();
  text.setSelectionRange(start, end);
  const lineHeight = parseFloat(getComputedStyle(text).lineHeight) || 18;
  text.scrollTop = Math.max(0, (line - 3) * lineHeight);
}

function editedSet() {
  return JSON.stringify(state.edits);
}

function updateApplyButton() {
  $("profile-apply").disabled = state.diffed === null || state.diffed !== editedSet();
}

async function sendProfiles(dryRun) {
  const files = { ...state.edits };
  const sent = editedSet();
  const errorsList = $("profile-errors");
  const plan = $("profile-plan");
  errorsList.replaceChildren();
  plan.replaceChildren(el("p", { class: "muted", text: dryRun ? "Asking for a dry run…" : "Applying…" }));
  state.errorsByFile = {};
  let result;
  try {
    result = await api("POST", `/api/apply${dryRun ? "?dry_run=1" : ""}`, { files });
  } catch (error) {
    state.diffed = null;
    plan.replaceChildren();
    const issues = (error.body && error.body.errors) || [];
    const names = Object.keys(files);
    for (const issue of issues) {
      const name = names.includes(basename(issue.file)) ? basename(issue.file) : $("profile-file").value;
      (state.errorsByFile[name] = state.errorsByFile[name] || []).push(issue);
      const text = `${name}:${issue.line ?? "?"}: ${issue.path ? `${issue.path}: ` : ""}${issue.message}`;
      errorsList.append(
        el("li", {}, issue.line ? el("button", { type: "button", onclick: () => goToLine(name, issue.line) }, text) : text),
      );
    }
    if (!issues.length) errorsList.append(el("li", { text: error.message }));
    else plan.append(el("p", { class: "error", text: `${error.message}` }));
    renderGutter();
    updateApplyButton();
    return;
  }
  renderGutter();
  renderPlan(result, dryRun);
  renderTextDiff(files);
  if (dryRun) {
    state.diffed = sent;
  } else {
    state.diffed = null;
    notice(`Applied: ${result.result} (revision ${result.revision}).`, "ok");
    await loadProfiles();
  }
  updateApplyButton();
}

function renderPlan(result, dryRun) {
  const plan = $("profile-plan");
  const models = result.models;
  const parts = [];
  const labels = [["changed", "changed (sidecar replaced)"], ["updated", "updated (settings only)"], ["added", "added"], ["removed", "removed"]];
  for (const [field, label] of labels) if (models[field].length) parts.push(el("li", { text: `${label}: ${models[field].join(", ")}` }));
  const heading = dryRun ? (result.changed ? "Dry run: this edit would change the profiles" : "Dry run: no change") : `Applied (${result.result})`;
  const nodes = [el("h4", { text: heading }), el("ul", { class: "changes" }, parts.length ? parts : [el("li", { text: "no model changes" })])];
  for (const warning of result.warnings) nodes.push(el("p", { class: "warn", text: `warning: ${issueText(warning)}` }));
  if (result.restart_needed.length) nodes.push(el("p", { class: "warn", text: `Restart needed for: ${result.restart_needed.join(", ")}` }));
  const actions = result.plan.actions;
  if (actions.length) {
    const head = el("tr", {}, ["Action", "Model", "Reason", "Detail"].map((label) => el("th", { scope: "col", text: label })));
    const rows = actions.map((action) =>
      el("tr", {}, [action.action, action.model || action.key, action.reason, action.detail || ""].map((text) => el("td", { text }))),
    );
    nodes.push(el("table", { class: "plan-table" }, el("caption", { text: dryRun ? "What apply would do" : "What was done" }), el("thead", {}, head), el("tbody", {}, rows)));
  } else {
    nodes.push(el("p", { class: "muted", text: "Plan: nothing to start or stop." }));
  }
  plan.replaceChildren(...nodes);
}

// a line diff (longest common subsequence) of each edited file against the disk
function renderTextDiff(files) {
  const out = $("profile-textdiff");
  const blocks = [];
  for (const [name, text] of Object.entries(files)) {
    const before = (state.profiles.files[name] ?? "").split("\n");
    const after = text.split("\n");
    if (before.join("\n") === after.join("\n")) continue;
    blocks.push(el("strong", { text: `--- ${name} (on disk)\n+++ ${name} (edited)\n` }));
    if (before.length * after.length > 4_000_000) {
      blocks.push(el("span", { text: "(too long to compare line by line)\n" }));
      continue;
    }
    for (const [mark, line] of lineDiff(before, after)) {
      if (mark === " ") continue;
      blocks.push(el("span", { class: mark === "+" ? "add" : "del", text: `${mark} ${line}` }));
    }
  }
  out.replaceChildren(...blocks);
  out.hidden = blocks.length === 0;
}

function lineDiff(a, b) {
  const n = a.length;
  const m = b.length;
  const table = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const result = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      result.push([" ", a[i]]);
      i += 1;
      j += 1;
    } else if (table[i + 1][j] >= table[i][j + 1]) {
      result.push(["-", a[i]]);
      i += 1;
    } else {
      result.push(["+", b[j]]);
      j += 1;
    }
  }
  while (i < n) result.push(["-", a[i++]]);
  while (j < m) result.push(["+", b[j++]]);
  return result;
}

// -- playground --------------------------------------------------------------------------------

function setupPlayground() {
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  $("chat-stop").addEventListener("click", () => state.chatAbort && state.chatAbort.abort());
  $("chat-prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      sendChat();
    }
  });
}

function setStat(id, text) {
  $(id).textContent = text;
}

async function sendChat() {
  if (state.chatAbort) return;
  const model = $("chat-model").value;
  if (!model) {
    notice("No model to talk to.", "error");
    return;
  }
  const messages = [];
  const system = $("chat-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push({ role: "user", content: $("chat-prompt").value });
  const output = $("chat-output");
  const reasoning = $("chat-reasoning");
  output.textContent = "";
  output.dataset.chunks = "0";
  output.dataset.done = "false";
  reasoning.textContent = "";
  reasoning.hidden = true;
  for (const id of ["stat-ttft", "stat-tps", "stat-pps", "stat-tokens"]) setStat(id, "–");
  const controller = new AbortController();
  state.chatAbort = controller;
  $("chat-send").disabled = true;
  $("chat-stop").disabled = false;
  const chatState = $("chat-state");
  chatState.textContent = `Sending to ${model}… (a model that is not loaded yet loads first)`;
  const started = performance.now();
  let firstToken = null;
  let chunks = 0;
  let timings = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      credentials: "same-origin",
      signal: controller.signal,
      headers: {
        "Content-Type": "application/json",
        [CSRF_HEADER]: state.session.csrf,
        "X-Llamasup-Loading-State": "1",
      },
      body: JSON.stringify({
        model,
        messages,
        stream: true,
        stream_options: { include_usage: true }, // the last chunk: usage and llama-server's timings
        max_tokens: Number($("chat-max").value) || 128,
      }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new ApiError(response.status, body);
    }
    chatState.textContent = "Streaming…";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = events.pop();
      for (const block of events) {
        const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
        if (chunk.timings) timings = chunk.timings;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (!delta) continue;
        if (delta.reasoning_content) {
          reasoning.hidden = false;
          reasoning.append(document.createTextNode(delta.reasoning_content));
        }
        if (delta.content) {
          if (firstToken === null) {
            firstToken = performance.now();
            setStat("stat-ttft", `${(firstToken - started).toFixed(0)} ms (measured here)`);
          }
          output.append(document.createTextNode(delta.content));
          chunks += 1;
          output.dataset.chunks = String(chunks);
        }
      }
    }
    const elapsed = (performance.now() - started) / 1000;
    chatState.textContent = `Done in ${elapsed.toFixed(2)} s.`;
    showTimings(timings, firstToken === null ? null : firstToken - started, chunks, elapsed);
  } catch (error) {
    chatState.textContent = error.name === "AbortError" ? "Stopped." : `Failed: ${error.message}`;
  } finally {
    output.dataset.done = "true";
    state.chatAbort = null;
    $("chat-send").disabled = false;
    $("chat-stop").disabled = true;
  }
}

function showTimings(timings, ttftMs, chunks, elapsed) {
  if (timings) {
    // llama-server's own numbers: prompt processing is the server's time to first token
    const ttft = ttftMs === null ? "" : ` · ${ttftMs.toFixed(0)} ms measured here`;
    setStat("stat-ttft", `${timings.prompt_ms.toFixed(timings.prompt_ms < 10 ? 1 : 0)} ms (server)${ttft}`);
    setStat("stat-tps", `${timings.predicted_per_second.toFixed(1)} tokens/s`);
    setStat("stat-pps", `${timings.prompt_per_second.toFixed(1)} tokens/s`);
    setStat("stat-tokens", `${timings.prompt_n} in → ${timings.predicted_n} out`);
  } else if (chunks) {
    setStat("stat-tps", `${(chunks / elapsed).toFixed(1)} chunks/s (no timings from the server)`);
    setStat("stat-tokens", `${chunks} chunks`);
  }
}

boot();
