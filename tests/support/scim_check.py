"""The third-party SCIM compliance checker (scim2-tester) against a running FluxGate.

Usage: scim_check.py SCIM_BASE_URL API_KEY

Runs every check scim2-tester has (discovery, CRUD, PATCH add/replace/remove on every attribute
the server's schemas publish, attribute queries, random URLs) and prints one line per check.
Exits 1 when any check ends in ERROR: a failure of what the server says it supports.
"""

import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

base, key = sys.argv[1], sys.argv[2]
http = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
client = SyncSCIMClient(http)
results = check_server(client)
errors = 0
for r in results:
    resource = f" [{r.resource_type}]" if getattr(r, "resource_type", None) else ""
    line = f"{r.status.name:<10} {r.title}{resource}"
    if r.status == Status.ERROR:
        errors += 1
        line += f": {r.reason}"
    print(line)
print(f"{len(results)} checks, {errors} errors")
print("scim-check: ok" if errors == 0 else "scim-check: FAILED")
sys.exit(1 if errors else 0)
