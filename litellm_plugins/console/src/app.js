// The litellm-plugins web console: one page, talking only to the public /plugins/* API.
//
// Security rules this file keeps (docs/console.md):
//  * the key lives in sessionStorage only and leaves the page only as `Authorization: Bearer` on
//    same-origin fetches (never in a URL, a cookie or localStorage); "Sign out" forgets it;
//  * every string that came from the API is put in the page as text (`h()` appends text nodes,
//    there is no innerHTML anywhere), so a model name like `<img onerror=…>` shows as those characters;
//  * no inline script or style (the page is served with `script-src 'self'; style-src 'self'`);
//    bar lengths use <meter>, never a style attribute.
import {
  ArcElement, BarController, BarElement, CategoryScale, Chart, DoughnutController, Legend, LinearScale,
  LineController, LineElement, PointElement, Tooltip,
} from "chart.js";

Chart.register(ArcElement, BarController, BarElement, CategoryScale, DoughnutController, Legend, LinearScale,
  LineController, LineElement, PointElement, Tooltip);
Chart.defaults.animation = false; // charts redraw on every filter change; tests read them at once

const KEY = "litellm-plugins.console.key";
const PAGE = 20;
const RANGES = { day: [1, "hour"], week: [7, "day"], month: [30, "day"], quarter: [91, "week"], year: [365, "month"] };
const COLORS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#9ca3af"];

// ---- DOM: text only ------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value" || k === "checked" || k === "disabled") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c)); // a string becomes a text node, never markup
  }
  return el;
}
const clear = (el, ...children) => { el.replaceChildren(); for (const c of children.flat()) if (c) el.append(c); return el; };
const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const fmtNum = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString());
const fmtCredits = (s) => (s === null || s === undefined ? "—" : trimDec(s));
function trimDec(s) { // "12.340000" -> "12.34"; exact, on the string
  const str = String(s);
  return str.includes(".") ? str.replace(/0+$/, "").replace(/\.$/, "") : str;
}
// credits or "unlimited" (allowances, buckets)
const fmtAmount = (s) => (s === "unlimited" ? "unlimited" : fmtCredits(s));
// "of 50 per month" / "unlimited per month"
const allowanceText = (a) => `${a.amount === "unlimited" ? "unlimited" : `of ${fmtCredits(a.amount)}`} per ${a.period}`;
// the balance's spend caps, shortest period first: [["day", {cap, source, spent, resets_at}], ...]
const capEntries = (bal) => ["day", "week", "month"].filter((k) => bal?.caps?.[k]).map((k) => [k, bal.caps[k]]);
const capText = (kind, c) => `${kind} cap ${fmtCredits(c.cap)} · ${fmtCredits(c.spent)} spent`;
// exact credit arithmetic on the API's strings (1 credit = 10^6 units), never through floats
const UNIT = BigInt(1000000);
function toUnits(s) {
  const m = /^(-?)(\d+)(?:\.(\d{1,6}))?$/.exec(String(s));
  if (!m) return null;
  const u = BigInt(m[2]) * UNIT + BigInt((m[3] || "").padEnd(6, "0"));
  return m[1] ? -u : u;
}
function fromUnits(u) {
  const a = u < 0 ? -u : u;
  return `${u < 0 ? "-" : ""}${a / UNIT}.${String(a % UNIT).padStart(6, "0")}`;
}
// what a cap still lets the account spend this period (cap − spent, not below 0; in-flight holds not counted)
function capLeft(c) {
  const cap = toUnits(c.cap);
  const spent = toUnits(c.spent);
  if (cap === null || spent === null) return null;
  return fromUnits(cap > spent ? cap - spent : BigInt(0));
}
function pct(part, whole) { return whole ? `${((100 * part) / whole).toFixed(1)}%` : "—"; }
function note(text, kind = "info") { return h("p", { class: `note ${kind}`, role: kind === "error" ? "alert" : "status" }, text); }

// ---- API -----------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
async function request(path, { method = "GET", body, params, raw = false } = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path + query(params), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store", redirect: "error",
  });
  if (res.status === 401) { signOut("Your key was not accepted (401). Sign in again."); throw new ApiError("unauthorized", 401); }
  if (raw && res.ok) return res;
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = data && data.error;
    const message = (err && (err.message || err)) || (data && data.detail && (data.detail.error?.message || data.detail)) || res.statusText;
    throw new ApiError(typeof message === "string" ? message : JSON.stringify(message), res.status);
  }
  return data;
}
const api = {
  get: (path, params) => request(path, { params }),
  send: (method, path, body) => request(path, { method, body }),
};

// ---- shell ---------------------------------------------------------------------------------
const root = document.getElementById("app");
let me = null;
const charts = new Set();

function signOut(message) {
  sessionStorage.removeItem(KEY);
  me = null;
  for (const c of charts) c.destroy();
  charts.clear();
  renderSignIn(message);
}

function renderSignIn(message) {
  const input = h("input", { type: "password", id: "signin-key", name: "key", autocomplete: "off", spellcheck: "false",
    placeholder: "sk-…", "aria-label": "LiteLLM virtual key or master key", required: true });
  const status = h("div", { id: "signin-status" }, message ? note(message, "error") : null);
  const form = h("form", { id: "signin", class: "card signin", onsubmit: async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    input.value = "";
    clear(status, note("Signing in…"));
    try { await start(); } catch (e) { if (e.status !== 401) clear(status, note(e.message, "error")); }
  } },
  h("h1", null, "litellm-plugins console"),
  h("p", null, "Sign in with your LiteLLM virtual key (or the master key). It is kept in this tab only and forgotten when you sign out or close the tab."),
  h("label", { for: "signin-key" }, "Key"), input,
  h("button", { type: "submit", id: "signin-submit" }, "Sign in"), status);
  clear(root, form);
  input.focus();
}

