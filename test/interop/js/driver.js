#!/usr/bin/env node
// Drives Debian's headless Chromium for Specter's browser interop tests
// (test/support/browser.ex starts it as a Port).
//
// Protocol: newline-delimited JSON on stdin/stdout, nothing else is written to stdout.
//   stdout, once Chromium is up:  {"ready": {"version": ..., "url": ...}}
//   stdin:  {"id": n, "cmd": "open_page"}                        fresh page, media permission
//           {"id": n, "cmd": "call", "fn": name, "args": [...]}  window.specterTest[name](...args)
//           {"id": n, "cmd": "close_page"}
//           {"id": n, "cmd": "open_url", "url": "http://127.0.0.1:port/..."}
//           {"id": n, "cmd": "eval", "body": "return await demo.peers()"}
//           {"id": n, "cmd": "screenshot", "path": "/abs/file.png"}
//           {"id": n, "cmd": "quit"}
//   stdout: {"id": n, "ok": result} or {"id": n, "error": message}
//           {"event": {...}}  from the page (window.specterEmit) and page errors
//           {"fatal": message} just before exiting on an unrecoverable error
// When stdin closes (the Elixir side went away) Chromium is closed and the driver exits.
//
// Network rule: nothing leaves 127.0.0.1. The page is served from 127.0.0.1, its
// RTCPeerConnections have no ICE servers, Chromium's background networking and mDNS are off
// and its host resolver answers NOTFOUND for every host name, so it sends no DNS query.
// Killing the VM closes the pipes: the driver then closes Chromium and exits too.
"use strict";

const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");
const readline = require("readline");
const { chromium } = require("playwright-core");

const EXECUTABLE = process.env.SPECTER_CHROMIUM || "/usr/lib/chromium/chromium";
const PAGE_JS = path.join(__dirname, "page.js");
const PAGE_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Specter interop</title></head>
<body><script src="/page.js"></script></body></html>
`;

// Playwright 1.60.0's own --disable-features list (chromiumSwitches.ts).
const PLAYWRIGHT_DISABLED_FEATURES = [
  "AvoidUnnecessaryBeforeUnloadCheckSync",
  "BoundaryEventDispatchTracksNodeRemoval",
  "DestroyProfileOnBrowserClose",
  "DialMediaRouteProvider",
  "GlobalMediaControls",
  "HttpsUpgrades",
  "LensOverlay",
  "MediaRouter",
  "PaintHolding",
  "ThirdPartyStoragePartitioning",
  "Translate",
  "AutoDeElevate",
  "RenderDocument",
  "OptimizationHints",
  "msForceBrowserSignIn",
  "msEdgeUpdateLaunchServicesPreferredVersion",
];

let context = null;
let page = null;
let server = null;
let userDataDir = null;
let shuttingDown = false;
let stdoutBroken = false;

const write = (obj) => {
  if (!stdoutBroken) process.stdout.write(JSON.stringify(obj) + "\n");
};
const emit = (event) => write({ event });

function serve() {
  const js = fs.readFileSync(PAGE_JS);
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      if (req.url === "/" || req.url === "/index.html") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
        res.end(PAGE_HTML);
      } else if (req.url === "/page.js") {
        res.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store" });
        res.end(js);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => resolve(srv));
  });
}

async function launch() {
  server = await serve();
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "specter-chromium-"));
  // launchPersistentContext is Playwright's way to pass --user-data-dir (a fresh temp dir).
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: EXECUTABLE,
    headless: true,
    timeout: 30_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream=fps=30",
      "--allow-loopback-in-peer-connection",
      // Belt and braces for the network rule: no DNS resolution at all (the page is an IP
      // literal), no crash reports, no pings.
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
      // Chromium's mDNS responder (which hides local addresses behind .local names) joins
      // 224.0.0.251 on every interface, and the kernel then sends IGMP reports on eth0.
      // Playwright passes its own --disable-features; repeating its list here keeps it in
      // force whether Chromium merges the two switches or keeps the last one.
      `--disable-features=${[...PLAYWRIGHT_DISABLED_FEATURES, "WebRtcHideLocalIpsWithMdns"].join(",")}`,
      "--disable-breakpad",
      "--no-pings",
      // For debugging, e.g. "--enable-logging=stderr --vmodule=*sctp*=2" (with DEBUG=pw:browser).
      ...(process.env.SPECTER_CHROMIUM_EXTRA_ARGS || "").split(" ").filter((a) => a !== ""),
    ],
  });
  context.on("close", () => {
    if (!shuttingDown) fatal("Chromium closed unexpectedly");
  });
  await context.exposeBinding("specterEmit", (_source, event) => emit(event));
  // A persistent context opens with one blank page; tests get fresh ones.
  for (const p of context.pages()) await p.close();
  const browser = context.browser();
  return { version: browser ? browser.version() : null, url: pageUrl() };
}

const pageUrl = () => `http://127.0.0.1:${server.address().port}/`;

