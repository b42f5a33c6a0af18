#!/usr/bin/env node
// Drives a headless browser for Specter's browser interop tests (test/support/browser.ex
// starts it as a Port): Debian's Chromium through Playwright (CDP over a pipe), or Debian's
// Firefox ESR through Puppeteer (WebDriver BiDi). SPECTER_BROWSER=chromium|firefox chooses;
// SPECTER_CHROMIUM / SPECTER_FIREFOX name the binaries. Neither library downloads a browser.
//
// Protocol: newline-delimited JSON on stdin/stdout, nothing else is written to stdout.
//   stdout, once the browser is up:  {"ready": {"browser": ..., "version": ..., "url": ...}}
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
// When stdin closes (the Elixir side went away) the browser is closed and the driver exits.
//
// Network rule: nothing leaves 127.0.0.1. The page is served from 127.0.0.1, its
// RTCPeerConnections have no ICE servers. Chromium's background networking and mDNS are off
// and its host resolver answers NOTFOUND for every host name, so it sends no DNS query.
// Firefox's update, telemetry, remote-settings, captive-portal and safebrowsing services are
// off or pointed nowhere, and all its HTTP(S) goes to a dead SOCKS proxy on 127.0.0.1:9 with
// remote DNS (WebRTC's UDP is not proxied; 127.0.0.1 itself is never proxied).
// Killing the VM closes the pipes: the driver then closes the browser and exits too.
"use strict";

const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");
const readline = require("readline");

const BROWSER = process.env.SPECTER_BROWSER || "chromium";
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

// Firefox preferences (user.js of a fresh profile), on top of Puppeteer's own defaults
// (which already disable updates, safebrowsing lists, normandy, health reports...).
const FIREFOX_PREFS = {
  // Fake camera and microphone, no permission prompt.
  "media.navigator.streams.fake": true,
  "media.navigator.permission.disabled": true,
  "media.navigator.permission.fake": true,
  // Host candidates on 127.0.0.1 (only gathered while the page captures), with their real
  // addresses (no mDNS names), UDP only, and no default STUN server.
  "media.peerconnection.ice.loopback": true,
  "media.peerconnection.ice.obfuscate_host_addresses": false,
  "media.peerconnection.ice.tcp": false,
  "media.peerconnection.default_iceservers": "[]",
  "media.peerconnection.identity.enabled": false,
  // No autoplay blocking for the <video>/<audio> sinks.
  "media.autoplay.default": 0,
  "media.autoplay.blocking_policy": 0,
  // Firefox's own network traffic: every service off or pointed nowhere...
  "app.update.enabled": false,
  "app.update.auto": false,
  "app.update.url": "",
  "app.update.url.manual": "",
  "app.update.url.details": "",
  "app.normandy.enabled": false,
  "app.shield.optoutstudies.enabled": false,
  "browser.discovery.enabled": false,
  "browser.newtabpage.activity-stream.feeds.section.topstories": false,
  "browser.newtabpage.activity-stream.feeds.snippets": false,
  "browser.newtabpage.activity-stream.telemetry": false,
  "browser.ping-centre.telemetry": false,
  "browser.region.network.url": "",
  "browser.region.update.enabled": false,
  "browser.safebrowsing.provider.google.updateURL": "",
  "browser.safebrowsing.provider.google.gethashURL": "",
  "browser.safebrowsing.provider.google4.updateURL": "",
  "browser.safebrowsing.provider.google4.gethashURL": "",
  "browser.safebrowsing.provider.mozilla.updateURL": "",
  "browser.safebrowsing.provider.mozilla.gethashURL": "",
  "browser.search.geoip.url": "",
  "captivedetect.canonicalURL": "",
  "datareporting.policy.dataSubmissionEnabled": false,
  "dom.push.connection.enabled": false,
  "dom.push.serverURL": "",
  "extensions.blocklist.enabled": false,
  "extensions.systemAddon.update.enabled": false,
  "extensions.systemAddon.update.url": "",
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "network.dns.disablePrefetch": true,
  "network.predictor.enabled": false,
  "network.prefetch-next": false,
  "network.trr.mode": 5,
  // Release builds honour this only with MOZ_REMOTE_SETTINGS_DEVTOOLS=1 in the environment.
  "services.settings.server": "http://127.0.0.1:9/v1",
  "toolkit.telemetry.enabled": false,
  "toolkit.telemetry.unified": false,
  "toolkit.telemetry.archive.enabled": false,
  "toolkit.telemetry.server": "",
  "toolkit.telemetry.shutdownPingSender.enabled": false,
  "toolkit.telemetry.newProfilePing.enabled": false,
  "toolkit.telemetry.firstShutdownPing.enabled": false,
  "toolkit.telemetry.updatePing.enabled": false,
  "toolkit.telemetry.bhrPing.enabled": false,
  // ... and whatever is left goes to a dead SOCKS proxy (resolving names there too), never
  // to the network. 127.0.0.1 (the page, WebDriver BiDi) is not proxied.
  "network.proxy.type": 1,
  "network.proxy.socks": "127.0.0.1",
  "network.proxy.socks_port": 9,
  "network.proxy.socks_version": 5,
  "network.proxy.socks_remote_dns": true,
  "network.proxy.no_proxies_on": "127.0.0.1,localhost,::1",
  "network.proxy.allow_hijacking_localhost": false,
};