const TABS = [
  { id: "usage", label: "Usage", render: (el) => renderUsage(el, false) },
  { id: "byok", label: "My provider keys", render: renderByok },
  { id: "levels", label: "Power levels", render: renderLevels },
  { id: "accounts", label: "Accounts", admin: true, render: renderAccounts },
  { id: "all-usage", label: "All usage", admin: true, render: (el) => renderUsage(el, true) },
  { id: "health", label: "Provider health", admin: true, render: renderHealth },
];

async function start() {
  me = await api.get("/plugins/whoami");
  const main = h("main", { id: "main" });
  const nav = h("nav", { "aria-label": "Screens" });
  const tabs = TABS.filter((t) => !t.admin || me.is_admin);
  const show = (tab) => {
    for (const c of charts) c.destroy();
    charts.clear();
    for (const b of nav.querySelectorAll("button")) b.setAttribute("aria-current", b.dataset.tab === tab.id ? "page" : "false");
    clear(main);
    tab.render(main);
  };
  for (const t of tabs) nav.append(h("button", { type: "button", "data-tab": t.id, id: `tab-${t.id}`, onclick: () => show(t) }, t.label));
  const who = h("div", { class: "who", id: "who" },
    h("span", { id: "who-account" }, me.account || "(no account)"),
    me.tier ? h("span", { class: "badge" }, `tier ${me.tier}`) : null,
    me.is_admin ? h("span", { class: "badge admin" }, "admin") : null,
    h("button", { type: "button", id: "signout", onclick: () => signOut() }, "Sign out"));
  clear(root, h("header", null, h("strong", null, "litellm-plugins"), nav, who), main);
  show(tabs[0]);
}

// ---- charts --------------------------------------------------------------------------------
function chartPanel(id, title) {
  const canvas = h("canvas", { id: `chart-${id}`, "aria-label": title, role: "img" });
  const state = h("p", { class: "chart-state", id: `chart-${id}-state` }, "Loading…");
  const panel = h("section", { class: "card chart", "data-state": "loading", id: `panel-${id}` },
    h("h3", null, title), h("div", { class: "canvas-box" }, canvas), state);
  return {
    panel,
    loading() { panel.dataset.state = "loading"; state.textContent = "Loading…"; },
    error(msg) { panel.dataset.state = "error"; state.textContent = `Could not load: ${msg}`; },
    draw(config, empty, emptyText) {
      for (const c of charts) if (c.canvas === canvas) { c.destroy(); charts.delete(c); }
      if (empty) { panel.dataset.state = "empty"; state.textContent = emptyText; return; }
      panel.dataset.state = "ready";
      state.textContent = "";
      charts.add(new Chart(canvas, { ...config, options: { responsive: true, maintainAspectRatio: false, ...(config.options || {}) } }));
    },
  };
}
const label = (iso, bucket) => {
  const d = new Date(iso);
  if (bucket === "hour") return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (bucket === "month") return d.toLocaleDateString([], { year: "numeric", month: "short" });
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
};

// Every bucket of the range, zero-filled, so a quiet day is a 0 on the line and not a missing point.
// Starts match Postgres' date_trunc(bucket, created_at, 'UTC') (weeks start on Monday).
function bucketStarts(fromIso, bucket) {
  const d = new Date(fromIso);
  d.setUTCMinutes(0, 0, 0);
  if (bucket !== "hour") d.setUTCHours(0);
  if (bucket === "week") d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  if (bucket === "month") d.setUTCDate(1);
  const out = [];
  for (let t = d; t.getTime() <= Date.now() && out.length < 1000;) {
    out.push(t.toISOString());
    t = new Date(t);
    if (bucket === "hour") t.setUTCHours(t.getUTCHours() + 1);
    else if (bucket === "day") t.setUTCDate(t.getUTCDate() + 1);
    else if (bucket === "week") t.setUTCDate(t.getUTCDate() + 7);
    else t.setUTCMonth(t.getUTCMonth() + 1);
  }
  return out;
}
function filledSeries(series, fromIso, bucket) {
  const byTime = new Map(series.map((p) => [new Date(p.t).toISOString(), p]));
  const starts = bucketStarts(fromIso, bucket);
  for (const k of byTime.keys()) if (!starts.includes(k)) starts.push(k);
  starts.sort();
  return starts.map((t) => byTime.get(t) || { t, requests: 0, succeeded: 0, p50_latency_ms: null });
}

