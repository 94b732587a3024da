// A run's page (/dashboard/runs/RUN): its status and progress as they change, and its
// HTML report (GET /reports/RUN, as 'h3pipe runs report' writes it) in a frame without
// scripts, made again as the run moves on (at most every few seconds) and once it ends.
"use strict";

(() => {
  const { badge, call, el, mapLink, progress, say, stream } = H3P;
  const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const EVERY = 3000; // ms between two reloads of the report of a running run
  let stopper = null;
  let shownKey = null;
  let loadedAt = 0;
  let pending = null;
  let missing = false;

  function head() {
    const main = document.getElementById("main");
    document.getElementById("title").textContent = `Run ${runId}`;
    document.title = `Run ${runId} · h3pipe`;
    if (!document.getElementById("run-head")) {
      main.querySelector(".intro").replaceWith(el("div", { id: "run-head" }));
      main.append(el("iframe", { id: "report", title: "run report", sandbox: "allow-same-origin" }));
    }
  }

  function show(run) {
    document.getElementById("title").textContent = `Run ${run.run_id}`;
    const box = document.getElementById("run-head");
    box.replaceChildren(
      el("p", {}, badge(run.status), " ", progress(run.progress, run.status), " ",
         el("span", { class: "message", text: run.message || "" })),
      el("p", { class: "note" }, `pipeline ${run.pipeline} · dataset `,
         run.status === "successful" ? mapLink(run.dataset) : run.dataset,
         ` · ${run.scope} · resolution ${run.resolution}`));
    document.getElementById("main").dataset.status = run.status;
    const key = `${run.status}|${run.progress}|${run.updated}`;
    if (key !== shownKey) {
      shownKey = key;
      schedule(run.ended);
    }
  }

  // The report again: now when the run has ended or enough time has passed, else soon.
  function schedule(now) {
    clearTimeout(pending);
    const wait = now ? 0 : Math.max(0, loadedAt + EVERY - Date.now());
    pending = setTimeout(loadReport, wait);
  }

  async function loadReport() {
    loadedAt = Date.now();
    const frame = document.getElementById("report");
    let text;
    try {
      text = await (await call(`/reports/${encodeURIComponent(runId)}`)).text();
    } catch (_) {
      return; // call() has said why on the page
    }
    frame.onload = () => {
      const doc = frame.contentDocument;
      if (doc && doc.documentElement) {
        frame.style.height = `${doc.documentElement.scrollHeight + 24}px`;
      }
      document.getElementById("main").dataset.report = shownKey;
    };
    frame.srcdoc = text;
  }

  H3P.start(async () => {
    head();
    if (stopper) stopper.abort();
    stopper = stream(`/events/runs?run=${encodeURIComponent(runId)}`, (type, data) => {
      if (type === "missing") {
        say(data.detail);
        missing = true;
      } else if (type === "runs" && data.runs.length) {
        if (missing) H3P.quiet(); // it is there now
        missing = false;
        show(data.runs[0]);
      }
    });
  });
})();
