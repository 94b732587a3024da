// The sources page (/dashboard/sources): the registered sources, active or not.
"use strict";

(() => {
  const { el, json, table } = H3P;

  H3P.start(async () => {
    const sources = await json("/sources?active=all");
    const main = document.getElementById("main");
    main.querySelector(".listing")?.remove();
    const holder = el("div", { class: "listing" });
    holder.append(sources.length ? table([
      ["id", (s) => el("code", { text: s.id })],
      ["version", (s) => s.version, "num"],
      ["title", (s) => s.title],
      ["kind", (s) => s.kind],
      ["theme", (s) => s.theme],
      ["location", (s) => el("code", { text: s.location })],
      ["active", (s) => (s.is_active ? "yes" : "no")],
      ["updated", (s) => H3P.moment(s.updated_at)],
    ], sources) : el("p", { class: "note" },
      "No source is registered in this store yet ('h3pipe sources register FILE', or ",
      el("code", { text: "POST /sources" }), ")."));
    main.append(holder);
  });
})();
