#!/usr/bin/env bash
# Installs the Debian packages needed to *build* storegate, and any extra packages named as
# arguments, when missing; quiet and quick when everything is there.
#   - libxmlsec1-dev, libxml2-dev: headers of the SAML verifier (samael's xmlsec feature);
#   - libclang-dev: bindgen, which generates samael's xmlsec bindings at build time;
#   - libssl-dev, pkg-config: OpenSSL, and how the build finds all of the above.
# `make demo` runs it alone; scripts/test-deps.sh (`make test`) runs it with the programs the
# tests need as arguments, so there is one `apt-get update` and one install at most.
# `apt-get update` only runs if something is missing; `sudo` is used when not root.
# SKIP_APT=1 skips it (e.g. on a machine you do not administer).
set -euo pipefail

BUILD_PACKAGES=(libxmlsec1-dev libxml2-dev libssl-dev pkg-config libclang-dev)

[[ "${SKIP_APT:-}" == 1 ]] && exit 0

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in "${BUILD_PACKAGES[@]}" "$@"; do
    installed "$pkg" || missing+=("$pkg")
done
((${#missing[@]})) || exit 0

echo "build-deps: installing Debian packages: ${missing[*]}"
sudo=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || {
        echo "build-deps: not root and no sudo; install these yourself: ${missing[*]}" >&2
        exit 1
    }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run instead of failing on its lock.
lock=(-o DPkg::Lock::Timeout=600)
"${sudo[@]}" apt-get "${lock[@]}" update -qq
"${sudo[@]}" apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}"
