// The operator console: a page per hash route, drawn from the public API through the
// gateway with the signed-in staff member's own tokens, so the gateway's role checks apply.
//
// Tokens live in this module's memory only: never in localStorage, sessionStorage or a
// cookie, so nothing outlives the tab and no other page or script of the origin can read
// them (the Content-Security-Policy allows scripts from the platform only). A reload asks
// for the password again; an expired access token is renewed with the refresh token.

const session = { access: null, refresh: null, user: null };

const STAFF = ["OPERATOR", "AUDITOR", "ADMIN"];

// Pages, in menu order, with the roles that see them.
// A page's `draw(section, id)` gets the id after its path (`#/claims/<id>`) when there is one.
const PAGES = [
  { path: "events", title: "Events", roles: ["OPERATOR", "AUDITOR", "ADMIN"], draw: drawEvents },
  { path: "claims", title: "Claims", roles: ["OPERATOR", "AUDITOR", "ADMIN"], draw: drawClaims },
  { path: "dead-letters", title: "Dead letters", roles: ["ADMIN"], draw: drawDeadLetters },
  { path: "audit", title: "Audit trail", roles: ["AUDITOR", "ADMIN"], draw: drawAudit },
];

const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child ?? "");
  return node;
}

async function call(method, path, body) {
  const send = () =>
    fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${session.access}`,
        ...(body ? { "content-type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
  let response = await send();
  if (response.status === 401 && session.refresh && (await renew())) response = await send();
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw Object.assign(new Error(data?.title ?? response.statusText), { problem: data });
  return data;
}

async function renew() {
  const response = await fetch("/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refreshToken: session.refresh }),
  });
  if (!response.ok) return false;
  const tokens = await response.json();
  session.access = tokens.accessToken;
  session.refresh = tokens.refreshToken;
  return true;
}

async function signIn(event) {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  const response = await fetch("/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  const data = await response.json();
  if (!response.ok) {
    $("sign-in-error").textContent = data.title ?? "Sign-in failed";
    return;
  }
  session.access = data.accessToken;
  session.refresh = data.refreshToken;
  session.user = await call("GET", "/users/me");
  $("password").value = "";
  enter();
}

function signOut() {
  if (session.refresh) {
    fetch("/auth/logout", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: session.refresh }),
    });
  }
  Object.assign(session, { access: null, refresh: null, user: null });
  $("nav").hidden = true;
  $("who").hidden = true;
  $("page").hidden = true;
  $("sign-in").hidden = false;
  location.hash = "";
}

const has = (roles) => session.user.roles.some((role) => roles.includes(role));

function enter() {
  $("sign-in").hidden = true;
  $("who").hidden = false;
  $("who-name").textContent = `${session.user.email} (${session.user.roles.join(", ")})`;
  if (!has(STAFF)) {
    refuse();
    return;
  }
  const nav = $("nav");
  nav.replaceChildren(
    ...PAGES.filter((page) => has(page.roles)).map((page) =>
      el("a", { href: `#/${page.path}`, "data-page": page.path }, page.title),
    ),
  );
  nav.hidden = false;
  route();
}

function refuse() {
  const page = $("page");
  page.replaceChildren(
    el("h2", { id: "refused" }, "This console is for staff"),
    el("p", {}, "Your account has no OPERATOR, AUDITOR or ADMIN role. Ask an administrator if you need one."),
  );
  page.hidden = false;
}

function route() {
  if (!session.user || !has(STAFF)) return;
  const visible = PAGES.filter((page) => has(page.roles));
  const [wanted, id] = location.hash.replace(/^#\//, "").split("/").map(decodeURIComponent);
  const page = visible.find((p) => p.path === wanted) ?? visible[0];
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.dataset.page === page.path) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const section = $("page");
  section.replaceChildren(el("h2", { id: "page-title" }, page.title));
  section.hidden = false;
  page.draw(section, page.path === wanted ? id : undefined).catch((error) => section.append(el("p", { class: "error", role: "alert" }, error.message)));
}

function table(headings, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))),
  );
}