// One backend per browser: launch() starts it with a fresh profile in userDataDir and
// returns its version; newPage() opens a page on which window.specterEmit(event) reaches
// emit(); grant(origin) gives camera and microphone permission to an origin.
// keepCapturing: the page must keep its fake camera running for the browser to gather a
// 127.0.0.1 candidate (Firefox), rather than only hold the permission (Chromium).
const BACKENDS = {
  chromium: {
    name: "chromium",
    keepCapturing: false,
    async launch(userDataDir) {
      const { chromium } = require("playwright-core");
      // launchPersistentContext is Playwright's way to pass --user-data-dir.
      const context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: process.env.SPECTER_CHROMIUM || "/usr/lib/chromium/chromium",
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
      this.context = context;
      const browser = context.browser();
      return browser ? browser.version() : null;
    },
    async newPage() {
      const p = await this.context.newPage();
      p.on("crash", () => emit({ type: "page_crash" }));
      return p;
    },
    grant(origin) {
      return this.context.grantPermissions(["camera", "microphone"], { origin });
    },
    close() {
      return this.context && this.context.close();
    },
  },

  firefox: {
    name: "firefox",
    keepCapturing: true,
    async launch(userDataDir) {
      const puppeteer = require("puppeteer-core");
      const extra = process.env.SPECTER_FIREFOX_EXTRA_PREFS
        ? JSON.parse(process.env.SPECTER_FIREFOX_EXTRA_PREFS)
        : {};
      const browser = await puppeteer.launch({
        browser: "firefox",
        protocol: "webDriverBiDi",
        executablePath: process.env.SPECTER_FIREFOX || "/usr/lib/firefox-esr/firefox-esr",
        headless: true,
        userDataDir,
        timeout: 30_000,
        extraPrefsFirefox: { ...FIREFOX_PREFS, ...extra },
        env: { ...process.env, MOZ_REMOTE_SETTINGS_DEVTOOLS: "1" },
        // Firefox's own output (SPECTER_FIREFOX_DUMPIO=1) goes to stderr, never stdout.
        dumpio: false,
      });
      if (process.env.SPECTER_FIREFOX_DUMPIO === "1") {
        const proc = browser.process();
        if (proc) {
          proc.stdout && proc.stdout.pipe(process.stderr);
          proc.stderr && proc.stderr.pipe(process.stderr);
        }
      }
      browser.on("disconnected", () => {
        if (!shuttingDown) fatal("Firefox closed unexpectedly");
      });
      // The first tab stays open (blank) for the browser's lifetime: closing a window's
      // last tab would close the window.
      this.browser = browser;
      return browser.version();
    },
    async newPage() {
      const p = await this.browser.newPage();
      p.on("error", (err) => emit({ type: "page_crash", message: String(err) }));
      // Installed before any script of the page runs, and on every navigation.
      await p.exposeFunction("specterEmit", (event) => emit(event));
      return p;
    },
    // media.navigator.permission.disabled: every origin may capture the fake devices.
    grant(_origin) {},
    close() {
      return this.browser && this.browser.close();
    },
  },
};

const backend = BACKENDS[BROWSER];

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
  if (!backend) throw new Error(`unknown browser ${BROWSER} (SPECTER_BROWSER=chromium|firefox)`);
  server = await serve();
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), `specter-${backend.name}-`));
  const version = await backend.launch(userDataDir);
  return { browser: backend.name, version, url: pageUrl() };
}

const pageUrl = () => `http://127.0.0.1:${server.address().port}/`;

async function newPage() {
  const p = await backend.newPage();
  p.on("pageerror", (err) => emit({ type: "page_error", message: String((err && err.stack) || err) }));
  p.on("console", (msg) => {
    // Playwright says "warning", Puppeteer "warn".
    const level = msg.type() === "warn" ? "warning" : msg.type();
    if (level === "error" || level === "warning") emit({ type: "console", level, text: msg.text() });
  });
  return p;
}

async function openPage() {
  await closePage();
  page = await newPage();
  await page.goto(pageUrl(), { waitUntil: "load", timeout: 10_000 });
  const mediaKinds = await page.evaluate(
    (keep) => window.specterTest.grantMediaPermission(keep),
    backend.keepCapturing,
  );
  const userAgent = await page.evaluate(() => navigator.userAgent);
  return { url: page.url(), browser: backend.name, userAgent, mediaKinds };
}

// A fresh page at any 127.0.0.1 URL (e.g. the signalling server's demo page), with camera
// and microphone permission granted to its origin.
async function openUrl(url) {
  if (!/^http:\/\/127\.0\.0\.1:\d+\//.test(url)) throw new Error(`not a 127.0.0.1 URL: ${url}`);
  await closePage();
  await backend.grant(new URL(url).origin);
  page = await newPage();
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
    await backend.close();
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
// Whatever the way out (Playwright and Puppeteer kill the browser in their own exit handlers).
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
