// The overview: events on a timeline coloured by status, and the platform's live figures
// from `GET /overview`, refreshed every 2 s while the page is open.

import { call, el, onLeave, svg, table } from "./ui.js";

const REFRESH_MS = 2000;
const DAY = 86400000;

export async function drawOverview(section) {
  const figures = el("div", { id: "figures", "aria-live": "polite" });
  const timeline = el("div", { id: "calendar" });
  section.append(el("h3", {}, "Events, from a week ago to three weeks ahead"), timeline, figures);
  const events = await call("GET", "/events?size=100");
  timeline.replaceChildren(drawTimeline(events.items, Date.now()));
  const refresh = async () => figures.replaceChildren(...drawFigures(await call("GET", "/overview")));
  await refresh();
  const timer = setInterval(() => refresh().catch((error) => figures.replaceChildren(el("p", { class: "error", role: "alert" }, error.message))), REFRESH_MS);
  onLeave(() => clearInterval(timer));
}

// One bar per event over the window, its colour its status, with a line at now.
function drawTimeline(events, now) {
  const from = now - 7 * DAY;
  const to = now + 21 * DAY;
  const width = 1180;
  const label = 260;
  const row = 22;
  const x = (t) => label + ((Math.min(Math.max(t, from), to) - from) / (to - from)) * (width - label);
  const shown = events.filter((e) => Date.parse(e.endsAt) > from && Date.parse(e.startsAt) < to);
  if (!shown.length) return el("p", {}, "No event in this window.");
  const height = shown.length * row + 24;
  const ticks = [...Array(5).keys()].map((i) => {
    const t = from + i * 7 * DAY;
    return svg("g", {}, svg("line", { x1: x(t), x2: x(t), y1: 0, y2: height - 18, class: "tick" }), svg("text", { x: x(t) + 2, y: height - 4, class: "axis" }, new Date(t).toISOString().slice(0, 10)));
  });
  const bars = shown.map((e, i) => {
    const y = i * row + 2;
    const start = x(Date.parse(e.startsAt));
    const end = x(Date.parse(e.endsAt));
    const name = e.name.length > 34 ? `${e.name.slice(0, 33)}…` : e.name;
    return svg(
      "a",
      { href: `#/events/${encodeURIComponent(e.id)}`, "aria-label": `${e.name}, ${e.status}, ${e.startsAt} to ${e.endsAt}` },
      svg("title", {}, `${e.name} (${e.status}) ${e.startsAt} to ${e.endsAt}`),
      svg("text", { x: 0, y: y + 14, class: "event-name" }, name),
      svg("rect", { x: start, y, width: Math.max(end - start, 3), height: row - 6, rx: 3, class: `bar ${e.status}` }),
    );
  });
  const nowLine = svg("line", { x1: x(now), x2: x(now), y1: 0, y2: height - 18, class: "now" });
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Events timeline" }, ...ticks, ...bars, nowLine);
}

function drawFigures(o) {
  const sum = (list) => list.reduce((total, item) => total + item.count, 0);
  const figure = (id, name, value) => el("div", { class: "figure", id }, el("dt", {}, name), el("dd", {}, String(value)));
  return [
    el(
      "dl",
      { class: "figures" },
      figure("figure-succeeded", "Claims succeeded", o.claims.succeeded),
      figure("figure-failed", "Claims failed", o.claims.failed),
      figure("figure-pending", "Sagas pending", o.claims.pending),
      figure("figure-outbox", "Outbox backlog", sum(o.outboxPending)),
      figure("figure-dead-letters", "Dead letters pending", sum(o.deadLettersPending)),
    ),
    el("h3", {}, "Claims settled per minute"),
    drawChart(o.claimsPerMinute),
    el(
      "div",
      { class: "columns" },
      el("div", {}, el("h3", {}, "Consumer lag"), table(["Group", "Behind"], o.consumerLag.map((g) => [g.group, String(g.lag)]), { id: "lag" })),
      el(
        "div",
        {},
        el("h3", {}, "Readiness"),
        table(
          ["Service", "Instance", "Ready"],
          o.instances.map((i) => [i.service, i.instance, el("span", { class: `status ${i.ready ? "READY" : "NOT_READY"}`, title: i.detail ?? "" }, i.ready ? "ready" : `not ready: ${i.detail}`)]),
          { id: "readiness" },
        ),
      ),
    ),
    el("p", { class: "muted" }, `As of ${o.at}`),
  ];
}

// Succeeded and failed per minute over the gateway's recent looks.
function drawChart(points) {
  const width = 1180;
  const height = 160;
  if (points.length < 2) return el("p", { id: "chart" }, "The chart fills as the page stays open.");
  const top = Math.max(1, ...points.map((p) => Math.max(p.succeeded, p.failed)));
  const line = (key) =>
    points.map((p, i) => `${40 + (i / (points.length - 1)) * (width - 50)},${height - 20 - (p[key] / top) * (height - 40)}`).join(" ");
  const last = points[points.length - 1];
  return svg(
    "svg",
    { id: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": `Claims per minute: ${Math.round(last.succeeded)} succeeded, ${Math.round(last.failed)} failed now` },
    svg("line", { x1: 40, x2: width - 10, y1: height - 20, y2: height - 20, class: "tick" }),
    svg("text", { x: 0, y: 24, class: "axis" }, String(Math.round(top))),
    svg("text", { x: 0, y: height - 20, class: "axis" }, "0"),
    svg("polyline", { points: line("succeeded"), class: "line succeeded" }),
    svg("polyline", { points: line("failed"), class: "line failed" }),
    svg("text", { x: width - 260, y: 16, class: "axis legend-succeeded" }, "succeeded"),
    svg("text", { x: width - 160, y: 16, class: "axis legend-failed" }, "failed"),
  );
}
