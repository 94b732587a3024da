// What every dashboard page shares (window.H3P): the bearer token, typed once and kept in
// this tab's sessionStorage; calls of the API with it; a plain message on 401 and 403;
// server-sent events read with fetch (EventSource cannot send a token); and small helpers
// that build the DOM from text (never from HTML), so nothing a run recorded runs as code.
"use strict";

window.H3P = (() => {
  const KEY = "h3pipe.token";
  const token = () => sessionStorage.getItem(KEY) || "";

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  function headers(extra) {
    const out = Object.assign({}, extra || {});
    if (token()) out.Authorization = `Bearer ${token()}`;
    return out;
  }

  // fetch with the token; a refusal becomes an ApiError and a message on the page.
  async function call(path, options = {}) {
    const response = await fetch(path, Object.assign({}, options,
                                                     { headers: headers(options.headers) }));
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) { /* not a problem document */ }
      const error = new ApiError(response.status, detail);
      explain(error);
      throw error;
    }
    return response;
  }

  const json = async (path, options) => (await call(path, options)).json();

  function explain(error) {
    if (error.status === 401) {
      say(token()
        ? `This server does not know the token in use (${error.detail}). Type another ` +
          "in the box at the top right."
        : "This server needs a bearer token: type it in the box at the top right " +
          "(a token with the read scope shows everything here).");
    } else if (error.status === 403) {
      say(`This token may not do that: ${error.detail}`);
    } else {
      say(`The server answered ${error.status}: ${error.detail}`);
    }
  }

  function say(text, kind = "error") {
    const box = document.getElementById("message");
    box.textContent = text;
    box.className = kind;
    box.hidden = false;
  }

  function quiet() {
    document.getElementById("message").hidden = true;
  }

  // Server-sent events over fetch: onEvent(type, data) for each; reconnects when the
  // server ends the stream, stops on a refusal (a new token starts it again).
  function stream(path, onEvent, onState) {
    const stopper = new AbortController();
    let wait = 1000;
    const run = async () => {
      while (!stopper.signal.aborted) {
        try {
          const response = await call(path, { headers: { Accept: "text/event-stream" },
                                              signal: stopper.signal });
          onState && onState(true);
          await readEvents(response.body.getReader(), onEvent, (ms) => { wait = ms; });
        } catch (error) {
          if (stopper.signal.aborted || error instanceof ApiError) {
            onState && onState(false);
            return;
          }
        }
        onState && onState(false);
        await sleep(wait);
      }
    };
    run();
    return stopper;
  }

  async function readEvents(reader, onEvent, onRetry) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) type = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trim());
          else if (line.startsWith("retry:")) onRetry(Number(line.slice(6)));
        }
        if (data.length) onEvent(type, JSON.parse(data.join("\n")));
      }
    }
  }

  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  // -- building the page ------------------------------------------------------------------

  // An element with attributes and children (text or elements).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // A table: columns are [title, row => text or element, "num" for numbers].
  function table(columns, rows) {
    const head = el("tr", {}, columns.map(([title]) => el("th", { text: title })));
    const body = rows.map((row) => el("tr", {}, columns.map(([, cell, cls]) => {
      const value = cell(row);
      return el("td", { class: cls || null }, value === null || value === undefined ? "–" : value);
    })));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
  }

  // A number as people read it: thousands separated, about six significant digits.
  function number(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isNaN(value)) return "NaN";
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    const size = Math.abs(value);
    if (size === 0 || (size >= 1e-3 && size < 1e9)) {
      return value.toLocaleString("en-US", { maximumSignificantDigits: 6 });
    }
    return value.toPrecision(4);
  }

  // An RFC 3339 moment as "2026-12-06 15:42:16" (UTC, as 'h3pipe runs list' shows it).
  const moment = (text) => (text ? text.replace("T", " ").slice(0, 19) : null);

  function seconds(start, end) {
    if (!start) return null;
    const took = ((end ? Date.parse(end) : Date.now()) - Date.parse(start)) / 1000;
    return took < 60 ? `${took.toFixed(1)} s` : `${Math.floor(took / 60)} min ${Math.round(took % 60)} s`;
  }

  const badge = (status) => el("span", { class: `status ${status}`, text: status });

  function progress(value, status) {
    const shown = value === null || value === undefined ? (status === "successful" ? 100 : 0) : value;
    return el("span", { class: "progress", title: `${shown}%` },
              el("span", { class: "track" },
                 el("span", { class: `bar ${status}`, style: `width:${shown}%` })),
              el("span", { class: "pct", text: value === null || value === undefined ? "" : `${value}%` }));
  }

  function mapLink(dataset) {
    return el("a", { href: `/dashboard/map/${encodeURIComponent(dataset)}`, text: dataset });
  }

  // -- the token box ----------------------------------------------------------------------

  function tokenBox() {
    const form = document.getElementById("token");
    const input = document.getElementById("token-input");
    const state = document.getElementById("token-state");
    const show = () => { state.textContent = token() ? "token in use" : "no token"; };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!input.value.trim()) return;
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      show();
      quiet();
      window.dispatchEvent(new Event("h3p-token"));
    });
    document.getElementById("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      show();
      window.dispatchEvent(new Event("h3p-token"));
    });
    show();
  }

  // Start a page: its function runs now and again whenever the token changes.
  function start(main) {
    const go = () => main().catch((error) => {
      if (!(error instanceof ApiError)) say(`Something went wrong: ${error.message}`);
    });
    const begin = () => { tokenBox(); go(); };
    window.addEventListener("h3p-token", go);
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", begin);
    else begin();
  }

  return { ApiError, badge, call, el, json, mapLink, moment, number, progress, quiet,
           say, seconds, start, stream, table, token };
})();
