// Events: the list, one event with its rewards' stock, and the forms that create and edit
// events (with a condition builder) and rewards. Editing is for OPERATOR and ADMIN; an
// AUDITOR gets the same pages with nothing to press.

import { EDITORS, call, confirmDialog, el, filter, form, fromLocalInput, has, link, localInput, statusOf, table } from "./ui.js";

const STATUSES = ["DRAFT", "ACTIVE", "INACTIVE", "ENDED"];

const METRICS = {
  LOGIN_DAYS: { label: "Login days", filter: null },
  LOGIN_STREAK: { label: "Login streak (days)", filter: null },
  QUEST_COMPLETED: { label: "Quests completed", filter: { key: "questId", label: "Quest id (any when blank)" } },
  ITEM_ACQUIRED: { label: "Items acquired", filter: { key: "itemCode", label: "Item code (any when blank)" } },
  ITEM_USED: { label: "Items used", filter: { key: "itemCode", label: "Item code (any when blank)" } },
  LEVEL: { label: "Level reached", filter: null },
};

// The status changes an operator may make from each status, with the button's words.
const MOVES = {
  DRAFT: [["ACTIVE", "Activate"], ["ENDED", "End"]],
  ACTIVE: [["INACTIVE", "Pause"], ["ENDED", "End"]],
  INACTIVE: [["ACTIVE", "Resume"], ["ENDED", "End"]],
  ENDED: [],
};

export async function drawEvents(section, id, sub) {
  if (id === "new") return drawEventForm(section, null);
  if (id && sub === "edit") return drawEventForm(section, await call("GET", `/events/${encodeURIComponent(id)}`));
  if (id) return drawEvent(section, id);
  const status = el("select", {}, ...["", ...STATUSES].map((s) => el("option", { value: s }, s || "any")));
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
  const create = has(EDITORS) ? el("a", { href: "#/events/new", class: "button", id: "new-event" }, "New event") : "";
  section.append(el("div", { class: "filters" }, filter("events-status", "Status", status), create), list);
  await load();
}

// One event: its window, condition and rewards, each reward's stock as a meter.
async function drawEvent(section, id) {
  const path = `/events/${encodeURIComponent(id)}`;
  const [event, rewards] = await Promise.all([call("GET", path), call("GET", `${path}/rewards`)]);
  section.querySelector("h2").textContent = event.name;
  const editor = has(EDITORS);
  section.append(
    el("p", {}, statusOf(event.status), ` ${event.startsAt} to ${event.endsAt}`),
    el("p", {}, event.description),
    editor ? statusButtons(event) : "",
    el("h3", {}, "Condition"),
    el("div", { class: "condition", id: "condition" }, describe(event.condition)),
    el("h3", {}, "Rewards"),
    table(
      ["Reward", "Type", "Grants", "Stock", "Per player", ...(editor ? ["New stock, per player"] : [])],
      rewards.map((r) => [el("code", {}, r.id), r.type, String(grants(r)), stock(r), String(r.perUserLimit), ...(editor ? [rewardEdit(r)] : [])]),
      { id: "rewards" },
    ),
    editor && event.status !== "ENDED" ? rewardForm(event) : "",
  );
}

// A condition in words, nested as the tree is.
function describe(condition) {
  if (condition.all || condition.any) {
    const kind = condition.all ? "all" : "any";
    return el("div", {}, kind === "all" ? "All of:" : "Any of:", el("ul", {}, ...condition[kind].map((c) => el("li", {}, describe(c)))));
  }
  const narrowing = condition.filter ? ` ${Object.values(condition.filter)[0]}` : "";
  return `${METRICS[condition.metric]?.label ?? condition.metric}${narrowing}: at least ${condition.value}`;
}

const grants = (r) => r.amount ?? `${r.itemCode ?? r.couponTemplate ?? ""}${r.quantity ? ` x${r.quantity}` : ""}`;

function stock(r) {
  if (r.totalStock == null) return `${r.reserved} claimed, unlimited`;
  const meter = el("meter", { min: "0", max: String(r.totalStock), value: String(r.reserved), "aria-label": `Reserved of total stock of ${r.id}` });
  return el("span", { class: "stock" }, meter, ` ${r.reserved} reserved, ${r.remaining} left of ${r.totalStock}`);
}

// Draws the page again from the API, as a route change would.
const reloadPage = () => window.dispatchEvent(new HashChangeEvent("hashchange"));

function statusButtons(event) {
  const buttons = MOVES[event.status].map(([to, words]) => {
    const button = el("button", { type: "button", "data-status": to, class: to === "ENDED" ? "danger" : "" }, words);
    button.addEventListener("click", async () => {
      const question = `${words} "${event.name}"? ${to === "ENDED" ? "An ended event cannot come back." : `It becomes ${to}.`}`;
      if (!(await confirmDialog(question, `Yes, ${words.toLowerCase()}`))) return;
      await call("POST", `/events/${encodeURIComponent(event.id)}/status`, { status: to });
      reloadPage();
    });
    return button;
  });
  const edit = el("a", { href: `#/events/${encodeURIComponent(event.id)}/edit`, class: "button", id: "edit-event" }, "Edit");
  return el("div", { class: "actions", role: "group", "aria-label": "Event actions" }, edit, ...buttons);
}