// ---- usage (user's own, or all accounts for an admin) ---------------------------------------
function renderUsage(main, all) {
  const st = { range: "month", offset: 0, filters: { provider: "", model: "", power_level: "", byok: "", status: "", account: "" } };
  const seen = { provider: new Set(), model: new Set(), power_level: new Set() };
  const selects = {};
  const toolbar = h("div", { class: "toolbar", id: "usage-toolbar" });
  const rangeBox = h("div", { class: "segmented", role: "group", "aria-label": "Time range" });
  for (const r of Object.keys(RANGES)) {
    rangeBox.append(h("button", { type: "button", "data-range": r, "aria-pressed": String(r === st.range),
      onclick: () => { st.range = r; st.offset = 0; for (const b of rangeBox.children) b.setAttribute("aria-pressed", String(b.dataset.range === r)); load(); } }, r));
  }
  toolbar.append(rangeBox);
  const mkSelect = (name, text, fixed) => {
    const sel = h("select", { name, id: `filter-${name}`, "aria-label": text, onchange: () => { st.filters[name] = sel.value; st.offset = 0; load(); } },
      h("option", { value: "" }, `${text}: any`), (fixed || []).map(([v, t]) => h("option", { value: v }, t)));
    selects[name] = sel;
    toolbar.append(sel);
  };
  mkSelect("provider", "Provider");
  mkSelect("model", "Model");
  mkSelect("power_level", "Level");
  mkSelect("byok", "BYOK", [["true", "BYOK only"], ["false", "platform keys only"]]);
  mkSelect("status", "Status", [["success", "success"], ["failure", "failure"], ["rejected", "rejected"]]);
  if (all) {
    const acct = h("input", { type: "search", id: "filter-account", placeholder: "account (all)", "aria-label": "Account",
      onchange: () => { st.filters.account = acct.value.trim(); st.offset = 0; load(); } });
    toolbar.append(acct);
  }
  toolbar.append(h("button", { type: "button", id: "usage-refresh", onclick: () => load() }, "Refresh"));

  const cards = h("div", { class: "cards", id: "cards" });
  const cRequests = chartPanel("requests", "Requests over time");
  const cLevel = chartPanel("level", "Credits by power level");
  const cProvider = chartPanel("provider", "Requests by provider");
  const cLatency = chartPanel("latency", "Latency p50 over time (ms)");
  const grid = h("div", { class: "charts" }, cRequests.panel, cLevel.panel, cProvider.panel, cLatency.panel);
  const tops = all ? h("div", { class: "charts", id: "tops" }) : null;
  const tableBox = h("div", { id: "requests-table" });
  const pager = h("div", { class: "pager" });
  const exportStatus = h("span", { id: "export-status" });
  const exportBtn = (fmt) => h("button", { type: "button", id: `export-${fmt}`, onclick: () => exportRows(fmt) }, `Export ${fmt.toUpperCase()}`);
  clear(main, h("h2", null, all ? "Usage across accounts" : "My usage"), toolbar, cards, grid, tops,
    h("section", { class: "card" }, h("div", { class: "row" }, h("h3", null, "Recent requests"), h("span", { class: "spacer" }),
      exportBtn("csv"), exportBtn("json"), exportStatus), tableBox, pager));

  const params = () => {
    const [days] = RANGES[st.range];
    const f = { ...st.filters, from: new Date(Date.now() - days * 86400e3).toISOString() };
    if (!all) delete f.account;
    return f;
  };

  async function exportRows(fmt) {
    exportStatus.textContent = "Exporting…";
    try {
      const res = await request("/plugins/usage/export", { params: { ...params(), format: fmt }, raw: true });
      const blob = await res.blob();
      const a = h("a", { href: URL.createObjectURL(blob), download: `usage-${st.range}.${fmt}` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      exportStatus.textContent = `Exported (${fmtNum(blob.size)} bytes).`;
    } catch (e) { exportStatus.textContent = `Export failed: ${e.message}`; }
  }

  function card(id, title, value, sub) {
    const subs = (Array.isArray(sub) ? sub : [sub]).filter(Boolean);
    return h("div", { class: "card stat", id: `card-${id}` }, h("div", { class: "stat-title" }, title),
      h("div", { class: "stat-value", "data-value": "" }, value), subs.map((s) => h("div", { class: "stat-sub" }, s)));
  }

  function fillOptions(name, keys) {
    for (const k of keys) if (k !== null && k !== undefined) seen[name].add(k);
    const sel = selects[name];
    const have = new Set([...sel.options].map((o) => o.value));
    for (const k of [...seen[name]].sort()) if (!have.has(k)) sel.append(h("option", { value: k }, k));
    sel.value = st.filters[name];
  }

  async function loadTable() {
    clear(tableBox, note("Loading requests…"));
    try {
      const data = await api.get("/plugins/usage", { ...params(), limit: PAGE, offset: st.offset });
      const rows = data.rows;
      if (!rows.length) clear(tableBox, note(st.offset ? "No more requests." : "No requests match these filters in this range."));
      else {
        const head = ["Time", ...(all ? ["Account"] : []), "Requested model", "Level", "Group served", "Provider", "Tokens in/out", "Credits", "Latency", "Status", "BYOK"];
        clear(tableBox, h("table", { class: "data" }, h("thead", null, h("tr", null, head.map((t) => h("th", null, t)))),
          h("tbody", null, rows.map((r) => h("tr", { "data-id": r.id },
            h("td", { class: "time" }, fmtTime(r.created_at)), all ? h("td", { class: "clip", title: r.account || "" }, r.account || "—") : null,
            h("td", { class: "model" }, r.requested_model || "—"), h("td", null, r.power_level || "—"),
            h("td", null, r.model_group || "—"), h("td", null, r.provider || "—"),
            h("td", { class: "num" }, `${fmtNum(r.prompt_tokens)} / ${fmtNum(r.completion_tokens)}`),
            h("td", { class: "num" }, fmtCredits(r.credits_charged)),
            h("td", { class: "num" }, r.latency_ms === null ? "—" : `${r.latency_ms} ms`),
            h("td", null, h("span", { class: `badge s-${r.status}` }, r.status), r.error_type ? ` ${r.error_type}` : ""),
            h("td", null, r.byok ? "yes" : "no"))))));
      }
      clear(pager,
        h("button", { type: "button", id: "page-prev", disabled: st.offset === 0, onclick: () => { st.offset = Math.max(0, st.offset - PAGE); loadTable(); } }, "‹ Newer"),
        h("span", { id: "page-label" }, `Page ${st.offset / PAGE + 1}`),
        h("button", { type: "button", id: "page-next", disabled: rows.length < PAGE, onclick: () => { st.offset += PAGE; loadTable(); } }, "Older ›"));
    } catch (e) { clear(tableBox, note(e.message, "error")); }
  }

  async function load() {
    for (const c of [cRequests, cLevel, cProvider, cLatency]) c.loading();
    cards.setAttribute("aria-busy", "true");
    const [, bucket] = RANGES[st.range];
    loadTable();
    let dash;
    let balance = null;
    try {
      [dash, balance] = await Promise.all([
        api.get("/plugins/usage/dashboard", { ...params(), bucket }),
        all ? null : api.get("/plugins/credits/balance").catch(() => null),
      ]);
    } catch (e) {
      for (const c of [cRequests, cLevel, cProvider, cLatency]) c.error(e.message);
      clear(cards, note(e.message, "error"));
      return;
    }
    const t = dash.totals;
    // tier allowance and spend caps (docs/credits.md, "Allowances and buckets"); absent before the account opens
    const allowance = balance?.allowance;
    const caps = capEntries(balance);
    clear(cards,
      balance ? card("available", "Available credits", fmtCredits(balance.available),
        `balance ${fmtCredits(balance.balance)} · held ${fmtCredits(balance.held)} · leased ${fmtCredits(balance.leased)}`) : null,
      allowance ? card("allowance", "Allowance", fmtAmount(allowance.left),
        `${allowanceText(allowance)} · resets ${fmtTime(allowance.resets_at)}`) : null,
      caps.length ? card("caps", `Left under ${caps[0][0]} cap`, fmtCredits(capLeft(caps[0][1])),
        caps.map(([kind, c]) => `${capText(kind, c)} · resets ${fmtTime(c.resets_at)}`)) : null,
      card("spent", `Spent this ${st.range}`, fmtCredits(t.credits_charged), `$${t.cost_usd} provider cost`),
      card("requests", "Requests", fmtNum(t.requests), `${fmtNum(t.succeeded)} succeeded`),
      card("avg", "Avg credits / request", fmtCredits(t.avg_credits_per_request)),
      card("byok", "BYOK share", pct(t.byok_requests, t.requests), `${fmtNum(t.byok_requests)} on ${all ? "the callers'" : "your"} own keys`));
    cards.removeAttribute("aria-busy");
    fillOptions("provider", dash.by_provider.map((r) => r.key));
    fillOptions("model", dash.by_model.map((r) => r.key));
    fillOptions("power_level", dash.by_level.map((r) => r.key));
    const none = `No requests in the last ${st.range} with these filters.`;
    const series = filledSeries(dash.series, dash.from, bucket);
    const labels = series.map((p) => label(p.t, bucket));
    cRequests.draw({ type: "line", data: { labels, datasets: [
      { label: "requests", data: series.map((p) => p.requests), borderColor: COLORS[0], backgroundColor: COLORS[0], pointRadius: 2 },
      { label: "succeeded", data: series.map((p) => p.succeeded), borderColor: COLORS[1], backgroundColor: COLORS[1], pointRadius: 2 }] },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } } }, !dash.series.length, none);
    cLevel.draw({ type: "bar", data: { labels: dash.by_level.map((r) => r.key ?? "(none)"),
      datasets: [{ label: "credits", data: dash.by_level.map((r) => Number(r.credits_charged)), backgroundColor: COLORS }] },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } } }, !dash.by_level.length, none);
    cProvider.draw({ type: "doughnut", data: { labels: dash.by_provider.map((r) => r.key ?? "(none)"),
      datasets: [{ data: dash.by_provider.map((r) => r.requests), backgroundColor: COLORS }] } }, !dash.by_provider.length, none);
    const lat = series.filter((p) => p.p50_latency_ms !== null);
    cLatency.draw({ type: "line", data: { labels,
      datasets: [{ label: "p50 ms", data: series.map((p) => p.p50_latency_ms), borderColor: COLORS[2], backgroundColor: COLORS[2], spanGaps: true, pointRadius: 4 }] },
      options: { scales: { y: { beginAtZero: true } } } }, !lat.length, none);
    if (tops) {
      const topTable = (id, title, rows) => h("section", { class: "card", id }, h("h3", null, title), rows.length
        ? h("table", { class: "data" }, h("thead", null, h("tr", null, h("th", null, "Name"), h("th", null, "Requests"), h("th", null, "Credits"))),
          h("tbody", null, rows.map((r) => h("tr", null, h("td", { class: "clip", title: r.key ?? "(none)" }, r.key ?? "(none)"), h("td", { class: "num" }, fmtNum(r.requests)),
            h("td", { class: "num" }, fmtCredits(r.credits_charged))))))
        : note("No requests in this range."));
      clear(tops, dash.top_accounts ? topTable("top-accounts", "Top accounts by credits", dash.top_accounts) : null,
        topTable("top-models", "Top model groups by credits", dash.by_model.slice(0, 10)));
    }
  }
  load();
}

