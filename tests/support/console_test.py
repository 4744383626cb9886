"""The web console in a real browser: headless Chromium (Debian's) driven by Playwright, against
a running FluxGate whose console is at BASE_URL and whose gRPC port is HOST:PORT.

Usage: console_test.py BASE_URL HOST:PORT ADMIN_PASSWORD SCREENSHOT_DIR

Each flow is a function below; every page it visits is checked with axe-core (no serious or
critical violation). Prints "console: ok" and exits 0 when every flow behaves; raises (exit 1)
at the first one that does not, with a screenshot of the failing page in SCREENSHOT_DIR.
"""

import os
import re
import sys
import tempfile
import time

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402  (stub generation from proto/)

CHROMIUM = os.environ.get("FLUXGATE_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STRONG = "Sturdy-Passw0rd-42"
STRONGER = "Even-Sturdier-Passw0rd-7"

expect.set_options(timeout=10_000)


class Outbox:
    """The server's email outbox, read over gRPC as a Team Admin (the links users get)."""

    def __init__(self, addr, admin_password):
        import grpc

        out = tempfile.mkdtemp()
        interop.generate(out)
        from fluxgate.v1 import auth_pb2, auth_pb2_grpc, email_pb2, email_pb2_grpc

        self.pb = email_pb2
        ch = grpc.insecure_channel(addr)
        auth = auth_pb2_grpc.AuthServiceStub(ch)
        r = auth.Login(auth_pb2.LoginRequest(username="admin", password=admin_password))
        self.md = [("authorization", f"Bearer {r.tokens.access_token}")]
        self.email = email_pb2_grpc.EmailServiceStub(ch)

    def link(self, recipient, path, seen=()):
        """The newest link to `path` emailed to `recipient`, waiting for it to be written."""
        deadline = time.time() + 10
        while time.time() < deadline:
            r = self.email.ListEmails(
                self.pb.ListEmailsRequest(recipient=recipient, page_size=50), metadata=self.md
            )
            for e in r.emails:
                m = re.search(r"https?://\S+/" + path + r"\?token=[A-Za-z0-9_\-]+", e.body)
                if m and m.group(0) not in seen:
                    return m.group(0)
            time.sleep(0.1)
        raise AssertionError(f"no {path} link emailed to {recipient}")


class Run:
    def __init__(self, base, addr, admin_password, shots):
        self.base = base.rstrip("/")
        self.admin_password = admin_password
        self.shots = shots
        self.outbox = Outbox(addr, admin_password)
        self.axe = Axe()
        self.checked = set()
        self.alerts = []

    # -- helpers ---------------------------------------------------------------------------

    def context(self, browser, width=1280):
        ctx = browser.new_context(viewport={"width": width, "height": 900})
        ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.base)
        return ctx

    def page(self, ctx):
        p = ctx.new_page()
        # A script injected through data would show up as a dialog.
        p.on("dialog", lambda d: (self.alerts.append(d.message), d.dismiss()))
        return p

    def shot(self, page, name):
        page.screenshot(path=os.path.join(self.shots, f"{name}.png"), full_page=True)

    def accessible(self, page, name):
        """axe-core on the page as it stands: no serious or critical violation."""
        results = self.axe.run(page)
        bad = [
            v
            for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        assert not bad, f"{name}: accessibility violations: " + "; ".join(
            f"{v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(str(n["target"]) for n in v["nodes"][:3])
            for v in bad
        )
        self.checked.add(name)

    def sign_in(self, page, username, password):
        page.goto(self.base + "/")
        page.get_by_label("Username or email").fill(username)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in").click()

    def signed_in_as(self, page, username):
        expect(page.get_by_test_id("whoami")).to_contain_text(username)

    def open_users(self, page):
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
        expect(page.get_by_role("heading", name="Users")).to_be_visible()

    def row(self, page, username):
        return page.locator(f'tr[data-username="{username}"]')

    def create_user(self, page, username, email, name, role="Requester", password=None, temporary=True):
        page.get_by_role("button", name="Create user").click()
        d = page.get_by_role("dialog")
        d.get_by_label("Username").fill(username)
        d.get_by_label("Email").fill(email)
        d.get_by_label("Full name").fill(name)
        d.get_by_label("Role").select_option(label=role)
        if password:
            d.get_by_label("Set one now").check()
            d.get_by_label("Initial password").fill(password)
            if not temporary:
                d.get_by_label("They must change it at first sign-in").uncheck()
        return d

    # -- flows -----------------------------------------------------------------------------

    def headers_and_sign_in(self, browser):
        ctx = self.context(browser)
        page = self.page(ctx)
        resp = page.goto(self.base + "/")
        h = resp.headers
        assert "script-src 'self'" in h["content-security-policy"], h
        assert "frame-ancestors 'none'" in h["content-security-policy"], h
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer", h
        expect(page.get_by_role("heading", name="Sign in to FluxGate")).to_be_visible()
        self.accessible(page, "sign-in")
        self.shot(page, "sign-in")

        # A wrong password: the server's refusal, and no session.
        page.get_by_label("Username or email").fill("admin")
        page.get_by_label("Password", exact=True).fill("not-the-password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("invalid")

        self.sign_in(page, "admin", self.admin_password)
        self.signed_in_as(page, "admin")
        self.accessible(page, "home")

        # No token where a script could read it: not in storage, not in a readable cookie.
        stored = page.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])"
        )
        assert "ey" not in stored and "fluxgate_refresh" not in stored, stored
        cookies = ctx.cookies()
        refresh = [c for c in cookies if c["name"] == "fluxgate_refresh"]
        assert refresh and refresh[0]["httpOnly"] and refresh[0]["sameSite"] == "Strict", cookies
        assert refresh[0]["path"] == "/fluxgate.v1.AuthService/", refresh

        # A reload keeps the session: the access token comes back from the refresh cookie.
        page.reload()
        self.signed_in_as(page, "admin")

        # Sign-out ends it: a reload lands on the sign-in page.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in to FluxGate")).to_be_visible()
        page.reload()
        expect(page.get_by_role("heading", name="Sign in to FluxGate")).to_be_visible()
        ctx.close()

    def registration(self, browser):
        admin_ctx = self.context(browser)
        admin = self.page(admin_ctx)
        self.sign_in(admin, "admin", self.admin_password)
        self.open_users(admin)
        self.accessible(admin, "users")
        d = self.create_user(admin, "rita", "rita@example.com", "Rita Requester")
        self.accessible(admin, "create-user")
        self.shot(admin, "create-user")
        # A double click writes once: the second click finds the button busy or the same key.
        d.get_by_role("button", name="Create").dblclick()
        expect(d.get_by_role("heading", name="User created")).to_be_visible()
        shown = d.get_by_test_id("secret").inner_text()
        d.get_by_role("button", name="Copy").click()
        expect(d.get_by_role("button", name="Copied")).to_be_visible()
        assert admin.evaluate("() => navigator.clipboard.readText()") == shown
        self.shot(admin, "registration-link")
        d.get_by_role("button", name="Done").click()
        expect(self.row(admin, "rita")).to_have_count(1)

        emailed = self.outbox.link("rita@example.com", "register")
        assert emailed == shown, (emailed, shown)
        assert emailed.startswith(self.base + "/register?token="), emailed

        # The new user opens the emailed link: the token leaves the address bar at once.
        ctx = self.context(browser)
        page = self.page(ctx)
        page.goto(emailed)
        expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()
        assert "token" not in page.url, page.url
        page.get_by_label("New password", exact=True).fill("short")
        rules = page.get_by_role("list", name="Password rules")
        expect(rules.locator("li.todo").first).to_be_visible()
        self.accessible(page, "register")
        self.shot(page, "register")
        page.get_by_label("New password", exact=True).fill(STRONG)
        page.get_by_label("Repeat the new password").fill(STRONG)
        expect(rules.locator("li.todo")).to_have_count(0)
        page.get_by_role("button", name="Set password").click()
        expect(page.get_by_role("status")).to_contain_text("Your password is set, rita")
        page.get_by_role("link", name="Sign in").click()
        self.sign_in(page, "rita", STRONG)
        self.signed_in_as(page, "rita")

        # The same link again: refused, with a way to ask for another.
        stale = self.page(self.context(browser))
        stale.goto(emailed)
        stale.get_by_label("New password", exact=True).fill(STRONGER)
        stale.get_by_label("Repeat the new password").fill(STRONGER)
        stale.get_by_role("button", name="Set password").click()
        expect(stale.get_by_role("alert")).to_be_visible()
        expect(stale.get_by_role("link", name="Ask for a new link")).to_be_visible()

        # A Requester who opens an admin page by its address gets the server's refusal.
        page.goto(self.base + "/users")
        expect(page.get_by_role("alert")).to_contain_text(re.compile("denied.*team_admin", re.I))
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Users")).to_have_count(0)

        # Deactivated by an admin: the open session is thrown out on its next action.
        page.goto(self.base + "/account")
        expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
        self.accessible(page, "account")
        admin.reload()
        self.open_users(admin)
        self.row(admin, "rita").get_by_role("button", name="Deactivate").click()
        admin.get_by_role("dialog").get_by_role("button", name="Deactivate").click()
        expect(self.row(admin, "rita")).to_contain_text("Deactivated")
        page.get_by_label("Current password").fill(STRONG)
        page.get_by_label("New password", exact=True).fill(STRONGER)
        page.get_by_label("Repeat the new password").fill(STRONGER)
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("heading", name="Sign in to FluxGate")).to_be_visible()
        expect(page.get_by_role("status")).to_contain_text("Your session has ended")
        ctx.close()
        admin_ctx.close()

    def forgotten_password(self, browser):
        admin_ctx = self.context(browser)
        admin = self.page(admin_ctx)
        self.sign_in(admin, "admin", self.admin_password)
        self.open_users(admin)
        d = self.create_user(admin, "fran", "fran@example.com", "Fran Forgetful", password=STRONG, temporary=False)
        d.get_by_role("button", name="Create").click()
        expect(d.get_by_role("heading", name="User created")).to_be_visible()
        admin_ctx.close()

        ctx = self.context(browser)
        page = self.page(ctx)
        page.goto(self.base + "/")
        page.get_by_role("link", name="Forgot your password?").click()
        expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
        self.accessible(page, "forgot-password")
        page.get_by_label("Email address").fill("fran@example.com")
        page.get_by_role("button", name="Send me a reset link").click()
        expect(page.get_by_role("status")).to_contain_text("reset link is on its way")

        link = self.outbox.link("fran@example.com", "reset-password")
        assert link.startswith(self.base + "/reset-password?token="), link
        page.goto(link)
        expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
        assert "token" not in page.url, page.url
        self.accessible(page, "reset-password")
        self.shot(page, "reset-password")
        page.get_by_label("New password", exact=True).fill(STRONGER)
        page.get_by_label("Repeat the new password").fill(STRONGER)
        page.get_by_role("button", name="Set password").click()
        expect(page.get_by_role("status")).to_contain_text("Your password is set, fran")
        self.sign_in(page, "fran", STRONGER)
        self.signed_in_as(page, "fran")

        # The used link is dead.
        stale = self.page(self.context(browser))
        stale.goto(link)
        stale.get_by_label("New password", exact=True).fill(STRONG)
        stale.get_by_label("Repeat the new password").fill(STRONG)
        stale.get_by_role("button", name="Set password").click()
        expect(stale.get_by_role("alert")).to_be_visible()
        # A link page opened without its token says so.
        stale.goto(self.base + "/reset-password")
        expect(stale.get_by_role("alert")).to_contain_text("no token")
        ctx.close()

    def forced_change_and_admin_actions(self, browser):
        admin_ctx = self.context(browser)
        admin = self.page(admin_ctx)
        self.sign_in(admin, "admin", self.admin_password)
        self.open_users(admin)
        # A display name that is a script is shown as text.
        hostile = '<img src=x onerror="alert(1)">'
        d = self.create_user(admin, "tim", "tim@example.com", hostile, role="Approver", password=STRONG)
        d.get_by_role("button", name="Create").click()
        expect(d.get_by_role("heading", name="User created")).to_be_visible()
        d.get_by_role("button", name="Done").click()
        expect(self.row(admin, "tim")).to_contain_text(hostile)
        assert admin.locator("img[src=x]").count() == 0

        # A temporary password forces a change before anything else.
        ctx = self.context(browser)
        page = self.page(ctx)
        self.sign_in(page, "tim", STRONG)
        expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
        self.accessible(page, "forced-change")
        page.get_by_label("Current password").fill(STRONG)
        page.get_by_label("New password", exact=True).fill(STRONGER)
        page.get_by_label("Repeat the new password").fill(STRONGER)
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("heading", name=re.compile("Welcome"))).to_be_visible()
        page.reload()
        self.signed_in_as(page, "tim")

        # The admin changes the role, with a confirmation.
        admin.reload()
        self.open_users(admin)
        admin.get_by_label("Search").fill("tim")
        expect(admin.locator("tbody tr")).to_have_count(1)
        self.row(admin, "tim").get_by_role("button", name="Edit").click()
        e = admin.get_by_role("dialog")
        e.get_by_label("Role").select_option(label="Requester")
        e.get_by_label("Reason (kept in the audit log)").fill("moved teams")
        e.get_by_role("button", name="Save").click()
        expect(e.get_by_role("status")).to_contain_text("from Approver to Requester")
        self.accessible(admin, "edit-user")
        e.get_by_role("button", name="Confirm").click()
        expect(self.row(admin, "tim")).to_contain_text("Requester")
        admin.get_by_label("Search").fill("")
        expect(admin.locator("tbody tr")).to_have_count(4)
        self.shot(admin, "users")

        # Reset password: the temporary one is shown once.
        self.row(admin, "tim").get_by_role("button", name="Reset password").click()
        r = admin.get_by_role("dialog")
        r.get_by_role("button", name="Reset password").click()
        temp = r.get_by_test_id("secret").inner_text()
        assert len(temp) >= 12, temp
        r.get_by_role("button", name="Done").click()

        # Delete is refused while active: the guard's reason is shown.
        self.row(admin, "tim").get_by_role("button", name="Delete").click()
        x = admin.get_by_role("dialog")
        x.get_by_role("button", name="Delete").click()
        expect(x.get_by_role("alert")).to_contain_text(re.compile("deactivat", re.I))
        x.get_by_role("button", name="Cancel").click()
        self.row(admin, "tim").get_by_role("button", name="Deactivate").click()
        admin.get_by_role("dialog").get_by_role("button", name="Deactivate").click()
        expect(self.row(admin, "tim")).to_contain_text("Deactivated")
        self.row(admin, "tim").get_by_role("button", name="Delete").click()
        admin.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(self.row(admin, "tim")).to_have_count(0)
        expect(admin.get_by_role("status")).to_contain_text("tim deleted")
        assert not self.alerts, self.alerts
        ctx.close()
        admin_ctx.close()

    def small_screen(self, browser):
        ctx = self.context(browser, width=390)
        page = self.page(ctx)
        self.sign_in(page, "admin", self.admin_password)
        self.signed_in_as(page, "admin")
        nav = page.get_by_role("navigation", name="Main")
        expect(nav).to_be_hidden()
        page.get_by_role("button", name="Menu").click()
        nav.get_by_role("link", name="Users").click()
        expect(page.get_by_role("heading", name="Users")).to_be_visible()
        self.accessible(page, "users-390")
        self.shot(page, "users-390")
        overflow = page.evaluate("() => document.documentElement.scrollWidth")
        assert overflow <= 390, f"the page is {overflow}px wide at 390px"
        ctx.close()


def main():
    base, addr, admin_password, shots = sys.argv[1:5]
    os.makedirs(shots, exist_ok=True)
    run = Run(base, addr, admin_password, shots)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        flows = [
            run.headers_and_sign_in,
            run.registration,
            run.forgotten_password,
            run.forced_change_and_admin_actions,
            run.small_screen,
        ]
        for flow in flows:
            print(f"console: {flow.__name__}", flush=True)
            try:
                flow(browser)
            except Exception:
                for i, ctx in enumerate(browser.contexts):
                    for j, page in enumerate(ctx.pages):
                        path = os.path.join(shots, f"failed-{flow.__name__}-{i}-{j}.png")
                        page.screenshot(path=path, full_page=True)
                        print(f"console: {page.url} -> {path}", flush=True)
                raise
        browser.close()
    print(f"console: pages checked for accessibility: {sorted(run.checked)}")
    print("console: ok")


if __name__ == "__main__":
    main()
