// The operator console: a page per hash route (`#/page/id/sub`), drawn from the public API
// through the gateway with the signed-in staff member's own tokens, so the gateway's role
// checks apply. How tokens are kept: see `ui.js`.

import { drawEvents } from "./events.js";
import { drawOverview } from "./overview.js";
import { drawPlayers } from "./players.js";
import { $, call, confirmDialog, el, filter, has, leave, link, queryOf, searchFields, searchForm, session, statusOf, table } from "./ui.js";

const STAFF = ["OPERATOR", "AUDITOR", "ADMIN"];

// Pages, in menu order, with the roles that see them.
// A page's `draw(section, id, sub)` gets what follows its path (`#/events/<id>/edit`).
const PAGES = [
  { path: "overview", title: "Overview", roles: STAFF, draw: drawOverview },
  { path: "events", title: "Events", roles: STAFF, draw: drawEvents },
  { path: "claims", title: "Claims", roles: STAFF, draw: drawClaims },
  { path: "players", title: "Players", roles: ["AUDITOR", "ADMIN"], draw: drawPlayers },
  { path: "dead-letters", title: "Dead letters", roles: ["ADMIN"], draw: drawDeadLetters },
  { path: "audit", title: "Audit trail", roles: ["AUDITOR", "ADMIN"], draw: drawAudit },
];

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
  leave();
  Object.assign(session, { access: null, refresh: null, user: null });
  $("nav").hidden = true;
  $("who").hidden = true;
  $("page").hidden = true;
  $("sign-in").hidden = false;
  location.hash = "";
}

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
  leave();
  if (!session.user || !has(STAFF)) return;
  const visible = PAGES.filter((page) => has(page.roles));
  const [wanted, id, sub] = location.hash.replace(/^#\//, "").split("/").map(decodeURIComponent);
  const page = visible.find((p) => p.path === wanted) ?? visible[0];
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.dataset.page === page.path) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const section = $("page");
  section.replaceChildren(el("h2", { id: "page-title" }, page.title));
  section.hidden = false;
  const mine = page.path === wanted;
  page.draw(section, mine ? id : undefined, mine ? sub : undefined).catch((error) => section.append(el("p", { class: "error", role: "alert" }, error.message)));
}

async function drawClaims(section, id) {
  if (id) return drawClaim(section, id);
  const time = () => el("input", { type: "datetime-local" });
  const { inputs, controls } = searchFields([
    ["userId", "claims-user", "Player (user id)", el("input", { type: "text" })],
    ["eventId", "claims-event", "Event id", el("input", { type: "text" })],
    ["status", "claims-status", "Status", el("select", {}, ...["", "PENDING", "SUCCEEDED", "FAILED"].map((s) => el("option", { value: s }, s || "any")))],
    ["from", "claims-from", "Made from (your time)", time()],
    ["to", "claims-to", "Made before", time()],
  ]);
  const list = el("div", { "aria-live": "polite" });
  const load = async () => {
    const page = await call("GET", `/claims?${queryOf(inputs, 100)}`);
    list.replaceChildren(
      table(
        ["Claim", "Player", "Event", "Status", "Made"],
        page.items.map((c) => [link("claims", c.id), c.userId, link("events", c.eventId), statusOf(c.status), c.createdAt]),
      ),
      el("p", {}, `${page.total} claims`),
    );
  };
  section.append(searchForm(controls, load), list);
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
  const topic = el("input", { type: "text" });
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
    const page = await call("GET", `${base()}?${queryOf({ status, topic }, 100)}`);
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
  const replayAll = el("button", { type: "button" }, "Replay every NEW letter (of the topic, if given)");
  replayAll.addEventListener("click", async () => {
    const which = topic.value.trim() ? `of ${topic.value.trim()} ` : "";
    if (!(await confirmDialog(`Replay every NEW dead letter ${which}of ${service.value}?`, "Yes, replay them"))) return;
    await call("POST", `${base()}/replay`, topic.value.trim() ? { topic: topic.value.trim() } : undefined);
    await load();
  });
  service.addEventListener("change", load);
  status.addEventListener("change", load);
  topic.addEventListener("change", load);
  section.append(
    el("div", { class: "filters" }, filter("letters-service", "Service", service), filter("letters-status", "Status", status), filter("letters-topic", "Topic (all when blank)", topic), replayAll),
    list,
  );
  await load();
}

async function drawAudit(section) {
  const time = () => el("input", { type: "datetime-local" });
  const { inputs, controls } = searchFields([
    ["actor", "audit-actor", "Actor (user id)", el("input", { type: "text" })],
    ["action", "audit-action", "Action", el("input", { type: "text" })],
    ["target", "audit-target", "Target id", el("input", { type: "text" })],
    ["from", "audit-from", "From (your time)", time()],
    ["to", "audit-to", "Before", time()],
  ]);
  const older = el("button", { type: "button", hidden: "" }, "Older records");
  const list = el("div", { "aria-live": "polite" });
  let next = null;
  const load = async (before) => {
    const query = queryOf(inputs, 50);
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
  const form = searchForm(controls, () => load(null));
  older.addEventListener("click", () => load(next));
  section.append(form, list, older);
  await load(null);
}

$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