// A reward's stock and per-player limit, changed in place.
function rewardEdit(reward) {
  const total = el("input", { type: "number", min: "0", value: reward.totalStock ?? "", "aria-label": `Total stock of ${reward.id} (blank: unlimited)`, "data-field": "totalStock" });
  const limit = el("input", { type: "number", min: "1", value: String(reward.perUserLimit), "aria-label": `Per player limit of ${reward.id}`, "data-field": "perUserLimit" });
  return form(`reward-${reward.id}`, `Change reward ${reward.id}`, [total, limit, el("button", { type: "submit" }, "Save")], async () => {
    await call("PATCH", `/rewards/${encodeURIComponent(reward.id)}`, {
      totalStock: total.value === "" ? null : Number(total.value),
      perUserLimit: Number(limit.value),
    });
    reloadPage();
  });
}

function rewardForm(event) {
  const type = el("select", {}, ...["POINT", "ITEM", "COUPON"].map((t) => el("option", { value: t }, t)));
  const amount = el("input", { type: "number", min: "1" });
  const itemCode = el("input", { type: "text" });
  const quantity = el("input", { type: "number", min: "1", value: "1" });
  const template = el("input", { type: "text" });
  const total = el("input", { type: "number", min: "0" });
  const limit = el("input", { type: "number", min: "1", value: "1" });
  const byType = {
    POINT: [filter("reward-amount", "Points", amount, "amount")],
    ITEM: [filter("reward-item", "Item code", itemCode, "itemCode"), filter("reward-quantity", "Quantity", quantity, "quantity")],
    COUPON: [filter("reward-template", "Coupon template", template, "couponTemplate")],
  };
  const specific = el("div", { class: "filters" });
  const show = () => specific.replaceChildren(...byType[type.value]);
  type.addEventListener("change", show);
  show();
  const body = () => {
    const common = { type: type.value, totalStock: total.value === "" ? null : Number(total.value), perUserLimit: Number(limit.value) };
    if (type.value === "POINT") return { ...common, amount: Number(amount.value) };
    if (type.value === "ITEM") return { ...common, itemCode: itemCode.value, quantity: Number(quantity.value) };
    return { ...common, couponTemplate: template.value };
  };
  return form(
    "reward-form",
    "Add a reward",
    [
      el("h3", {}, "Add a reward"),
      el("div", { class: "filters" }, filter("reward-type", "Type", type, "type"), filter("reward-total", "Total stock (blank: unlimited)", total, "totalStock"), filter("reward-limit", "Per player", limit, "perUserLimit")),
      specific,
      el("button", { type: "submit" }, "Add reward"),
    ],
    async () => {
      await call("POST", `/events/${encodeURIComponent(event.id)}/rewards`, body());
      reloadPage();
    },
  );
}

// Create (`event` null) or edit an event. Only what changed is sent on edit.
async function drawEventForm(section, event) {
  section.querySelector("h2").textContent = event ? `Edit ${event.name}` : "New event";
  const name = el("input", { type: "text", required: true, maxlength: "100", value: event?.name ?? "" });
  const description = el("textarea", { rows: "2", maxlength: "2000" }, event?.description ?? "");
  // A new event starts this minute and runs a week, unless changed.
  const minute = Math.floor(Date.now() / 60000) * 60000;
  const startsAt = el("input", { type: "datetime-local", required: true, value: localInput(event?.startsAt ?? new Date(minute).toISOString()) });
  const endsAt = el("input", { type: "datetime-local", required: true, value: localInput(event?.endsAt ?? new Date(minute + 7 * 86400000).toISOString()) });
  const root = toNode(event?.condition ?? { all: [{ metric: "LOGIN_DAYS", op: ">=", value: 1 }] });
  if (root.kind === "leaf") Object.assign(root, { kind: "all", children: [{ ...root }] });
  const builder = el("div", { class: "builder" });
  const redrawBuilder = () => builder.replaceChildren(drawGroup(root, "condition", null, redrawBuilder));
  redrawBuilder();
  const locked = event?.status === "ACTIVE";
  const saved = async () => {
    const body = {
      name: name.value,
      description: description.value,
      startsAt: fromLocalInput(startsAt.value),
      endsAt: fromLocalInput(endsAt.value),
      ...(locked ? {} : { condition: toCondition(root) }),
    };
    if (!event) return call("POST", "/events", body);
    const changed = Object.fromEntries(Object.entries(body).filter(([key, value]) => JSON.stringify(value) !== JSON.stringify(event[key])));
    return call("PATCH", `/events/${encodeURIComponent(event.id)}`, changed);
  };
  section.append(
    form(
      "event-form",
      event ? "Edit the event" : "Create an event",
      [
        el("div", { class: "filters" }, filter("event-name", "Name", name, "name"), filter("event-starts", "Starts (your time)", startsAt, "startsAt"), filter("event-ends", "Ends (your time)", endsAt, "endsAt")),
        filter("event-description", "Description", description, "description"),
        el("h3", {}, "Condition"),
        locked ? el("p", {}, "The condition of an ACTIVE event cannot change; pause it first.") : "",
        locked ? el("div", { class: "condition" }, describe(event.condition)) : builder,
        el("div", { class: "actions" }, el("button", { type: "submit" }, event ? "Save" : "Create event"), el("a", { href: event ? `#/events/${encodeURIComponent(event.id)}` : "#/events", class: "button" }, "Cancel")),
      ],
      async () => {
        const created = await saved();
        location.hash = `#/events/${encodeURIComponent(created.id)}`;
      },
    ),
  );
}

