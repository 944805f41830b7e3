// What every console page shares: the session, API calls with the staff member's own
// tokens, and small builders for elements, tables, forms and their errors.
//
// Tokens live in this module's memory only: never in localStorage, sessionStorage or a
// cookie, so nothing outlives the tab and no other page or script of the origin can read
// them (the Content-Security-Policy allows scripts from the platform only). A reload asks
// for the password again; an expired access token is renewed with the refresh token.

export const session = { access: null, refresh: null, user: null };

export const $ = (id) => document.getElementById(id);

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child ?? "");
  return node;
}

// SVG drawing: attributes, not styles, so the strict style policy holds.
export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child ?? "");
  return node;
}

export async function call(method, path, body) {
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

export const has = (roles) => session.user.roles.some((role) => roles.includes(role));

// Staff who change events and rewards.
export const EDITORS = ["OPERATOR", "ADMIN"];

export function table(headings, rows, attributes = {}) {
  return el(
    "table",
    attributes,
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))),
  );
}

// A search form of labelled `fields` and a Search button that runs `load`.
export function searchForm(fields, load) {
  const form = el("form", { class: "filters", role: "search" }, ...fields, el("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  return form;
}

// The labelled controls of a search, one per query parameter (`[name, id, label,
// control]`), and the same controls by parameter name for `queryOf`.
export function searchFields(fields) {
  return {
    inputs: Object.fromEntries(fields.map(([name, , , control]) => [name, control])),
    controls: fields.map(([, id, label, control]) => filter(id, label, control)),
  };
}

// A labelled control; `field` names it in the API's `errors[].field`.
export function filter(id, label, control, field) {
  control.id = id;
  if (field) control.dataset.field = field;
  return el("div", { class: "field" }, el("label", { for: id }, label), control);
}

export const link = (path, id, text) => el("a", { href: `#/${path}/${encodeURIComponent(id)}` }, text ?? id);

export const statusOf = (status) => el("span", { class: `status ${status}` }, status);

// Shows a failed call's problem in `form`: each `errors[].field` next to the control whose
// `data-field` names it (or its nearest named parent), the rest at the top of the form.
export function showProblem(form, error) {
  for (const old of form.querySelectorAll(".field-error")) old.remove();
  for (const invalid of form.querySelectorAll("[aria-invalid]")) {
    invalid.removeAttribute("aria-invalid");
    invalid.removeAttribute("aria-describedby");
  }
  const summary = form.querySelector(".form-error");
  summary.textContent = error.problem?.detail ? `${error.message}: ${error.problem.detail}` : error.message;
  for (const [i, fieldError] of (error.problem?.errors ?? []).entries()) {
    const control = controlFor(form, fieldError.field);
    const id = `${form.id}-error-${i}`;
    const message = el("p", { class: "error field-error", id }, `${fieldError.field}: ${fieldError.message}`);
    if (!control) {
      summary.after(message);
      continue;
    }
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", id);
    control.after(message);
  }
  form.querySelector("[aria-invalid]")?.focus();
}

function controlFor(form, field) {
  const controls = [...form.querySelectorAll("[data-field]")];
  for (let path = field; ; ) {
    const control = controls.find((c) => c.dataset.field === path);
    if (control) return control;
    const shorter = path.replace(/(\.[^.[\]]+|\[\d+\])$/, "");
    if (shorter === path) return null;
    path = shorter;
  }
}

// Asks `question` in a modal dialog; resolves true when `yes` is pressed. Escape cancels.
export function confirmDialog(question, yes) {
  return new Promise((resolve) => {
    const accept = el("button", { type: "button", class: "danger", "data-confirm": "" }, yes);
    const cancel = el("button", { type: "button" }, "Cancel");
    const dialog = el("dialog", { "aria-labelledby": "confirm-question" }, el("p", { id: "confirm-question" }, question), el("div", { class: "actions" }, accept, cancel));
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    accept.addEventListener("click", () => close(true));
    cancel.addEventListener("click", () => close(false));
    dialog.addEventListener("cancel", () => close(false));
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

// A form with a submit button and a place for its problem; `submit(form)` runs on submit
// and its failure is shown in the form.
export function form(id, label, children, submit) {
  const node = el("form", { id, class: "edit", "aria-label": label }, el("p", { class: "error form-error", role: "alert" }), ...children);
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await submit(node);
    } catch (error) {
      showProblem(node, error);
    }
  });
  return node;
}

// Cleanups to run when the page is left (timers of live pages).
const leaving = [];
export const onLeave = (cleanup) => leaving.push(cleanup);
export function leave() {
  while (leaving.length) leaving.pop()();
}

// `2026-12-03T10:00:00Z` as a `datetime-local` value in the browser's time zone, and back.
export function localInput(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  return new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}
export const fromLocalInput = (value) => (value ? new Date(value).toISOString().replace(/\.000Z$/, "Z") : "");

// The query string of a search form's `inputs` (name to control), with `size`; times from
// `datetime-local` controls are sent as RFC 3339.
export function queryOf(inputs, size) {
  const query = new URLSearchParams({ size: String(size) });
  for (const [name, input] of Object.entries(inputs)) {
    const value = input.type === "datetime-local" ? fromLocalInput(input.value) : input.value.trim();
    if (value) query.set(name, value);
  }
  return query;
}
