// The list of games a server plays (/play/), from GET /v1/titles.

import { h, clear } from "./dom.js";

async function main() {
  const list = document.getElementById("titles");
  try {
    const r = await fetch("/v1/titles");
    const { titles } = await r.json();
    clear(list);
    for (const t of titles) {
      list.append(h("li", { class: "card" },
        h("h3", {}, h("a", { href: `/play/${encodeURIComponent(t.id)}/` }, t.name)),
        t.description ? h("p", {}, t.description) : null));
    }
    if (!titles.length) list.append(h("li", {}, "No game is served here yet."));
  } catch (e) {
    clear(list).append(h("li", { role: "alert" }, "The server cannot be reached. Reload the page to try again."));
  }
  document.body.dataset.ready = "true";
}

main();