// The builder edits a tree of nodes: groups `{ kind: "all" | "any", children }` and leaves
// `{ kind: "leaf", metric, value, filter }`.
function toNode(condition) {
  if (condition.all || condition.any) {
    const kind = condition.all ? "all" : "any";
    return { kind, children: condition[kind].map(toNode) };
  }
  const filterValue = Object.values(condition.filter ?? {})[0] ?? "";
  return { kind: "leaf", metric: condition.metric, value: condition.value, filter: filterValue };
}

function toCondition(node) {
  if (node.kind !== "leaf") return { [node.kind]: node.children.map(toCondition) };
  const leaf = { metric: node.metric, op: ">=", value: Number(node.value) };
  const key = METRICS[node.metric].filter?.key;
  if (key && node.filter.trim()) leaf.filter = { [key]: node.filter.trim() };
  return leaf;
}

const newLeaf = () => ({ kind: "leaf", metric: "LOGIN_DAYS", value: 1, filter: "" });

// `path` is the node's place as the API names it (`condition.all[1]`); `parent` is null for
// the root, which cannot be removed.
function drawGroup(group, path, parent, redraw) {
  const kind = el("select", { "aria-label": `Group ${path}: which conditions must hold`, "data-field": path },
    el("option", { value: "all" }, "All of"), el("option", { value: "any" }, "Any of"));
  kind.value = group.kind;
  kind.addEventListener("change", () => {
    group.kind = kind.value;
    redraw();
  });
  const children = group.children.map((child, i) => {
    const at = `${path}.${group.kind}[${i}]`;
    return el("li", {}, child.kind === "leaf" ? drawLeaf(child, at, group, redraw) : drawGroup(child, at, group, redraw));
  });
  const add = (node) => () => {
    group.children.push(node());
    redraw();
    focusField(`${path}.${group.kind}[${group.children.length - 1}]`);
  };
  return el(
    "fieldset",
    { class: "group", "data-path": path },
    el("legend", {}, kind),
    el("ol", {}, ...children),
    el(
      "div",
      { class: "actions" },
      button(`Add condition to ${path}`, "Add condition", add(newLeaf)),
      button(`Add group to ${path}`, "Add group", add(() => ({ kind: group.kind === "all" ? "any" : "all", children: [newLeaf()] }))),
      parent ? remover(group, path, parent, redraw) : "",
    ),
  );
}

function drawLeaf(leaf, path, parent, redraw) {
  const metric = el("select", { "aria-label": `Metric of ${path}`, "data-field": path }, ...Object.entries(METRICS).map(([value, m]) => el("option", { value }, m.label)));
  metric.value = leaf.metric;
  metric.addEventListener("change", () => {
    leaf.metric = metric.value;
    redraw();
  });
  const value = el("input", { type: "number", min: "1", max: "1000000", value: String(leaf.value), "aria-label": `At least (${path})`, "data-field": `${path}.value` });
  value.addEventListener("input", () => (leaf.value = value.value));
  const narrowing = METRICS[leaf.metric].filter;
  const filterInput = narrowing
    ? el("input", { type: "text", maxlength: "64", value: leaf.filter, "aria-label": `${narrowing.label} (${path})`, placeholder: narrowing.label, "data-field": `${path}.filter.${narrowing.key}` })
    : "";
  if (filterInput) filterInput.addEventListener("input", () => (leaf.filter = filterInput.value));
  return el("div", { class: "leaf", "data-path": path }, metric, el("span", {}, "at least"), value, filterInput, remover(leaf, path, parent, redraw));
}

function remover(node, path, parent, redraw) {
  return button(`Remove ${path}`, "Remove", () => {
    parent.children.splice(parent.children.indexOf(node), 1);
    redraw();
    focusField(path.replace(/\.(all|any)\[\d+\]$/, ""));
  });
}

// Keeps keyboard users where they were after the builder redraws.
const focusField = (path) => document.querySelector(`[data-field="${CSS.escape(path)}"]`)?.focus();

function button(label, text, onClick) {
  const node = el("button", { type: "button", "aria-label": label }, text);
  node.addEventListener("click", onClick);
  return node;
}
