// The pipelines page (/dashboard/pipelines): every pipeline of the project, its steps,
// and a link to the map of its dataset when it has results.
"use strict";

(() => {
  const { el, json, mapLink, table } = H3P;

  H3P.start(async () => {
    const [pipelines, maps] = await Promise.all([json("/pipelines"), json("/maps")]);
    const mapped = new Set(maps.datasets.map((d) => d.dataset));
    const main = document.getElementById("main");
    main.querySelector(".listing")?.remove();
    const holder = el("div", { class: "listing" });
    holder.append(table([
      ["id", (p) => el("code", { text: p.id })],
      ["version", (p) => p.version, "num"],
      ["title", (p) => p.title],
      ["dataset", (p) => (mapped.has(p.dataset) ? mapLink(p.dataset) : p.dataset)],
      ["theme", (p) => p.theme],
      ["resolution", (p) => p.resolution ?? (p.resolutions || []).join(", ")],
      ["steps", (p) => p.steps.map((s) => `${s.id} (${s.operation}${s.source ? `: ${s.source}` : ""})`)
        .join(" → ")],
    ], pipelines));
    main.append(holder);
  });
})();