// ---- BYOK ----------------------------------------------------------------------------------
function renderByok(main) {
  const list = h("div", { id: "byok-list" }, note("Loading keys…"));
  const audit = h("div", { id: "byok-audit" });
  const wizard = h("section", { class: "card", id: "byok-wizard" });
  clear(main, h("h2", null, "My provider keys (BYOK)"),
    h("p", null, "Calls to a provider you have a key for use your key and cost no credits. Keys are encrypted at rest and only the last 4 characters are ever shown."),
    wizard, h("section", { class: "card" }, h("h3", null, "Saved keys"), list), h("section", { class: "card" }, h("h3", null, "Audit trail"), audit));

  let saved = new Map(); // provider -> the saved key's public view, from the last refresh

  async function refresh() {
    try {
      const [keys, trail] = await Promise.all([api.get("/plugins/byok/keys"), api.get("/plugins/byok/audit", { limit: 50 })]);
      saved = new Map(keys.data.map((k) => [k.provider, k]));
      if (!keys.data.length) clear(list, note("You have no saved keys yet."));
      else clear(list, h("table", { class: "data" }, h("thead", null, h("tr", null, ["Provider", "Key", "Policy", "Added", "Last used", "Status", ""].map((t) => h("th", null, t)))),
        h("tbody", null, keys.data.map((k) => keyRow(k)))));
      clear(audit, trail.data.length ? h("table", { class: "data" }, h("thead", null, h("tr", null, ["When", "Provider", "Action", "By", "Detail"].map((t) => h("th", null, t)))),
        h("tbody", null, trail.data.map((a) => h("tr", null, h("td", null, fmtTime(a.at)), h("td", null, a.provider), h("td", null, a.action),
          h("td", null, a.actor || "—"), h("td", { class: "mono" }, a.detail ? JSON.stringify(a.detail) : "")))))
        : note("No key operations yet."));
    } catch (e) { clear(list, note(e.message, "error")); }
  }

  function keyRow(k) {
    const actions = h("td", { class: "actions" });
    const status = h("span", { class: "row-status" });
    const normal = () => clear(actions,
      h("button", { type: "button", "data-action": "test", onclick: async () => {
        status.textContent = "Testing…";
        try { const r = await api.send("POST", `/plugins/byok/keys/${encodeURIComponent(k.provider)}/test`); status.textContent = r.ok ? "✓ accepted" : `✗ ${r.message}`; refresh(); } catch (e) { status.textContent = e.message; }
      } }, "Test"),
      h("button", { type: "button", "data-action": "replace", onclick: () => { drawWizard(k.provider); wizard.scrollIntoView(); } }, "Replace"),
      h("button", { type: "button", "data-action": "delete", class: "danger", onclick: () => clear(actions,
        h("span", null, `Delete your ${k.provider} key?`),
        h("button", { type: "button", "data-action": "confirm-delete", class: "danger", onclick: async () => {
          try { await api.send("DELETE", `/plugins/byok/keys/${encodeURIComponent(k.provider)}`); refresh(); } catch (e) { status.textContent = e.message; }
        } }, "Yes, delete"),
        h("button", { type: "button", "data-action": "cancel", onclick: normal }, "Cancel")) }, "Delete"), status);
    normal();
    // status: what the provider said at the last test (the wizard's check before saving is not kept)
    const [state, label] = !k.last_tested_at ? ["untested", "not tested yet"]
      : k.last_test_ok ? ["ok", `working (tested ${fmtTime(k.last_tested_at)})`] : ["failed", `rejected by the provider (tested ${fmtTime(k.last_tested_at)})`];
    return h("tr", { "data-provider": k.provider }, h("td", null, k.provider), h("td", { class: "mono key-mask" }, k.key),
      h("td", null, k.policy), h("td", null, fmtTime(k.created_at)), h("td", { class: "last-used" }, k.last_used_at ? fmtTime(k.last_used_at) : "never"),
      h("td", { class: "key-status" }, h("span", { class: `badge k-${state}` }, label)), actions);
  }

  async function drawWizard(preset) {
    let providers = [];
    try { providers = (await api.get("/plugins/byok/providers")).providers; } catch (e) { clear(wizard, note(e.message, "error")); return; }
    const w = { provider: preset || providers[0] || "", tested: null };
    const provider = h("select", { id: "wiz-provider", "aria-label": "Provider", onchange: () => { w.provider = provider.value; w.tested = null; result.textContent = ""; } },
      providers.map((p) => h("option", { value: p }, p)));
    provider.value = w.provider;
    const key = h("input", { type: "password", id: "wiz-key", autocomplete: "off", spellcheck: "false", placeholder: "paste the provider's API key",
      "aria-label": "Provider API key", oninput: () => { w.tested = null; result.textContent = ""; } });
    const result = h("span", { id: "wiz-test-result", role: "status" });
    const policy = (v, text) => h("label", { class: "radio" }, h("input", { type: "radio", name: "wiz-policy", value: v, checked: v === "prefer" }), text);
    const saveStatus = h("div", { id: "wiz-save-status" });
    clear(wizard, h("h3", null, preset ? `Replace your ${preset} key` : "Add a key"),
      h("ol", { class: "steps" },
        h("li", null, h("label", { for: "wiz-provider" }, "Provider"), provider),
        h("li", null, h("label", { for: "wiz-key" }, "API key"), key),
        h("li", null, h("button", { type: "button", id: "wiz-test", onclick: async () => {
          result.textContent = "Testing…";
          try { const r = await api.send("POST", "/plugins/byok/check", { provider: provider.value, key: key.value }); w.tested = r.ok; result.textContent = r.ok ? "✓ the provider accepted the key" : `✗ ${r.message} (status ${r.status})`; } catch (e) { w.tested = false; result.textContent = `✗ ${e.message}`; }
        } }, "Test connection"), result),
        h("li", null, h("fieldset", null, h("legend", null, "Policy"), policy("prefer", "prefer — use my key, fall back to the platform's"),
          policy("only", "only — never use the platform's key for this provider"))),
        h("li", null, h("button", { type: "button", id: "wiz-save", class: "primary", onclick: () => {
          const old = saved.get(provider.value);
          if (!old) { save(); return; }
          // replacing a saved key asks first, like delete
          clear(saveStatus, h("div", { class: "confirm", id: "wiz-confirm-replace" },
            h("span", null, `Replace your saved ${old.provider} key ${old.key}? The old key is deleted when the new one is saved.`),
            h("button", { type: "button", "data-action": "confirm-replace", class: "danger", onclick: save }, "Yes, replace"),
            h("button", { type: "button", "data-action": "cancel", onclick: () => clear(saveStatus) }, "Cancel")));
        } }, "Save key"), saveStatus)));

    async function save() {
      const chosen = wizard.querySelector("input[name=wiz-policy]:checked").value;
      clear(saveStatus, note("Saving…"));
      try {
        const r = await api.send("POST", "/plugins/byok/keys", { provider: provider.value, key: key.value, policy: chosen });
        key.value = "";
        clear(saveStatus, note(`Saved ${r.provider} key ${r.key} (${r.policy})${r.replaced ? ", replacing the old one" : ""}.`, "ok"));
        refresh();
      } catch (e) { clear(saveStatus, note(e.message, "error")); }
    }
  }
  drawWizard();
  refresh();
}

