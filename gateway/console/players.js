// Players (AUDITOR, ADMIN): find one by email or id, and see their profile, roles, what was
// granted to them, their claims and their progress per event. An ADMIN changes roles, bans,
// unbans and deletes, each with a reason that the audit trail keeps.

import { $, call, confirmDialog, el, filter, form, has, link, searchForm, statusOf, table } from "./ui.js";

const ROLES = ["USER", "OPERATOR", "AUDITOR", "ADMIN"];

export async function drawPlayers(section, id) {
  const wanted = el("input", { type: "search", value: id ?? "" });
  const found = el("div", { "aria-live": "polite" });
  const find = async () => {
    const text = wanted.value.trim();
    if (!text) return;
    const user = text.includes("@") ? (await call("GET", `/users?email=${encodeURIComponent(text)}`)).items[0] : await call("GET", `/users/${encodeURIComponent(text)}`).catch(() => null);
    if (!user) {
      found.replaceChildren(el("p", { id: "player-missing" }, `No player ${text}`));
      return;
    }
    if (location.hash !== `#/players/${encodeURIComponent(user.id)}`) history.replaceState(null, "", `#/players/${encodeURIComponent(user.id)}`);
    found.replaceChildren(...(await drawPlayer(user, find)));
  };
  section.append(searchForm([filter("player-search", "Email or user id", wanted)], () => find().catch((e) => found.replaceChildren(el("p", { class: "error", role: "alert" }, e.message)))), found);
  if (id) await find();
}

async function drawPlayer(user, reload) {
  const [inventory, claims, progress] = await Promise.all([
    call("GET", `/inventory/${encodeURIComponent(user.id)}`),
    call("GET", `/claims?userId=${encodeURIComponent(user.id)}&size=50`),
    call("GET", `/progress/${encodeURIComponent(user.id)}?size=100`),
  ]);
  const admin = has(["ADMIN"]);
  return [
    el("h3", {}, user.nickname),
    el(
      "dl",
      { class: "profile", id: "profile" },
      ...[["Id", el("code", {}, user.id)], ["Email", user.email], ["Status", statusOf(user.status)], ["Roles", user.roles.join(", ")], ["Joined", user.createdAt]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
    ),
    admin && user.status !== "DELETED" ? administer(user, reload) : "",
    el("h3", {}, "Granted"),
    el("p", { id: "inventory" }, `${inventory.points} points, ${inventory.grants} grants`),
    inventory.items.length ? table(["Item", "Quantity"], inventory.items.map((i) => [i.itemCode, String(i.quantity)])) : "",
    inventory.coupons.length ? table(["Coupon", "Template", "Issued"], inventory.coupons.map((c) => [el("code", {}, c.code), c.template, c.issuedAt])) : "",
    el("h3", {}, "Claims"),
    table(["Claim", "Event", "Status", "Made"], claims.items.map((c) => [link("claims", c.id), link("events", c.eventId), statusOf(c.status), c.createdAt]), { id: "player-claims" }),
    el("h3", {}, "Progress per event"),
    table(
      ["Event", "Met", "Conditions"],
      progress.items.map((p) => [link("events", p.eventId), p.met ? "yes" : "no", p.leaves.map((l) => `${l.metric}${l.filter ? ` ${Object.values(l.filter)[0]}` : ""} ${l.current}/${l.target}`).join("; ")]),
      { id: "player-progress" },
    ),
  ];
}

// Roles, ban, unban and delete, each with a required reason.
function administer(user, reload) {
  const boxes = ROLES.map((role) => el("input", { type: "checkbox", id: `role-${role}`, value: role, checked: user.roles.includes(role) }));
  const reason = el("input", { type: "text", required: true, maxlength: "500" });
  const path = `/users/${encodeURIComponent(user.id)}`;
  const act = (words, question, send) => {
    const button = el("button", { type: "button", class: "danger", "data-user-action": words.toLowerCase() }, words);
    button.addEventListener("click", async () => {
      if (!reason.reportValidity()) return;
      if (!(await confirmDialog(`${question} Reason: ${reason.value}`, `Yes, ${words.toLowerCase()}`))) return;
      try {
        await send(reason.value.trim());
        await reload();
      } catch (error) {
        $("admin-form").querySelector(".form-error").textContent = error.message;
      }
    });
    return button;
  };
  const actions = [
    user.status === "BANNED"
      ? act("Unban", `Unban ${user.email}?`, (why) => call("POST", `${path}/unban`, { reason: why }))
      : act("Ban", `Ban ${user.email}? Their sessions end at once.`, (why) => call("POST", `${path}/ban`, { reason: why })),
    act("Delete", `Delete ${user.email}? This cannot be undone.`, (why) => call("DELETE", `${path}?reason=${encodeURIComponent(why)}`)),
  ];
  return form(
    "admin-form",
    "Administer the account",
    [
      el("fieldset", { class: "roles" }, el("legend", {}, "Roles"), ...boxes.flatMap((box) => [box, el("label", { for: box.id }, box.value)])),
      filter("admin-reason", "Reason (kept in the audit trail)", reason, "reason"),
      el("div", { class: "actions" }, el("button", { type: "submit" }, "Save roles"), ...actions),
    ],
    async () => {
      const roles = boxes.filter((box) => box.checked).map((box) => box.value);
      await call("PUT", `${path}/roles`, { roles, reason: reason.value.trim() });
      await reload();
    },
  );
}
