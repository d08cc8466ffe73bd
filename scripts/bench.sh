#!/usr/bin/env bash
# `make bench`: every benchmark in one run (release build, bench profile), each one's output kept in
# target/bench/<name>.log, then one summary of every row that has a target: the machine, its load
# before and after, and each row's figure beside its target with "holds" or "does not hold", as the
# benches printed them (issue 15: one run, every target). Exit status: that of the first bench that
# failed (a bench fails when it cannot measure what it claims), after the others ran.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO=${CARGO:-cargo}
BENCHES=${BENCHES:-"policy leaver_check launch provisioning saml audit forward_auth scim_scale proxy control_panel"}
LOGS=${CARGO_TARGET_DIR:-target}/bench
mkdir -p "$LOGS"

load() { cut -d' ' -f1-3 /proc/loadavg; }
started=$(date -u +%Y-%m-%dT%H:%MZ)
load_before=$(load)

# Build every bench first, so no bench's figures include another one's compilation.
if ! $CARGO bench --no-run $(for b in $BENCHES; do printf -- '--bench %s ' "$b"; done); then
    echo "make bench: the benches did not build" >&2
    exit 1
fi

status=0
for b in $BENCHES; do
    echo "==> cargo bench --bench $b"
    $CARGO bench --bench "$b" 2>&1 | tee "$LOGS/$b.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "make bench: $b failed (exit $rc); its log: $LOGS/$b.log" >&2
        [ "$status" -eq 0 ] && status=$rc
    fi
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "## make bench summary: every row with a target"
echo
echo "machine: $(nproc) core(s), ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ {print $2}') GiB; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "started $started, load average before $load_before, after $(load)"
echo "(full output of each bench: $LOGS/<name>.log)"
for b in $BENCHES; do
    [ -f "$LOGS/$b.log" ] || continue
    # A row with a target ends with its verdict; the bench's own table header is left out.
    rows=$(grep -E '(holds|does not hold)' "$LOGS/$b.log" | grep -vE '^\| *path *\|' | grep -vE '^ *(//|caveat)')
    [ -n "$rows" ] || continue
    echo
    echo "### $b"
    echo "$rows"
done
exit "$status"
