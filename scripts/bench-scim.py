"""Provisioning through SCIM at scale, against the release binary on a fresh SQLite database (or
PostgreSQL with --database-url): 10,000 users and 500 groups of 20 members, as an identity
provider pushes them (a userName lookup before each create, then the create; groups created
with their members), from CONCURRENCY clients.

Usage: bench-scim.py FLUXGATE_BINARY [--users N] [--groups N] [--concurrency N] [--database-url URL]

Prints users per second, groups per second, the latency of a create (median, p99) and the
server's resident memory afterwards.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))
import interop  # noqa: E402

ADMIN_PASSWORD = "Bench-Admin-Pass-1"


def start(binary, data, database_url):
    env = dict(
        os.environ,
        FLUXGATE_LISTEN="127.0.0.1:0",
        FLUXGATE_DATABASE_URL=database_url or f"sqlite://{data}/fluxgate.db",
        FLUXGATE_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD,
    )
    p = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        m = re.match(r"FluxGate listening on (\S+)", line)
        if m:
            return p, m.group(1)
    raise SystemExit("the server did not start")


def provisioning_key(addr):
    import grpc

    out = tempfile.mkdtemp()
    interop.generate(out)
    from fluxgate.v1 import auth_pb2, auth_pb2_grpc, catalog_pb2, catalog_pb2_grpc
    from fluxgate.v1 import service_accounts_pb2 as sa, service_accounts_pb2_grpc as sa_grpc

    ch = grpc.insecure_channel(addr)
    token = auth_pb2_grpc.AuthServiceStub(ch).Login(auth_pb2.LoginRequest(username="admin", password=ADMIN_PASSWORD)).tokens.access_token
    md = [("authorization", f"Bearer {token}")]
    catalog_pb2_grpc.CatalogServiceStub(ch).CreatePortfolio(
        catalog_pb2.CreatePortfolioRequest(portfolio=catalog_pb2.Portfolio(display_name="Payments")), metadata=md
    )
    stub = sa_grpc.ServiceAccountServiceStub(ch)
    acct = stub.CreateServiceAccount(
        sa.CreateServiceAccountRequest(service_account=sa.ServiceAccount(display_name="bench", provisioner=True)), metadata=md
    ).service_account
    return stub.CreateServiceAccountKey(
        sa.CreateServiceAccountKeyRequest(parent=acct.name, key=sa.ServiceAccountKey(display_name="bench")), metadata=md
    ).secret


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--groups", type=int, default=500)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--database-url")
    a = ap.parse_args()
    data = tempfile.mkdtemp()
    if a.database_url:
        # A schema of its own, dropped afterwards.
        schema = f"bench_scim_{os.getpid()}"
        subprocess.run(["psql", a.database_url, "-qc", f"CREATE SCHEMA {schema}"], check=True)
        sep = "&" if "?" in a.database_url else "?"
        pg_base, a.database_url = a.database_url, f"{a.database_url}{sep}options=-csearch_path%3D{schema}"
    proc, addr = start(a.binary, data, a.database_url)
    try:
        key = provisioning_key(addr)
        base = f"http://{addr}/scim/v2"
        local = __import__("threading").local()

        def client():
            if not hasattr(local, "c"):
                local.c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            return local.c

        def user(i):
            name = f"user{i:05d}@example.com"
            t0 = time.perf_counter()
            r = client().get("/Users", params={"filter": f'userName eq "{name}"'})
            assert r.status_code == 200 and r.json()["totalResults"] == 0, r.text
            r = client().post("/Users", json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": name,
                "name": {"givenName": "User", "familyName": f"{i:05d}"},
                "emails": [{"value": name, "primary": True, "type": "work"}],
                "displayName": f"User {i:05d}",
                "externalId": f"ext-{i}",
                "active": True,
            })
            assert r.status_code == 201, r.text
            return r.json()["id"], time.perf_counter() - t0

        t = time.perf_counter()
        with ThreadPoolExecutor(a.concurrency) as pool:
            done = list(pool.map(user, range(a.users)))
        users_secs = time.perf_counter() - t
        ids = [d[0] for d in done]
        lat = sorted(d[1] for d in done)

        def group(g):
            members = [{"value": ids[(g * a.members + j) % len(ids)]} for j in range(a.members)]
            r = client().post("/Groups", json={"displayName": f"Payments/Team {g:03d}", "members": members})
            assert r.status_code == 201, r.text

        t = time.perf_counter()
        with ThreadPoolExecutor(a.concurrency) as pool:
            list(pool.map(group, range(a.groups)))
        groups_secs = time.perf_counter() - t
        backend = "PostgreSQL" if a.database_url else "SQLite"
        print(f"SCIM provisioning on {backend}, {a.concurrency} clients:")
        print(f"  {a.users} users (lookup + create each) in {users_secs:.1f} s: {a.users / users_secs:.0f} users/s")
        print(f"  create latency (lookup + create): median {statistics.median(lat) * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms")
        print(f"  {a.groups} groups of {a.members} members in {groups_secs:.1f} s: {a.groups / groups_secs:.0f} groups/s")
        print(f"  server RSS afterwards: {rss_mib(proc.pid):.0f} MiB")
    finally:
        proc.terminate()
        proc.wait()
        if a.database_url:
            subprocess.run(["psql", pg_base, "-qc", f"DROP SCHEMA {schema} CASCADE"], check=False, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
