// The runs page (/dashboard): the store's runs, newest first, with status and progress
// as they change (server-sent events from /events/runs).
"use strict";

(() => {
  const { badge, el, mapLink, moment, number, progress, seconds, stream, table } = H3P;
  let stopper = null;

  function render(runs) {
    const main = document.getElementById("main");
    main.querySelector(".runs")?.remove();
    const holder = el("div", { class: "runs" });
    if (!runs.length) {
      holder.append(el("p", { class: "note" },
        "No run yet. Start one with 'h3pipe run PIPELINE --iso3 RWA', or over HTTP with ",
        el("code", { text: "POST /processes/{pipeline}/execution" }), "."));
    } else {
      holder.append(table([
        ["run", (r) => el("a", { href: `/dashboard/runs/${encodeURIComponent(r.run_id)}`,
                                 text: r.run_id, class: "run-link" })],
        ["pipeline", (r) => r.pipeline],
        ["dataset", (r) => (r.status === "successful" ? mapLink(r.dataset) : r.dataset)],
        ["scope", (r) => r.scope],
        ["res", (r) => r.resolution, "num"],
        ["cells", (r) => number(r.cells), "num"],
        ["status", (r) => el("span", { "data-run": r.run_id, class: "run-status" },
                             badge(r.status))],
        ["progress", (r) => progress(r.progress, r.status)],
        ["started", (r) => moment(r.started)],
        ["took", (r) => seconds(r.started, r.ended ? r.finished : null)],
        ["message", (r) => el("span", { class: "message",
                                        text: r.status === "successful" ? "" : r.message || "" })],
      ], runs));
    }
    main.append(holder);
  }

  function live(on) {
    const dot = document.getElementById("live") ||
      document.getElementById("title").appendChild(el("span", { id: "live" }));
    dot.className = on ? "on" : "off";
    dot.textContent = on ? "live" : "not connected";
  }

  H3P.start(async () => {
    if (stopper) stopper.abort();
    stopper = stream("/events/runs", (type, data) => {
      if (type === "runs") {
        H3P.quiet();
        render(data.runs);
      } else if (type === "missing") {
        H3P.say(data.detail);
      }
    }, live);
  });
})();