// ---- power levels --------------------------------------------------------------------------
const TYPICAL = { messages: [{ role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "Summarise the attached meeting notes in five bullet points. ".repeat(12) }], max_tokens: 512 };

async function renderLevels(main) {
  const box = h("div", { id: "levels" }, note("Loading levels…"));
  clear(main, h("h2", null, "Power levels"), h("p", null,
    "Ask for model “auto” and the proxy picks a level for you: the header X-Power-Level or body power_level if you send one, then your key's or team's setting, then the default you save here, then your tier's default."), box);
  let policy, quote, health;
  try {
    [policy, quote, health] = await Promise.all([api.get("/plugins/routing/policy"), api.send("POST", "/plugins/routing/quote", TYPICAL),
      api.get("/plugins/health").catch(() => null)]);
  } catch (e) { clear(box, note(e.status === 404 ? "Power-level routing is not enabled on this proxy." : e.message, "error")); return; }
  const p50 = {};
  for (const prov of health?.providers || []) for (const d of prov.deployments) {
    const v = d.latency_p50_ms ?? d.latency_ewma_ms;
    if (v !== null && v !== undefined) p50[d.model_group] = Math.min(p50[d.model_group] ?? Infinity, v);
  }
  const saved = policy.account_default_level;
  const status = h("div", { id: "level-save-status" });
  const radio = (value, checked) => h("input", { type: "radio", name: "default-level", value, checked, "aria-label": `default ${value || "none"}` });
  const cards = quote.levels.map((lv) => h("section", { class: "card level", "data-level": lv.level },
    h("div", { class: "row" }, h("h3", null, lv.level), h("span", { class: "spacer" }),
      h("label", { class: "radio" }, radio(lv.level, saved === lv.level), "my default")),
    h("p", null, "Would use now: ", h("strong", { class: "chosen" }, lv.model_group || "nothing available")),
    h("dl", { class: "facts" },
      h("dt", null, "Worst-case hold (typical request)"), h("dd", { class: "hold" }, lv.hold ? `${fmtCredits(lv.hold)} credits` : "—"),
      h("dt", null, "Expected cost (typical request)"), h("dd", { class: "expected" }, lv.expected ? `${fmtCredits(lv.expected)} credits` : "—"),
      h("dt", null, `Your average request (${quote.recent.requests} in ${quote.recent.days || 30} days)`),
      h("dd", { class: "recent" }, lv.recent_expected ? `${fmtCredits(lv.recent_expected)} credits` : "no recent requests"),
      h("dt", null, "Latency p50"), h("dd", null, lv.model_group && p50[lv.model_group] !== undefined ? `${Math.round(p50[lv.model_group])} ms` : "unknown")),
    h("details", null, h("summary", null, `Model groups (${lv.candidates.length})`), h("ul", { class: "candidates" },
      lv.candidates.map((c) => h("li", null, h("span", { class: `badge ${c.available ? "s-success" : "s-failure"}` }, c.available ? "healthy" : "unavailable"),
        " ", c.model_group, c.allowed_for_key ? "" : " (not allowed for this key)", ` · hold ${fmtCredits(c.hold)} · expected ${fmtCredits(c.expected)}`))))));
  clear(box, h("p", null, `Tier ${policy.tier}; tier default ${policy.default_level}. Typical request: ~${quote.prompt_tokens_estimate} prompt tokens, up to ${quote.output_tokens} output tokens${quote.credits_enabled ? "" : " (credits are off: list prices)"}.`),
    h("div", { class: "levels" }, cards),
    h("div", { class: "row" }, h("label", { class: "radio" }, radio("", !saved), "no default of my own (use the tier's)"), h("span", { class: "spacer" }),
      h("button", { type: "button", id: "level-save", class: "primary", onclick: async () => {
        const v = box.querySelector("input[name=default-level]:checked")?.value || null;
        try { const r = await api.send("PUT", "/plugins/routing/default-level", { default_level: v }); clear(status, note(r.default_level ? `Saved: auto now means ${r.default_level} for you.` : "Cleared: auto uses your tier's default.", "ok")); } catch (e) { clear(status, note(e.message, "error")); }
      } }, "Save default level")), status);
}

