// Runs pixel.js in node against a minimal fake page and prints what it sent (JSON).
// argv: path of pixel.js, JSON options {url, src, attrs, ua, webdriver, beacon, config,
// queued, steps}. Used by tests/pixel/test_snippet_js.py.
"use strict";
const fs = require("fs");
const vm = require("vm");
const opts = JSON.parse(process.argv[3]);
const sent = [];
let loc = new URL(opts.url);
const listeners = {};
const fire = (name) => (listeners[name] || []).forEach((f) => f());
const location = {};
for (const k of ["href", "origin", "pathname", "search", "hash", "hostname", "protocol"]) {
  Object.defineProperty(location, k, { get: () => loc[k] });
}
const navigator = {
  userAgent: opts.ua || "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36",
  webdriver: !!opts.webdriver,
  sendBeacon: (url, body) => {
    if (opts.beacon === false) return false;
    sent.push({ via: "beacon", url, body: JSON.parse(body) });
    return true;
  },
};
const fetch = (url, init) => {
  if (url.includes("/config?")) {
    sent.push({ via: "config", url });
    return Promise.resolve({ json: () => Promise.resolve(opts.config) });
  }
  sent.push({ via: "fetch", url, init: { ...init, body: undefined }, body: JSON.parse(init.body) });
  return Promise.resolve({});
};
const window = {
  navigator, location, fetch,
  history: { pushState: (state, title, url) => { loc = new URL(url, loc.href); } },
  addEventListener: (name, f) => { (listeners[name] = listeners[name] || []).push(f); },
};
if (opts.queued) {
  window.pixel = function () { (window.pixel.q = window.pixel.q || []).push(arguments); };
  opts.queued.forEach((a) => window.pixel(...a));
}
const document = {
  referrer: opts.referrer || "",
  currentScript: {
    src: opts.src,
    getAttribute: (name) => {
      const k = name.replace(/^data-/, "");
      return k in opts.attrs ? opts.attrs[k] : null;
    },
  },
};
const context = vm.createContext({ window, document, fetch, URL, JSON, String, Promise });
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context);
const tick = () => new Promise((r) => setTimeout(r, 5));
(async () => {
  await tick();
  for (const step of opts.steps || []) {
    const [kind, arg, props] = step;
    if (kind === "push") window.history.pushState({}, "", arg);
    if (kind === "pop") { loc = new URL(arg, loc.href); fire("popstate"); }
    if (kind === "hash") { loc = new URL(arg, loc.href); fire("hashchange"); }
    if (kind === "event") window.pixel(arg, props);
    await tick();
  }
  process.stdout.write(JSON.stringify(sent));
})();