async function openPage() {
  await closePage();
  page = await context.newPage();
  page.on("pageerror", (err) => emit({ type: "page_error", message: String(err && err.stack || err) }));
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning")
      emit({ type: "console", level: msg.type(), text: msg.text() });
  });
  page.on("crash", () => emit({ type: "page_crash" }));
  await page.goto(pageUrl(), { waitUntil: "load", timeout: 10_000 });
  const mediaKinds = await page.evaluate(() => window.specterTest.grantMediaPermission());
  const userAgent = await page.evaluate(() => navigator.userAgent);
  return { url: page.url(), userAgent, mediaKinds };
}

// A fresh page at any 127.0.0.1 URL (e.g. the signalling server's demo page), with camera
// and microphone permission granted to its origin.
async function openUrl(url) {
  if (!/^http:\/\/127\.0\.0\.1:\d+\//.test(url)) throw new Error(`not a 127.0.0.1 URL: ${url}`);
  await closePage();
  await context.grantPermissions(["camera", "microphone"], { origin: new URL(url).origin });
  page = await context.newPage();
  page.on("pageerror", (err) => emit({ type: "page_error", message: String(err && err.stack || err) }));
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning")
      emit({ type: "console", level: msg.type(), text: msg.text() });
  });
  page.on("crash", () => emit({ type: "page_crash" }));
  await page.goto(url, { waitUntil: "load", timeout: 10_000 });
  return { url: page.url() };
}

// Evaluates an async function body in the page: `return await demo.peers()`.
async function evalBody(body) {
  if (!page) throw new Error("no page open");
  return page.evaluate(`(async () => { ${body} })()`);
}

async function screenshot(path) {
  if (!page) throw new Error("no page open");
  await page.screenshot({ path, fullPage: true });
  return path;
}

async function closePage() {
  if (!page) return true;
  const p = page;
  page = null;
  try {
    await p.evaluate(() => window.specterTest && window.specterTest.closeAll());
  } catch (_) {
    // The page may be gone already.
  }
  await p.close();
  return true;
}

async function call(fn, args) {
  if (!page) throw new Error("no page open");
  return page.evaluate(
    ([name, argv]) => {
      const f = window.specterTest[name];
      if (typeof f !== "function") throw new Error(`unknown function ${name}`);
      return f(...argv);
    },
    [fn, args || []],
  );
}

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    write({ id: null, error: `bad command: ${e.message}` });
    return;
  }
  const { id } = msg;
  try {
    let result;
    switch (msg.cmd) {
      case "open_page":
        result = await openPage();
        break;
      case "call":
        result = await call(msg.fn, msg.args);
        break;
      case "close_page":
        result = await closePage();
        break;
      case "open_url":
        result = await openUrl(msg.url);
        break;
      case "eval":
        result = await evalBody(msg.body);
        break;
      case "screenshot":
        result = await screenshot(msg.path);
        break;
      case "quit":
        write({ id, ok: true });
        await shutdown(0);
        return;
      default:
        throw new Error(`unknown command ${msg.cmd}`);
    }
    write({ id, ok: result === undefined ? null : result });
  } catch (e) {
    write({ id, error: String(e && e.message ? e.message : e) });
  }
}

async function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  const deadline = setTimeout(() => process.exit(code || 1), 10_000);
  try {
    if (context) await context.close();
  } catch (_) {}
  try {
    if (server) server.close();
  } catch (_) {}
  try {
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  } catch (_) {}
  clearTimeout(deadline);
  process.exit(code);
}

function fatal(message) {
  try {
    write({ fatal: message });
  } finally {
    shutdown(1);
  }
}

// The Elixir side went away without closing stdin first (the VM was killed): EPIPE.
process.stdout.on("error", () => {
  stdoutBroken = true;
  shutdown(0);
});
process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
process.on("SIGHUP", () => shutdown(0));
const onError = (what) => (e) => {
  if (shuttingDown) return;
  fatal(`${what}: ${e && e.stack ? e.stack : e}`);
};
process.on("uncaughtException", onError("uncaught exception"));
process.on("unhandledRejection", onError("unhandled rejection"));
// Whatever the way out (Playwright kills Chromium in its own exit handler).
process.on("exit", () => {
  try {
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  } catch (_) {}
});

(async () => {
  let ready;
  try {
    ready = await launch();
  } catch (e) {
    fatal(`launch failed: ${e && e.message ? e.message : e}`);
    return;
  }
  write({ ready });
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  rl.on("line", (line) => {
    if (line.trim() !== "") handle(line);
  });
  rl.on("close", () => shutdown(0));
})();
