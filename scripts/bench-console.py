"""The web console's budgets, measured in headless Chromium against the release binary.

Usage: bench-console.py FLUXGATE_BINARY [USERS]

Starts `fluxgate serve` on a fresh SQLite database, creates USERS users (default 10,000) over
gRPC, then measures: the first load (compressed JavaScript + CSS the browser fetched), the time
until the sign-in page is interactive (median and worst of 10 cold loads), and the users page
(rows and bytes loaded, time to first rows, to each next page while scrolling, to a search's
answer). Prints a Markdown section on stdout; progress on stderr. Used by `make bench`.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from playwright.sync_api import sync_playwright

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "support"))
import interop  # noqa: E402
from console_test import ARGS, CHROMIUM  # noqa: E402  (the same browser as the tests)

ADMIN_PASSWORD = "Bench-Admin-Pass-1"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def start(binary, data):
    env = dict(
        os.environ,
        FLUXGATE_LISTEN="127.0.0.1:0",
        FLUXGATE_DATABASE_URL=f"sqlite://{data}/fluxgate.db",
        FLUXGATE_BOOTSTRAP_PASSWORD=ADMIN_PASSWORD,
    )
    p = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        m = re.match(r"FluxGate listening on (\S+)", line)
        if m:
            return p, m.group(1)
    raise SystemExit("the server did not start")


def seed(addr, n):
    import grpc

    out = tempfile.mkdtemp()
    interop.generate(out)
    from fluxgate.v1 import auth_pb2, auth_pb2_grpc, common_pb2, users_pb2, users_pb2_grpc

    ch = grpc.insecure_channel(addr)
    token = auth_pb2_grpc.AuthServiceStub(ch).Login(
        auth_pb2.LoginRequest(username="admin", password=ADMIN_PASSWORD)
    ).tokens.access_token
    md = [("authorization", f"Bearer {token}")]
    users = users_pb2_grpc.UserServiceStub(ch)

    def one(i):
        users.CreateUser(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(
                    username=f"user{i:05d}",
                    email=f"user{i:05d}@example.com",
                    display_name=f"User {i:05d}",
                    role=common_pb2.ROLE_REQUESTER,
                )
            ),
            metadata=md,
        )

    t = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    log(f"seeded {n} users in {time.time() - t:.1f} s")


def first_load(browser, base):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(base + "/")
    page.get_by_role("button", name="Sign in").wait_for()
    entries = page.evaluate(
        """() => performance.getEntriesByType('resource')
             .concat(performance.getEntriesByType('navigation'))
             .map(e => [e.name, e.encodedBodySize, e.decodedBodySize])"""
    )
    ctx.close()
    js_css = [(n, enc, dec) for n, enc, dec in entries if n.endswith((".js", ".css"))]
    return sum(e for _, e, _ in js_css), sum(d for _, _, d in js_css), entries


def interactive(browser, base, runs=10):
    times = []
    for _ in range(runs):
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(base + "/")
        page.get_by_role("button", name="Sign in").wait_for()
        page.get_by_label("Username or email").wait_for(state="visible")
        times.append(page.evaluate("() => performance.now()"))
        ctx.close()
    return statistics.median(times), max(times)


def users_page(browser, base):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    calls = []
    page.on(
        "request",
        lambda r: calls.append(r.url) if "UserService/ListUsers" in r.url else None,
    )
    page.goto(base + "/")
    page.get_by_label("Username or email").fill("admin")
    page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("whoami").wait_for()
    rows = page.locator("tbody tr")
    t = time.perf_counter()
    page.goto(base + "/users")
    page.wait_for_function("() => document.querySelectorAll('tbody tr').length >= 50")
    first = (time.perf_counter() - t) * 1000
    pages = []
    for want in (100, 150, 200):
        t = time.perf_counter()
        page.mouse.wheel(0, 100_000)
        page.wait_for_function(f"() => document.querySelectorAll('tbody tr').length >= {want}")
        pages.append((time.perf_counter() - t) * 1000)
    loaded = rows.count()
    t = time.perf_counter()
    page.get_by_label("Search").fill("user09999")
    page.wait_for_function("() => document.querySelectorAll('tbody tr').length === 1")
    search = (time.perf_counter() - t) * 1000
    heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : 0")
    ctx.close()
    return first, pages, loaded, len(calls), search, heap


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    data = tempfile.mkdtemp()
    server, addr = start(binary, data)
    base = f"http://{addr}"
    try:
        seed(addr, n)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            enc, dec, _ = first_load(browser, base)
            med, worst = interactive(browser, base)
            first, pages, loaded, calls, search, heap = users_page(browser, base)
            browser.close()
    finally:
        server.terminate()
        server.wait()
    print(f"Headless Chromium on loopback, release binary, SQLite, {n:,} users.")
    print()
    print("| measure | result | budget |")
    print("|---|---|---|")
    print(f"| first load: JavaScript + CSS, compressed | {enc / 1024:.1f} KiB ({dec / 1024:.1f} KiB uncompressed) | ≤ 200 KB |")
    print(f"| sign-in page interactive (10 cold loads) | median {med:.0f} ms, worst {worst:.0f} ms | < 1 s |")
    print(f"| users page: first 50 rows | {first:.0f} ms | |")
    print(
        "| users page: each next 50 while scrolling | "
        + ", ".join(f"{x:.0f} ms" for x in pages)
        + " | |"
    )
    print(f"| users page: rows in the page after 3 scrolls | {loaded} of {n + 1:,} ({calls} ListUsers calls) | never all |")
    print(f"| users page: search among {n:,} to its 1 row | {search:.0f} ms (incl. 200 ms typing pause) | |")
    print(f"| users page: JavaScript heap | {heap / 1048576:.1f} MiB | |")


if __name__ == "__main__":
    main()
