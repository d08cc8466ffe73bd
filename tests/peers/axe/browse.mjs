// Drives headless Chromium over the DevTools protocol (a pipe, no extra package) through a list
// of steps, and prints one JSON result per step. Used by tests/it/accessibility.rs (axe-core,
// keyboard and search checks) and scripts/screenshots.sh.
//
//   node browse.mjs '<steps JSON>'
//
// Steps (objects, run in order):
//   {"cookie": {"name", "value", "url"}}   set a cookie before navigating
//   {"viewport": {"width", "height"}}      emulate a screen size (mobile below 600 px)
//   {"goto": URL}                          navigate and wait for the load event
//   {"axe": true}                          run axe-core; result: the violations
//   {"key": "Tab" | "Enter" | "Escape", "shift": bool}   press a key in the page
//        with "waitForLoad": true, wait for the page it leads to; with "waitForDownload": true,
//        for the download it starts (result: {url, filename, text} of the downloaded file)
//   {"type": TEXT}                         type text into the focused element
//   {"click": SELECTOR}                    click an element and wait for the next page
//   {"eval": JS}                           evaluate an expression; result: its JSON value
//   {"screenshot": PATH}                   save a PNG of the whole page
// Chromium is $CHROMIUM or `chromium`; it never reaches the network beyond the URLs given.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const steps = JSON.parse(process.argv[2] ?? "[]");
const profile = mkdtempSync(join(tmpdir(), "storegate-chromium-"));
const chrome = spawn(process.env.CHROMIUM || "chromium", [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--remote-debugging-pipe", `--user-data-dir=${profile}`, "--no-first-run",
  "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
  "--disable-sync", "--disable-component-update", "--mute-audio", "--hide-scrollbars",
  "--font-render-hinting=none", "about:blank",
], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let stderr = "";
chrome.stderr.on("data", (d) => { stderr += d; });
const toChrome = chrome.stdio[3];
const fromChrome = chrome.stdio[4];

let nextId = 1;
const waiting = new Map();
const listeners = [];
let buffer = Buffer.alloc(0);
fromChrome.on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  let end;
  while ((end = buffer.indexOf(0)) >= 0) {
    const msg = JSON.parse(buffer.subarray(0, end).toString("utf8"));
    buffer = buffer.subarray(end + 1);
    if (msg.id && waiting.has(msg.id)) {
      const { resolve, reject } = waiting.get(msg.id);
      waiting.delete(msg.id);
      if (msg.error) { reject(new Error(`${msg.error.message} ${msg.error.data ?? ""}`)); } else { resolve(msg.result); }
    } else if (msg.method) {
      for (const l of listeners.slice()) { l(msg); }
    }
  }
});

function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) { msg.sessionId = sessionId; }
  toChrome.write(JSON.stringify(msg) + "\0");
  return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
}

function once(method, sessionId, limitMs = 30000, matches = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${method} within ${limitMs} ms`)), limitMs);
    const l = (msg) => {
      if (msg.method === method && msg.sessionId === sessionId && matches(msg.params)) {
        clearTimeout(timer);
        listeners.splice(listeners.indexOf(l), 1);
        resolve(msg.params);
      }
    };
    listeners.push(l);
  });
}

async function evaluate(s, expression) {
  const r = await send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true }, s);
  if (r.exceptionDetails) {
    throw new Error(`page script failed: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
  }
  return r.result.value;
}

const KEYS = {
  Tab: { code: "Tab", keyCode: 9 },
  Enter: { code: "Enter", keyCode: 13, text: "\r" },
  Escape: { code: "Escape", keyCode: 27 },
  Space: { code: "Space", keyCode: 32, text: " ", key: " " },
};

