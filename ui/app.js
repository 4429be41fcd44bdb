// The memproxy dashboard: plain JavaScript over the JSON APIs, signed in with a session
// cookie; every mutating call carries the session's CSRF token in `x-csrf-token`.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  let csrf = null;
  let me = null;

  function el(tag, props, ...children) {
    const n = document.createElement(tag);
    Object.entries(props || {}).forEach(([k, v]) => {
      if (k === "class") n.className = v;
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null) n.setAttribute(k, v);
    });
    children.flat().forEach((c) => n.append(c instanceof Node ? c : String(c ?? "")));
    return n;
  }

  async function api(method, path, body, raw) {
    const headers = {};
    if (method !== "GET") headers["x-csrf-token"] = csrf || "";
    let payload;
    if (body !== undefined) {
      if (raw) { payload = body; headers["content-type"] = "application/x-ndjson"; }
      else { payload = JSON.stringify(body); headers["content-type"] = "application/json"; }
    }
    const r = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    if (r.status === 401 && path !== "/ui/api/login") { showSignIn(); throw new Error("signed out"); }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!r.ok) {
      const msg = (data && data.error && data.error.message) || r.statusText;
      throw new Error(msg);
    }
    return data;
  }

  // ---- sign-in ----
  function showSignIn() {
    csrf = null; me = null;
    $("#top").hidden = true;
    $$(".page").forEach((p) => (p.hidden = true));
    $("#signin").hidden = false;
    $("#signin-key").focus();
  }
  function signedIn(s) {
    csrf = s.csrf_token; me = s.principal;
    $("#signin").hidden = true;
    $("#top").hidden = false;
    $("#who").textContent = me.admin ? "master key" : `key ${me.alias || me.key.slice(0, 8)}` + (me.user_id ? ` · user ${me.user_id}` : "") + (me.project ? ` · project ${me.project}` : "");
    $$("[data-admin]").forEach((n) => (n.hidden = !me.admin));
    if (!me.admin && me.user_id) { $("#mem-user-id").value = me.user_id; $("#mem-user-id").readOnly = true; }
    if (!me.admin && me.project) { $("#mem-project").value = me.project; $("#mem-project").readOnly = true; }
    route();
  }
  $("#signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("#signin-error").textContent = "";
    const key = $("#signin-key").value;
    try {
      const s = await api("POST", "/ui/api/login", { key });
      $("#signin-key").value = "";
      signedIn(s);
    } catch (err) {
      $("#signin-error").textContent = "Sign-in refused: " + err.message;
    }
  });
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/ui/api/logout"); } catch (_) { /* already gone */ }
    showSignIn();
  });

  // ---- routing ----
  const pages = { overview: loadOverview, requests: () => loadRequests(true), memory: loadMemory, keys: loadKeys };
  function route() {
    if (!me) return;
    let page = location.hash.slice(1) || "overview";
    if (!pages[page] || (page === "keys" && !me.admin)) page = "overview";
    $$(".page").forEach((p) => (p.hidden = p.id !== "page-" + page));
    $$("header nav a").forEach((a) => a.toggleAttribute("aria-current", a.dataset.page === page));
    $$("header nav a").forEach((a) => { if (a.dataset.page === page) a.setAttribute("aria-current", "page"); });
    pages[page]().catch((err) => console.error(err));
  }
  window.addEventListener("hashchange", route);

  // ---- overview ----
  // Changing the range and then the grouping starts two loads: only the latest one's
  // answer is shown, whichever arrives last.
  let overviewSeq = 0;
  async function loadOverview() {
    const seq = ++overviewSeq;
    const range = $("#ov-range").value, group = $("#ov-group").value;
    const ts = await api("GET", `/v1/usage/timeseries?range=${range}&group_by=${group}`);
    if (seq !== overviewSeq) return;
    $("#ov-group-name").textContent = group;
    const pts = ts.total.points, xs = pts.map((p) => p.t), t = ts.total.totals;
    const cards = [
      ["Requests", fmtNum(t.requests)], ["Tokens", fmtNum(t.tokens_in + t.tokens_out)],
      ["Cost", "$" + (t.cost_usd > 0 && t.cost_usd < 0.01 ? t.cost_usd.toPrecision(2) : t.cost_usd.toFixed(2))], ["Errors", t.requests ? ((100 * t.errors) / t.requests).toFixed(1) + "%" : "0%"],
      ["Latency p95", fmtNum(t.latency_p95_ms) + " ms"], ["TTFT p50", fmtNum(t.ttft_p50_ms) + " ms"],
    ];
    $("#ov-totals").replaceChildren(...cards.map(([k, v]) => el("div", { class: "card" }, el("b", {}, v), el("span", {}, k))));
    const top = ts.groups.slice(0, 3);
    const split = (f) => top.length > 1 ? top.map((g) => ({ label: g.group || "(none)", values: g.points.map(f) })) : [{ label: "all", values: pts.map(f) }];
    lineChart($("#ch-requests"), xs, split((p) => p.requests));
    lineChart($("#ch-tokens"), xs, split((p) => p.tokens_in + p.tokens_out));
    lineChart($("#ch-cost"), xs, split((p) => p.cost_usd));
    lineChart($("#ch-errors"), xs, [{ label: "errors", values: pts.map((p) => (p.requests ? (100 * p.errors) / p.requests : 0)) }]);
    lineChart($("#ch-latency"), xs, [{ label: "p50", values: pts.map((p) => p.latency_p50_ms) }, { label: "p95", values: pts.map((p) => p.latency_p95_ms) }]);
    lineChart($("#ch-ttft"), xs, [{ label: "p50", values: pts.map((p) => p.ttft_p50_ms) }, { label: "p95", values: pts.map((p) => p.ttft_p95_ms) }]);
    $("#ov-groups tbody").replaceChildren(...ts.groups.map((g) => el("tr", {},
      el("td", {}, g.group || "(none)"), el("td", {}, g.totals.requests), el("td", {}, g.totals.tokens_in),
      el("td", {}, g.totals.tokens_out), el("td", {}, "$" + g.totals.cost_usd.toFixed(5)), el("td", {}, g.totals.errors),
      el("td", {}, fmtNum(g.totals.latency_p50_ms)), el("td", {}, fmtNum(g.totals.latency_p95_ms)))));
  }
  $("#ov-range").addEventListener("change", loadOverview);
  $("#ov-group").addEventListener("change", loadOverview);

  // ---- requests ----
  let cursors = [];
  let requestsSeq = 0; // as overviewSeq: only the latest load is shown
  async function loadRequests(fresh) {
    const seq = ++requestsSeq;
    if (fresh) cursors = [];
    const f = new FormData($("#rq-filter"));
    const q = new URLSearchParams({ limit: "25" });
    for (const [k, v] of f.entries()) if (v) q.set(k, v);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    const page = await api("GET", "/v1/usage/requests?" + q);
    if (seq !== requestsSeq) return;
    $("#rq-next").disabled = !page.next_cursor;
    $("#rq-next").dataset.cursor = page.next_cursor || "";
    $("#rq-table tbody").replaceChildren(...page.data.map((r) => {
      const tr = el("tr", { tabindex: "0" },
        el("td", {}, r.time.replace("T", " ").slice(0, 19)), el("td", {}, r.client), el("td", {}, r.model),
        el("td", {}, r.user_id), el("td", {}, r.project || ""), el("td", {}, r.status), el("td", {}, r.tokens_in + r.tokens_out),
        el("td", {}, r.cost_usd == null ? "–" : "$" + r.cost_usd.toFixed(5)), el("td", {}, Math.round(r.total_ms) + " ms"),
        el("td", {}, r.feedback_score == null ? "" : String(r.feedback_score)));
      const open = () => openRequest(r);
      tr.addEventListener("click", open);
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
      return tr;
    }));
  }
  // A request's detail: its row, then the memories injected into it and why (from
  // GET /v1/usage/requests/{id}, which also says what each memory says now).
  async function openRequest(r) {
    showRequest(r, null);
    try {
      const full = await api("GET", "/v1/usage/requests/" + encodeURIComponent(r.request_id));
      showRequest(full, full.injected || []);
    } catch (err) { showRequest(r, err.message); }
  }
  function injectedList(list, r) {
    if (typeof list === "string") return el("p", { class: "error" }, "Could not read the injected memories: " + list);
    if (list === null) return el("p", {}, "Reading the injected memories…");
    if (!list.length) {
      return el("p", {}, r.memories_injected ? `${r.memories_injected} memories were injected (this row predates the per-memory record).` : "No memories were injected into this request.");
    }
    return el("ol", { class: "injected" }, list.map((m) => {
      const open = el("a", { href: "#memory", class: "open-memory" }, "open in the memory browser");
      open.addEventListener("click", () => {
        $("#mem-user-id").value = r.user_id;
        $("#mem-project").value = m.scope === "project" ? (r.project || "") : "";
        $("#mem-q").value = m.content || "";
      });
      return el("li", { "data-id": m.id, class: m.deleted ? "deleted" : "" },
        el("p", { class: "content" }, m.deleted ? "(deleted or edited since)" : m.content),
        el("p", { class: "why" }, m.why),
        el("div", { class: "meta" }, `${m.scope === "project" ? "project " + r.project : "user-level"} · score ${m.score.toFixed(4)} (${Math.round(m.share * 100)}% of best) · ${m.id}`,
          m.deleted ? "" : [" · ", open]));
    }));
  }
  function showRequest(r, injected) {
    const fields = [
      ["Request id", r.request_id], ["Time", r.time], ["User", r.user_id], ["Project", r.project || "none"], ["Client", r.client],
      ["Key", r.key_alias || r.key_id || "master"], ["API", r.endpoint], ["Model", r.model],
      ["Upstream", [r.provider, r.upstream_model, r.deployment].filter(Boolean).join(" / ")],
      ["Status", r.status + (r.error_type ? " (" + r.error_type + ")" : "")], ["Stream", r.stream ? "yes" : "no"],
      ["Tokens", `${r.tokens_in} in (${r.tokens_cached} cached) / ${r.tokens_out} out (${r.tokens_reasoning} reasoning)`],
      ["Cost", r.cost_usd == null ? "unknown price" : "$" + r.cost_usd.toFixed(6)],
      ["Latency", `${r.total_ms.toFixed(1)} ms total, ${r.ttft_ms == null ? "–" : r.ttft_ms.toFixed(1) + " ms"} TTFT, ${r.upstream_ms == null ? "–" : r.upstream_ms.toFixed(1) + " ms"} upstream, ${r.overhead_ms.toFixed(2)} ms proxy`],
      ["Memories injected", r.memories_injected], ["Tool rounds", r.tool_rounds],
      ["Upstream attempts", r.attempts + (r.attempts > 1 ? " (retries / fallbacks)" : "")],
      ["Feedback", r.feedback_score == null && !r.feedback_comment ? "none" : `${r.feedback_score ?? ""} ${r.feedback_comment ?? ""}`],
    ];
    const d = $("#rq-detail");
    d.replaceChildren(el("h2", {}, "Request " + r.request_id),
      el("dl", {}, fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("h3", {}, "Injected memories, and why"), injectedList(injected, r));
    d.hidden = false;
    if (injected === null) d.focus();
  }
  $("#rq-filter").addEventListener("submit", (e) => { e.preventDefault(); loadRequests(true); });
  $("#rq-first").addEventListener("click", () => loadRequests(true));
  $("#rq-next").addEventListener("click", () => { cursors.push($("#rq-next").dataset.cursor); loadRequests(false); });

  // ---- memory ----
  let memCursor = null;
  const memUser = () => $("#mem-user-id").value.trim();
  const memProject = () => $("#mem-project").value.trim();
  // The scope of the memory calls: the user, and the project when one is named.
  function memScope(extra) {
    const q = new URLSearchParams({ user_id: memUser(), ...(extra || {}) });
    if (memProject()) q.set("project", memProject());
    return q;
  }
  async function loadProjects() {
    try {
      const r = await api("GET", "/v1/memories/projects?" + new URLSearchParams({ user_id: memUser() }));
      $("#mem-projects").replaceChildren(...r.data.map((p) => el("option", { value: p.project })));
    } catch (_) { /* the list is a convenience */ }
  }
  function memStatus(t) { $("#mem-status").textContent = t; }
  async function loadMemory() {
    if (memUser()) await listMemories(true);
  }
  function memoryItem(m) {
    const text = el("p", { class: "content" }, m.content);
    const li = el("li", { "data-id": m.id },
      text,
      el("div", { class: "meta" }, `${new Date(m.created_at * 1000).toLocaleString()} · ${m.id}` +
        (m.score != null ? ` · score ${m.score.toFixed(4)}` : "") +
        (m.session_id ? ` · session ${m.session_id}` : "")));
    if (m.metadata && m.metadata.request_id) {
      // What was captured from which request: open that request's row.
      const link = el("a", { href: "#requests", class: "from" }, "captured from request " + m.metadata.request_id);
      link.addEventListener("click", () => { $("#rq-filter [name=request_id]").value = m.metadata.request_id; });
      li.querySelector(".meta").append(" · ", link);
    }
    const actions = el("div", { class: "actions" },
      el("button", { type: "button", class: "edit", onclick: () => edit() }, "Edit"),
      el("button", { type: "button", class: "delete danger", onclick: () => del() }, "Delete"));
    li.append(actions);
    async function del() {
      if (!confirm("Delete this memory?")) return;
      await api("DELETE", `/v1/memories/${encodeURIComponent(m.id)}?${memScope()}`);
      li.remove();
      memStatus("Deleted.");
    }
    function edit() {
      const area = el("textarea", { "aria-label": "Memory text" });
      area.value = m.content;
      const save = el("button", { type: "button", class: "save" }, "Save");
      const cancel = el("button", { type: "button" }, "Cancel");
      const box = el("div", { class: "actions" }, save, cancel);
      text.replaceWith(area); actions.replaceWith(box); area.focus();
      cancel.addEventListener("click", () => { area.replaceWith(text); box.replaceWith(actions); });
      save.addEventListener("click", async () => {
        const updated = await api("PATCH", `/v1/memories/${encodeURIComponent(m.id)}?${memScope()}`, { content: area.value });
        li.replaceWith(memoryItem(updated));
        memStatus("Saved.");
      });
    }
    return li;
  }
  // The list and a search both fill #mem-list: only the latest one started is shown.
  let memSeq = 0;
  async function listMemories(fresh) {
    const seq = ++memSeq;
    if (fresh) { memCursor = null; $("#mem-list").replaceChildren(); loadProjects(); }
    const q = memScope({ limit: "20" });
    if (memCursor) q.set("cursor", memCursor);
    const page = await api("GET", "/v1/memories?" + q);
    if (seq !== memSeq) return;
    page.data.forEach((m) => $("#mem-list").append(memoryItem(m)));
    memCursor = page.next_cursor;
    $("#mem-more").hidden = !memCursor;
    memStatus(page.data.length || !fresh ? "" : memProject() ? "No memories for this user in this project." : "No memories for this user.");
  }
  $("#mem-user").addEventListener("submit", (e) => { e.preventDefault(); listMemories(true).catch((err) => memStatus(err.message)); });
  $("#mem-recent").addEventListener("click", () => listMemories(true).catch((err) => memStatus(err.message)));
  $("#mem-more").addEventListener("click", () => listMemories(false));
  $("#mem-search").addEventListener("submit", async (e) => {
    e.preventDefault();
    const seq = ++memSeq;
    try {
      const q = memScope({ q: $("#mem-q").value, limit: "20" });
      const r = await api("GET", "/v1/memories/search?" + q);
      if (seq !== memSeq) return;
      $("#mem-list").replaceChildren(...r.results.map(memoryItem));
      $("#mem-more").hidden = true;
      memStatus(`${r.results.length} result(s), best first (the proxy's own retrieval).`);
    } catch (err) { memStatus(err.message); }
  });
  $("#mem-export").addEventListener("click", async () => {
    const r = await fetch("/v1/memories/export?" + memScope(), { credentials: "same-origin" });
    if (!r.ok) return memStatus("Export failed: " + r.status);
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: `memories-${memUser()}${memProject() ? "-" + memProject() : ""}.jsonl` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  $("#mem-import").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const r = await api("POST", "/v1/memories/import?" + memScope(), await file.text(), true);
      memStatus(`Imported ${r.imported} memories.`);
      await listMemories(true);
    } catch (err) { memStatus("Import failed: " + err.message); }
    e.target.value = "";
  });
  $("#mem-forget").addEventListener("click", async () => {
    const u = memUser(), p = memProject();
    const what = p ? `everything memproxy knows about "${u}" in project "${p}"` : `everything memproxy knows about "${u}", in every project`;
    if (!u || prompt(`Type the user id "${u}" to forget ${what}:`) !== u) return;
    const r = await api("DELETE", "/v1/memories?" + memScope());
    $("#mem-list").replaceChildren();
    memStatus(`Forgot ${r.deleted} item(s).`);
  });

  // ---- keys ----
  async function loadKeys() {
    const r = await api("GET", "/key/list?return_full_object=true");
    $("#key-table tbody").replaceChildren(...r.keys.map(keyRow));
  }
  const num = (v) => (v === "" || v == null ? null : Number(v));
  function keyRow(k) {
    const inp = (name, v, type) => el("input", { name, value: v ?? "", type: type || "text", size: "7", "aria-label": name });
    const user = inp("user_id", k.user_id), project = inp("project", k.project), rpm = inp("rpm_limit", k.rpm_limit, "number"),
      tpm = inp("tpm_limit", k.tpm_limit, "number"), budget = inp("max_budget", k.max_budget, "number");
    const save = el("button", { type: "button" }, "Save");
    const revoke = el("button", { type: "button", class: "danger" }, "Revoke");
    save.addEventListener("click", async () => {
      await api("POST", "/key/update", { key: k.token, user_id: user.value || null, project: project.value || null, rpm_limit: num(rpm.value), tpm_limit: num(tpm.value), max_budget: num(budget.value) });
      await loadKeys();
    });
    revoke.addEventListener("click", async () => {
      if (!confirm(`Revoke ${k.key_alias || k.key_name}? Clients using it stop working at once.`)) return;
      await api("POST", "/key/delete", { keys: [k.token] });
      await loadKeys();
    });
    return el("tr", {}, el("td", {}, k.key_name), el("td", {}, k.key_alias || ""), el("td", {}, user), el("td", {}, project), el("td", {}, rpm),
      el("td", {}, tpm), el("td", {}, budget), el("td", {}, "$" + Number(k.spend).toFixed(4)), el("td", {}, save, " ", revoke));
  }
  $("#key-create").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target), body = {};
    for (const [k, v] of f.entries()) if (v !== "") body[k] = ["rpm_limit", "tpm_limit", "max_budget"].includes(k) ? Number(v) : v;
    try {
      const r = await api("POST", "/key/generate", body);
      const box = $("#key-new");
      box.replaceChildren(el("strong", {}, "New key (shown once, copy it now): "), el("code", { id: "key-new-value" }, r.key));
      box.hidden = false;
      e.target.reset();
      await loadKeys();
    } catch (err) { $("#key-new").textContent = err.message; $("#key-new").hidden = false; }
  });

  // ---- start ----
  api("GET", "/ui/api/session").then(signedIn).catch(() => showSignIn());
})();
