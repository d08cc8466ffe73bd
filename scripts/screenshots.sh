#!/usr/bin/env bash
# Regenerates docs/img/portal.png (the README's picture), docs/img/portal-320.png and
# docs/img/console.png (the IT console's status page) from `storegate demo` (development IdP and
# simulated storefronts), in headless Chromium through tests/peers/axe/browse.mjs. Needs
# `make deps` (chromium, node, tests/peers/axe). Nothing is downloaded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT=${SCREENSHOT_PORT:-18091}
BASE="http://127.0.0.1:$PORT"
mkdir -p docs/img
cargo build --quiet --features devkit   # the demo (development IdP, simulator) is devkit-only
target/debug/storegate demo --listen "127.0.0.1:$PORT" >/tmp/storegate-screenshots.log 2>&1 &
DEMO=$!
trap 'kill "$DEMO" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
STEPS=$(cat <<JSON
[
  {"viewport": {"width": 1100, "height": 700}},
  {"goto": "$BASE/login"},
  {"click": "form[action='authorize/pick'] button"},
  {"eval": "location.pathname"},
  {"screenshot": "docs/img/portal.png"},
  {"viewport": {"width": 320, "height": 640}},
  {"goto": "$BASE/?q=store"},
  {"screenshot": "docs/img/portal-320.png"}
]
JSON
)
node tests/peers/axe/browse.mjs "$STEPS"
# The console, as the demo's IT user (the demo's [admin] rule admits her group), in a fresh
# browser: a new sign-in.
CONSOLE=$(cat <<JSON
[
  {"viewport": {"width": 1100, "height": 700}},
  {"goto": "$BASE/login"},
  {"click": "form[action='authorize/pick']:has(input[value='demo-ivy']) button"},
  {"goto": "$BASE/admin/status"},
  {"eval": "document.querySelector('h1').textContent"},
  {"screenshot": "docs/img/console.png"}
]
JSON
)
node tests/peers/axe/browse.mjs "$CONSOLE"
echo "screenshots: docs/img/portal.png docs/img/portal-320.png docs/img/console.png"
