// The maps page (/dashboard/maps): the datasets with results, each scope and resolution.
"use strict";

(() => {
  const { el, json, mapLink, table } = H3P;

  H3P.start(async () => {
    const { datasets } = await json("/maps");
    const main = document.getElementById("main");
    main.querySelector(".listing")?.remove();
    const holder = el("div", { class: "listing" });
    const rows = datasets.flatMap((d) => d.scopes.map((s) => ({ dataset: d.dataset, ...s })));
    holder.append(rows.length ? table([
      ["dataset", (r) => mapLink(r.dataset)],
      ["scope", (r) => el("a", {
        href: `/dashboard/map/${encodeURIComponent(r.dataset)}#scope=${encodeURIComponent(r.scope)}`,
        text: r.label })],
      ["resolutions", (r) => r.resolutions.join(", ")],
    ], rows) : el("p", { class: "note", text: "No dataset has results yet: run a pipeline first." }));
    main.append(holder);
  });
})();