// A search form of labelled `fields` and a Search button that runs `load`.
function searchForm(fields, load) {
  const form = el("form", { class: "filters", role: "search" }, ...fields, el("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  return form;
}

function filter(id, label, control) {
  control.id = id;
  return el("div", {}, el("label", { for: id }, label), control);
}

const link = (path, id, text) => el("a", { href: `#/${path}/${encodeURIComponent(id)}` }, text ?? id);

async function drawEvents(section, id) {
  if (id) return drawEvent(section, id);
  const status = el("select", {}, ...["", "DRAFT", "ACTIVE", "PAUSED", "ENDED"].map((s) => el("option", { value: s }, s || "any")));
  const list = el("div", { "aria-live": "polite" });
  const load = async () => {
    const query = new URLSearchParams({ size: "100" });
    if (status.value) query.set("status", status.value);
    const page = await call("GET", `/events?${query}`);
    list.replaceChildren(
      table(
        ["Name", "Status", "Starts", "Ends"],
        page.items.map((e) => [link("events", e.id, e.name), statusOf(e.status), e.startsAt, e.endsAt]),
      ),
      el("p", {}, `${page.total} events`),
    );
  };
  status.addEventListener("change", load);
  section.append(el("div", { class: "filters" }, filter("events-status", "Status", status)), list);
  await load();
}

const statusOf = (status) => el("span", { class: `status ${status}` }, status);

// One event: its window, condition and rewards, each reward's stock as a meter.
async function drawEvent(section, id) {
  const [event, rewards] = await Promise.all([call("GET", `/events/${id}`), call("GET", `/events/${id}/rewards`)]);
  section.querySelector("h2").textContent = event.name;
  const stock = (r) => {
    if (r.totalStock == null) return `${r.reserved} claimed, unlimited`;
    const meter = el("meter", { min: "0", max: String(r.totalStock), value: String(r.reserved), "aria-label": "Reserved of total stock" });
    return el("span", { class: "stock" }, meter, ` ${r.reserved} reserved, ${r.remaining} left of ${r.totalStock}`);
  };
  const grant = (r) => r.amount ?? `${r.itemCode ?? r.couponTemplate ?? ""}${r.quantity ? ` x${r.quantity}` : ""}`;
  section.append(
    el("p", {}, statusOf(event.status), ` ${event.startsAt} to ${event.endsAt}`),
    el("p", {}, event.description),
    el("h3", {}, "Condition"),
    el("pre", {}, JSON.stringify(event.condition, null, 2)),
    el("h3", {}, "Rewards"),
    table(
      ["Reward", "Type", "Grants", "Stock", "Per player"],
      rewards.map((r) => [el("code", {}, r.id), r.type, String(grant(r)), stock(r), String(r.perUserLimit)]),
    ),
  );
}

async function drawClaims(section, id) {
  if (id) return drawClaim(section, id);
  const inputs = {
    userId: el("input", { type: "text" }),
    eventId: el("input", { type: "text" }),
    status: el("select", {}, ...["", "PENDING", "SUCCEEDED", "FAILED"].map((s) => el("option", { value: s }, s || "any"))),
  };
  const list = el("div", { "aria-live": "polite" });
  const load = async () => {
    const query = new URLSearchParams({ size: "100" });
    for (const [name, input] of Object.entries(inputs)) if (input.value.trim()) query.set(name, input.value.trim());
    const page = await call("GET", `/claims?${query}`);
    list.replaceChildren(
      table(
        ["Claim", "Player", "Event", "Status", "Made"],
        page.items.map((c) => [link("claims", c.id), c.userId, link("events", c.eventId), statusOf(c.status), c.createdAt]),
      ),
      el("p", {}, `${page.total} claims`),
    );
  };
  const form = searchForm(
    [
      filter("claims-user", "Player (user id)", inputs.userId),
      filter("claims-event", "Event id", inputs.eventId),
      filter("claims-status", "Status", inputs.status),
    ],
    load,
  );
  section.append(form, list);
  await load();
}

// One claim's saga, step by step, with the time each step took after the one before.
async function drawClaim(section, id) {
  const claim = await call("GET", `/claims/${id}`);
  section.querySelector("h2").textContent = `Claim ${claim.id}`;
  const steps = claim.timeline ?? [];
  const took = (i) => (i === 0 ? "" : ` (+${Date.parse(steps[i].at) - Date.parse(steps[i - 1].at)} ms)`);
  section.append(
    el("p", {}, statusOf(claim.status), ` player ${claim.userId}, `, link("events", claim.eventId, "event"), ` reward ${claim.rewardId}`),
    claim.failureReason ? el("p", { class: "error" }, claim.failureReason) : "",
    el("ol", { class: "timeline", "aria-label": "Saga steps" },
      ...steps.map((s, i) => el("li", {}, el("strong", {}, s.step), ` ${s.at}${took(i)}`, s.detail ? ` ${s.detail}` : ""))),
  );
}

// Dead letters of one service (ADMIN): what failed and why, decoded; replay or discard.
async function drawDeadLetters(section) {
  const service = el("select", {}, el("option", { value: "event" }, "event"), el("option", { value: "reward-fulfillment" }, "reward-fulfillment"));
  const status = el("select", {}, ...["NEW", "REPLAYED", "DISCARDED", ""].map((s) => el("option", { value: s }, s || "any")));
  const list = el("div", { "aria-live": "polite" });
  const base = () => `/dead-letters/${service.value}`;
  const act = async (letter, action, body) => {
    await call("POST", `${base()}/${encodeURIComponent(letter.id)}/${action}`, body);
    await load();
  };
  const actions = (letter) => {
    if (letter.status === "DISCARDED") return "";
    const reason = el("input", { type: "text", "aria-label": `Reason to discard ${letter.id}` });
    const replay = el("button", { type: "button", "data-replay": letter.id }, "Replay");
    const discard = el("button", { type: "button", "data-discard": letter.id }, "Discard");
    replay.addEventListener("click", () => act(letter, "replay"));
    discard.addEventListener("click", () => reason.value.trim() ? act(letter, "discard", { reason: reason.value }) : reason.focus());
    return el("span", { class: "actions" }, replay, reason, discard);
  };
  const load = async () => {
    const query = new URLSearchParams({ size: "100" });
    if (status.value) query.set("status", status.value);
    const page = await call("GET", `${base()}?${query}`);
    list.replaceChildren(
      table(
        ["Message", "Key", "Error", "Value", "Status", ""],
        page.items.map((l) => [
          `${l.topic} ${l.partition}:${l.offset}`,
          l.key ?? "",
          `${l.errorClass}: ${l.error}`,
          el("pre", {}, l.value ? JSON.stringify(l.value, null, 1) : l.valueBase64 ?? ""),
          statusOf(l.status),
          actions(l),
        ]),
      ),
      el("p", {}, `${page.total} dead letters`),
    );
  };
  const replayAll = el("button", { type: "button" }, "Replay every NEW letter");
  replayAll.addEventListener("click", async () => {
    await call("POST", `${base()}/replay`);
    await load();
  });
  service.addEventListener("change", load);
  status.addEventListener("change", load);
  section.append(el("div", { class: "filters" }, filter("letters-service", "Service", service), filter("letters-status", "Status", status), replayAll), list);
  await load();
}

async function drawAudit(section) {
  const inputs = {
    actor: el("input", { type: "text" }),
    action: el("input", { type: "text" }),
    target: el("input", { type: "text" }),
  };
  const older = el("button", { type: "button", hidden: "" }, "Older records");
  const list = el("div", { "aria-live": "polite" });
  let next = null;
  const load = async (before) => {
    const query = new URLSearchParams({ size: "50" });
    for (const [name, input] of Object.entries(inputs)) if (input.value.trim()) query.set(name, input.value.trim());
    if (before) query.set("before", before);
    const page = await call("GET", `/audit?${query}`);
    const rows = page.items.map((r) => [
      r.at,
      r.actor,
      r.action,
      `${r.targetType} ${r.targetId}`,
      r.changes.map((c) => `${c.field}: ${JSON.stringify(c.before ?? null)} → ${JSON.stringify(c.after ?? null)}`).join("; "),
      r.reason ?? "",
    ]);
    const shown = table(["When", "Actor", "Action", "Target", "Changes", "Reason"], rows);
    if (before) list.append(shown);
    else list.replaceChildren(shown);
    next = page.next ?? null;
    older.hidden = !next;
  };
  const form = searchForm(
    [
      filter("audit-actor", "Actor (user id)", inputs.actor),
      filter("audit-action", "Action", inputs.action),
      filter("audit-target", "Target id", inputs.target),
    ],
    () => load(null),
  );
  older.addEventListener("click", () => load(next));
  section.append(form, list, older);
  await load(null);
}

$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