// ---- accounts (admin) ----------------------------------------------------------------------
function renderAccounts(main) {
  const search = h("input", { type: "search", id: "account-search", placeholder: "search accounts", "aria-label": "Search accounts", onchange: () => load() });
  const list = h("div", { id: "accounts-list" });
  const detail = h("div", { id: "account-detail" });
  const verifyOut = h("div", { id: "verify-result" });
  clear(main, h("h2", null, "Accounts"), h("div", { class: "toolbar" }, search, h("button", { type: "button", onclick: () => load() }, "Search"),
    h("span", { class: "spacer" }), h("button", { type: "button", id: "verify", onclick: async () => {
      clear(verifyOut, note("Verifying the ledger…"));
      try { const r = await api.get("/plugins/credits/verify"); clear(verifyOut, r.ok ? note("Ledger consistent: every balance equals its ledger sum.", "ok") : h("div", null, note(`${r.problems.length} problem(s):`, "error"), h("ul", null, r.problems.map((p) => h("li", null, p))))); } catch (e) { clear(verifyOut, note(e.message, "error")); }
    } }, "Verify ledger")), verifyOut, h("div", { class: "split" }, h("section", { class: "card" }, list), detail));

  async function load() {
    clear(list, note("Loading accounts…"));
    try {
      const r = await api.get("/plugins/credits/accounts", { search: search.value.trim(), limit: 100 });
      clear(list, r.accounts.length ? h("table", { class: "data" }, h("thead", null, h("tr", null, ["Account", "Tier", "Balance", "Held", "Available", "Last activity"].map((t) => h("th", null, t)))),
        h("tbody", null, r.accounts.map((a) => h("tr", { class: "clickable", "data-account": a.account, tabindex: "0", onclick: () => open(a.account), onkeydown: (e) => { if (e.key === "Enter") open(a.account); } },
          h("td", { class: "clip", title: a.account }, a.account), h("td", { class: "tier" }, a.tier || "—"), h("td", { class: "num" }, fmtCredits(a.balance)), h("td", { class: "num" }, fmtCredits(a.held)),
          h("td", { class: "num" }, fmtCredits(a.available)), h("td", null, fmtTime(a.last_activity))))))
        : note("No accounts match."));
    } catch (e) { clear(list, note(e.message, "error")); }
  }

  async function open(account) {
    clear(detail, h("section", { class: "card" }, note(`Loading ${account}…`)));
    const amount = h("input", { type: "text", inputmode: "decimal", id: "grant-amount", placeholder: "credits, e.g. 25 or 12.5", "aria-label": "Amount in credits" });
    const noteIn = h("input", { type: "text", id: "grant-note", maxlength: "500", placeholder: "note (optional)", "aria-label": "Note" });
    const kind = h("select", { id: "grant-kind", "aria-label": "Kind of credits" },
      h("option", { value: "paid" }, "paid"), h("option", { value: "promotional" }, "promotional"));
    const expires = h("input", { type: "datetime-local", id: "grant-expires", "aria-label": "Expires (optional, your local time)" });
    const out = h("div", { id: "grant-result" });
    const form = h("form", { id: "grant-form", class: "grant", onsubmit: async (ev) => {
      ev.preventDefault();
      const value = amount.value.trim();
      if (!/^\d+(\.\d{1,6})?$/.test(value) || !/[1-9]/.test(value)) { clear(out, note("Amount must be a positive number of credits with at most 6 decimals.", "error")); return; }
      const body = { account, amount: value, kind: kind.value, idempotency_key: crypto.randomUUID() }; // one per submit
      if (noteIn.value.trim()) body.note = noteIn.value.trim();
      if (expires.value) { // datetime-local is the browser's local time; the API wants ISO 8601 with a zone
        const when = new Date(expires.value);
        if (Number.isNaN(when.getTime())) { clear(out, note("The expiry is not a valid date and time.", "error")); return; }
        body.expires_at = when.toISOString();
      }
      clear(out, note("Granting…"));
      try {
        const r = await api.send("POST", "/plugins/credits/grant", body);
        const what = `${fmtCredits(r.amount)} ${r.kind || "paid"} credits${r.expires_at ? ` expiring ${fmtTime(r.expires_at)}` : ""}`;
        clear(out, note(`Done: granted ${what}; balance now ${fmtCredits(r.balance)} credits.`, "ok"));
        amount.value = ""; noteIn.value = ""; expires.value = ""; kind.value = "paid"; refresh(); load();
      } catch (e) { clear(out, note(e.message, "error")); }
    } }, h("h3", null, "Grant / top up"), amount, kind, h("label", { class: "radio", for: "grant-expires" }, "expires"), expires, noteIn,
    h("button", { type: "submit", id: "grant-submit", class: "primary" }, "Grant"), out);
    const body = h("div");
    clear(detail, h("section", { class: "card", id: "account-panel" }, h("h3", null, account), body, form));
    async function refresh() {
      try {
        const [bal, led] = await Promise.all([api.get("/plugins/credits/balance", { account }), api.get("/plugins/credits/ledger", { account, limit: 50 })]);
        clear(body, h("p", { id: "account-balance" }, `Balance ${fmtCredits(bal.balance)} · held ${fmtCredits(bal.held)} · leased ${fmtCredits(bal.leased)} · available ${fmtCredits(bal.available)}`),
          bal.opened && bal.spend ? h("p", { id: "account-allowance", class: "sub" }, allowanceLine(bal)) : null,
          bal.buckets?.length ? h("table", { class: "data", id: "buckets" }, h("thead", null, h("tr", null, ["Kind", "Remaining", "Expires"].map((t) => h("th", null, t)))),
            h("tbody", null, bal.buckets.map((b) => h("tr", { "data-kind": b.kind, "data-bucket": b.id ?? "paid" },
              h("td", { class: "kind" }, b.kind, b.period ? h("span", { class: "sub" }, ` ${b.period}`) : null),
              h("td", { class: "num" }, fmtAmount(b.remaining)), h("td", null, b.expires_at ? fmtTime(b.expires_at) : "never"))))) : null,
          h("table", { class: "data", id: "ledger" }, h("thead", null, h("tr", null, ["When", "Kind", "Change", "Balance after", "Note"].map((t) => h("th", null, t)))),
            h("tbody", null, led.entries.map((e) => h("tr", null, h("td", null, fmtTime(e.created_at)), h("td", null, e.kind), h("td", { class: "num" }, fmtCredits(e.delta)),
              h("td", { class: "num" }, fmtCredits(e.balance_after)), h("td", null, e.note || ""))))));
      } catch (e) { clear(body, note(e.message, "error")); }
    }
    refresh();
  }
  load();
}

