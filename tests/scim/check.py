"""Runs the independent SCIM compliance checker (PyPI scim2-tester) against a live storegate.

Usage: check.py BASE_URL TOKEN
Prints one line per check; exits 1 when any check is ERROR or CRITICAL, 2 when the run itself
fails. Installed by scripts/test-deps.sh into .venv (versions pinned there).
"""

import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


def main() -> int:
    base, token = sys.argv[1], sys.argv[2]
    http = Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    scim = SyncSCIMClient(http)
    scim.discover()
    results = check_server(scim)
    bad = 0
    for r in results:
        line = f"{r.status.name:10} [{r.resource_type or '-'}] {r.title}"
        if r.reason:
            line += f" -- {r.reason}"
        print(line)
        if r.status in (Status.ERROR, Status.CRITICAL):
            bad += 1
    print(f"TOTAL {len(results)} checks, {bad} ERROR/CRITICAL")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report any failure of the run itself
        print(f"RUN FAILED: {type(e).__name__}: {e}")
        sys.exit(2)