// Downloads go to a fresh directory, named by their guid; the returned function waits for the
// next one to finish and reads it (browser-level events: no session id).
async function expectDownload() {
  const dir = mkdtempSync(join(tmpdir(), "storegate-download-"));
  await send("Browser.setDownloadBehavior", { behavior: "allowAndName", downloadPath: dir, eventsEnabled: true });
  const begun = once("Browser.downloadWillBegin", undefined);
  const done = once("Browser.downloadProgress", undefined, 30000, (p) => p.state === "completed");
  return async () => {
    const b = await begun;
    await done;
    const text = readFileSync(join(dir, b.guid), "utf8");
    rmSync(dir, { recursive: true, force: true });
    return { url: b.url, filename: b.suggestedFilename, text };
  };
}

async function main() {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId: s } = await send("Target.attachToTarget", { targetId, flatten: true });
  await send("Page.enable", {}, s);
  await send("Network.enable", {}, s);
  // axe-core is injected by the test, not served by the gateway: the page's own policy (no
  // inline script) would otherwise refuse it.
  await send("Page.setBypassCSP", { enabled: true }, s);
  const results = [];
  for (const step of steps) {
    if (step.cookie) {
      await send("Network.setCookie", step.cookie, s);
      results.push(true);
    } else if (step.viewport) {
      const { width, height } = step.viewport;
      await send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: width < 600 }, s);
      results.push(true);
    } else if (step.goto) {
      const loaded = once("Page.loadEventFired", s);
      const nav = await send("Page.navigate", { url: step.goto }, s);
      if (nav.errorText) { throw new Error(`cannot open ${step.goto}: ${nav.errorText}`); }
      await loaded;
      results.push(await evaluate(s, "location.pathname + location.search"));
    } else if (step.axe) {
      await evaluate(s, readFileSync(join(here, "node_modules/axe-core/axe.min.js"), "utf8"));
      const v = await evaluate(s, `axe.run(document, { resultTypes: ["violations"] }).then(r => r.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary) })))`);
      results.push(v);
    } else if (step.key) {
      const k = KEYS[step.key] ?? { code: step.key, keyCode: 0 };
      const base = { key: k.key ?? step.key, code: k.code, windowsVirtualKeyCode: k.keyCode, modifiers: step.shift ? 8 : 0 };
      const navigates = step.key === "Enter" && step.waitForLoad;
      const loaded = navigates ? once("Page.loadEventFired", s) : null;
      const download = step.waitForDownload ? await expectDownload() : null;
      await send("Input.dispatchKeyEvent", { type: "keyDown", ...base, text: k.text }, s);
      await send("Input.dispatchKeyEvent", { type: "keyUp", ...base }, s);
      if (loaded) { await loaded; }
      results.push(download ? await download() : true);
    } else if (step.type !== undefined) {
      await send("Input.insertText", { text: step.type }, s);
      results.push(true);
    } else if (step.click) {
      // Clicks the element matching the selector and waits for the page it leads to.
      const loaded = once("Page.loadEventFired", s);
      await evaluate(s, `document.querySelector(${JSON.stringify(step.click)}).click()`);
      await loaded;
      results.push(await evaluate(s, "location.pathname + location.search"));
    } else if (step.eval) {
      results.push(await evaluate(s, step.eval));
    } else if (step.screenshot) {
      const { data } = await send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true }, s);
      writeFileSync(step.screenshot, Buffer.from(data, "base64"));
      results.push(step.screenshot);
    } else {
      throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
  }
  return results;
}

let code = 0;
try {
  const results = await main();
  process.stdout.write(JSON.stringify(results) + "\n");
} catch (e) {
  process.stderr.write(`browse.mjs: ${e.message}\n${stderr.slice(-2000)}\n`);
  code = 1;
} finally {
  await Promise.race([send("Browser.close").catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  if (chrome.exitCode === null) {
    const exited = new Promise((r) => chrome.once("exit", r));
    chrome.kill("SIGKILL");
    await exited;
  }
  try { rmSync(profile, { recursive: true, force: true, maxRetries: 3 }); } catch { /* a temp folder */ }
  process.exit(code);
}