// "tier pro · allowance 49.5 left of 50 per month, resets … · spent 0.5 today, 0.5 this week, 0.5 this month · day cap 100 (tier)"
function allowanceLine(bal) {
  const a = bal.allowance;
  const left = a && a.left !== "unlimited" ? `${fmtCredits(a.left)} left ` : "";
  const parts = [`tier ${bal.tier || "unknown"}`,
    a ? `allowance ${left}${allowanceText(a)}, resets ${fmtTime(a.resets_at)}` : "no allowance",
    `spent ${fmtCredits(bal.spend.day)} today, ${fmtCredits(bal.spend.week)} this week, ${fmtCredits(bal.spend.month)} this month`];
  for (const [kind, c] of capEntries(bal)) parts.push(`${kind} cap ${fmtCredits(c.cap)} (${c.source})`);
  return parts.join(" · ");
}

// ---- provider health (admin) ---------------------------------------------------------------
function renderHealth(main) {
  const board = h("div", { id: "health-board" }, note("Loading health…"));
  const audit = h("div", { id: "health-audit" });
  const summary = h("div", { class: "row", id: "health-summary" });
  let onlyProblems = false;
  // never-checked (`unknown`) is not a problem to act on; everything else that is not healthy is
  const QUIET_STATUSES = new Set(["healthy", "unknown"]);
  const problemsBox = h("input", { type: "checkbox", id: "health-problems", onchange: () => { onlyProblems = problemsBox.checked; load(); } });
  clear(main, h("h2", null, "Provider health"), h("div", { class: "toolbar" },
    h("button", { type: "button", id: "health-refresh", onclick: () => load() }, "Refresh"),
    h("label", { class: "radio" }, problemsBox, "only deployments with a problem (not healthy and not unknown)"), summary),
    board, h("section", { class: "card" }, h("h3", null, "Operator actions (audit)"), audit));
  // uptime as three small bars (<meter>: no style attribute needed under the CSP)
  const meter = (name, v) => h("div", { class: "uptime", title: v === null || v === undefined ? `${name}: no data` : `${name}: ${Number(v).toFixed(3)}%` },
    h("span", null, name), h("meter", { min: "0", max: "100", low: "95", high: "99", optimum: "100", value: v === null || v === undefined ? "0" : String(v) }),
    h("span", { class: "num" }, v === null || v === undefined ? "—" : `${Number(v).toFixed(1)}%`));
  async function load() {
    try {
      const [snap, trail] = await Promise.all([api.get("/plugins/health"), api.get("/plugins/health/audit", { limit: 50 })]);
      const counts = {};
      for (const p of snap.providers) for (const d of p.deployments) counts[d.status] = (counts[d.status] || 0) + 1;
      clear(summary, Object.entries(counts).sort().map(([k, n]) => h("span", { class: `badge st-${k}`, "data-count": k }, `${n} ${k}`)));
      const sections = [];
      for (const p of snap.providers) {
        const rows = p.deployments.filter((d) => !onlyProblems || !QUIET_STATUSES.has(d.status));
        if (!rows.length) continue;
        sections.push(h("section", { class: "card", "data-provider": p.provider },
          h("div", { class: "row" }, h("h3", null, p.provider), h("span", { class: `badge st-${p.status}` }, p.status),
            h("span", { class: "sub" }, `${p.deployments.length} deployment(s)`)),
          h("table", { class: "data health" }, h("thead", null, h("tr", null, ["Model group / deployment", "Status", "Circuit", "Uptime 24h · 7d · 30d", "Latency p50 / p95", "Last probe", ""].map((t) => h("th", null, t)))),
            h("tbody", null, rows.map((d) => deploymentRow(d))))));
      }
      clear(board, sections.length ? sections : note(onlyProblems ? "Every deployment is healthy." : "No deployments are known to the health capability."));
      clear(audit, trail.entries.length ? h("table", { class: "data" }, h("thead", null, h("tr", null, ["When", "Deployment", "Action", "Reason", "By"].map((t) => h("th", null, t)))),
        h("tbody", null, trail.entries.map((a) => h("tr", null, h("td", null, fmtTime(a.at)), h("td", { class: "mono" }, a.model_id), h("td", null, a.action), h("td", null, a.reason), h("td", null, a.actor)))))
        : note("No operator actions yet."));
    } catch (e) { clear(board, note(e.status === 404 ? "The health capability is not enabled on this proxy." : e.message, "error")); }
  }
  function deploymentRow(d) {
    const reason = h("input", { type: "text", placeholder: "reason (required)", "aria-label": `reason for ${d.model_id}`, class: "reason" });
    const out = h("span", { class: "row-status" });
    const force = (state) => h("button", { type: "button", "data-force": state, onclick: async () => {
      if (!reason.value.trim()) { out.textContent = "A reason is required."; reason.focus(); return; }
      try { await api.send("POST", `/plugins/health/deployments/${encodeURIComponent(d.model_id)}/force`, { state, reason: reason.value.trim() }); load(); } catch (e) { out.textContent = e.message; }
    } }, state === "auto" ? "automatic" : `force ${state}`);
    const probe = d.last_probe ? `${d.last_probe.ok ? "ok" : "failed"} ${fmtTime(d.last_probe.at)}${d.last_probe.error ? ` — ${d.last_probe.error}` : ""}` : (d.probed === false ? "not probed" : "none yet");
    const u = d.uptime || {};
    const ms = (v) => (v === null || v === undefined ? "—" : Math.round(v));
    return h("tr", { "data-model-id": d.model_id, "data-status": d.status },
      h("td", null, h("div", null, d.model_group), h("div", { class: "sub mono", title: d.model_id }, `${d.model || ""} · ${d.model_id.slice(0, 12)}…`)),
      h("td", null, h("span", { class: `badge st-${d.status}` }, d.status),
        d.forced ? h("div", { class: "sub" }, `forced ${d.forced.state}: ${d.forced.reason || ""}`) : null,
        d.reason && !d.forced ? h("div", { class: "sub" }, d.reason) : null),
      h("td", null, d.circuit || "—", d.consecutive_failures ? h("div", { class: "sub" }, `${d.consecutive_failures} failures in a row`) : null),
      h("td", null, h("div", { class: "uptimes" }, meter("24h", u["24h"]), meter("7d", u["7d"]), meter("30d", u["30d"]))),
      h("td", { class: "num" }, `${ms(d.latency_p50_ms ?? d.latency_ewma_ms)} / ${ms(d.latency_p95_ms)} ms`),
      h("td", { class: "sub" }, probe),
      h("td", { class: "actions" }, h("details", null, h("summary", null, "force…"), h("div", { class: "force" }, reason, force("down"), force("up"), force("auto"))), out));
  }
  load();
}

// ---- boot ----------------------------------------------------------------------------------
if (sessionStorage.getItem(KEY)) start().catch((e) => { if (e.status !== 401) renderSignIn(e.message); });
else renderSignIn();
