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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks

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


def totp(secret, offset_steps=0):
    """The RFC 6238 code (SHA-1, 6 digits, 30 s) of a base32 secret, `offset_steps` from now."""
    import base64
    import hashlib
    import hmac
    import struct

    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    step = int(time.time()) // 30 + offset_steps
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    o = digest[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", digest[o : o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


class Grpc:
    """The API over gRPC as a Team Admin: the outbox (the links users get) and set-up."""

    def __init__(self, addr, admin_password):
        import grpc

        out = tempfile.mkdtemp()
        interop.generate(out)
        from fluxgate.v1 import auth_pb2, auth_pb2_grpc, email_pb2, email_pb2_grpc

        from fluxgate.v1 import approvals_pb2, approvals_pb2_grpc, catalog_pb2_grpc, common_pb2
        from fluxgate.v1 import groups_pb2, groups_pb2_grpc, users_pb2, users_pb2_grpc

        self.pb = email_pb2
        self.ap, self.gr, self.us, self.common, self.auth_pb = approvals_pb2, groups_pb2, users_pb2, common_pb2, auth_pb2
        ch = grpc.insecure_channel(addr)
        self.auth = auth_pb2_grpc.AuthServiceStub(ch)
        self.md = self.login("admin", admin_password)
        self.email = email_pb2_grpc.EmailServiceStub(ch)
        self.users = users_pb2_grpc.UserServiceStub(ch)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(ch)
        self.groups = groups_pb2_grpc.GroupServiceStub(ch)
        self.approvals = approvals_pb2_grpc.ApprovalServiceStub(ch)
        from fluxgate.v1 import settings_pb2, settings_pb2_grpc

        self.settings_pb = settings_pb2
        self.settings = settings_pb2_grpc.SettingsServiceStub(ch)

    def access_token_ttl(self, seconds):
        """Sets the lifetime of new access tokens."""
        from google.protobuf import duration_pb2, field_mask_pb2

        st = self.settings_pb
        self.settings.UpdateSettings(
            st.UpdateSettingsRequest(
                settings=st.Settings(
                    name="settings",
                    token_policy=st.TokenPolicy(access_token_ttl=duration_pb2.Duration(seconds=seconds)),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["token_policy.access_token_ttl"]),
            ),
            metadata=self.md,
        )

    def login(self, username, password):
        r = self.auth.Login(self.auth_pb.LoginRequest(username=username, password=password))
        return [("authorization", f"Bearer {r.tokens.access_token}")]

    def user(self, username, role, password):
        """A user with a password of their own (set up over gRPC: the users page is tested elsewhere)."""
        return self.users.CreateUser(
            self.us.CreateUserRequest(
                user=self.us.User(
                    username=username,
                    email=f"{username}@example.com",
                    display_name=username.title(),
                    role=role,
                ),
                initial_password=password,
            ),
            metadata=self.md,
        ).user

    def environment(self, portfolio, application, environment):
        """The resource name of an environment, by display names."""
        from fluxgate.v1 import catalog_pb2 as cat

        p = next(x for x in self.catalog.ListPortfolios(cat.ListPortfoliosRequest(), metadata=self.md).portfolios if x.display_name == portfolio)
        a = next(x for x in self.catalog.ListApplications(cat.ListApplicationsRequest(parent=p.name), metadata=self.md).applications if x.display_name == application)
        e = next(x for x in self.catalog.ListEnvironments(cat.ListEnvironmentsRequest(parent=a.name), metadata=self.md).environments if x.display_name == environment)
        return p.name, e.name

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
        self.grpc = Grpc(addr, admin_password)
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

    def expiry_starts(self, browser):
        """Access tokens live one minute from here on; a console stays open across the others."""
        self.grpc.access_token_ttl(60)
        ctx = self.context(browser)
        page = self.page(ctx)
        refreshes = []
        page.on("request", lambda r: refreshes.append(time.time()) if r.url.endswith("/RefreshSession") else None)
        self.sign_in(page, "admin", self.admin_password)
        self.signed_in_as(page, "admin")
        self.expiry = (ctx, page, refreshes, time.time())

    def expiry_ends(self, browser):
        """Past the first token's minute, the open console still works: it refreshed silently."""
        ctx, page, refreshes, t0 = self.expiry
        time.sleep(max(0.0, t0 + 65 - time.time()))
        self.open_users(page)
        expect(self.row(page, "admin")).to_be_visible()
        assert any(t > t0 for t in refreshes), "no silent refresh within the token's minute"
        ctx.close()

    def keyboard_and_lockout(self, browser):
        ctx = self.context(browser)
        page = self.page(ctx)
        page.goto(self.base + "/")
        # By keyboard alone: the field has focus, Tab moves on, Enter submits.
        expect(page.get_by_label("Username or email")).to_be_focused()
        page.keyboard.type("lou")
        page.keyboard.press("Tab")
        page.keyboard.type("wrong-password")
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text("invalid username or password")
        # Lockout: after repeated failures the server says so, for a name nobody has too.
        for _ in range(10):
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
            if "too many failed" in page.get_by_role("alert").inner_text():
                break
        expect(page.get_by_role("alert")).to_contain_text("too many failed login attempts")
        ctx.close()

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

        emailed = self.grpc.link("rita@example.com", "register")
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

        # Reactivated, she is back; a registration link is no longer hers to get; an admin cannot
        # deactivate themselves (disabled here, refused by the server anyway).
        self.row(admin, "rita").get_by_role("button", name="Reactivate").click()
        admin.get_by_role("dialog").get_by_role("button", name="Reactivate").click()
        expect(self.row(admin, "rita").locator("td").nth(4)).to_have_text("Active")
        expect(self.row(admin, "admin").get_by_role("button", name="Deactivate")).to_be_disabled()
        self.row(admin, "rita").get_by_role("button", name="Reset password").click()
        r = admin.get_by_role("dialog")
        r.get_by_role("button", name="New registration link").click()
        expect(r.get_by_role("alert")).to_contain_text("already set a password")
        r.get_by_role("button", name="Cancel").click()
        self.sign_in(page, "rita", STRONG)
        self.signed_in_as(page, "rita")
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

        link = self.grpc.link("fran@example.com", "reset-password")
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

    def approvals(self, browser):
        admin_ctx = self.context(browser)
        admin = self.page(admin_ctx)
        self.sign_in(admin, "admin", self.admin_password)
        admin.get_by_role("navigation", name="Main").get_by_role("link", name="Catalog").click()
        expect(admin.get_by_role("heading", name="Catalog", exact=True)).to_be_visible()

        def add(level, name, production=False):
            admin.get_by_role("button", name=f"Add {level}").click()
            d = admin.get_by_role("dialog")
            d.get_by_label("Name").fill(name)
            if production:
                d.get_by_label("Production").check()
            d.get_by_role("button", name="Add").click()
            expect(d).to_have_count(0)

        add("portfolio", "Payments")
        admin.get_by_role("button", name="Payments", exact=True).click()
        add("application", "Checkout")
        admin.get_by_role("button", name="Checkout", exact=True).click()
        add("environment", "Production", production=True)
        expect(admin.locator('li[data-name="Production"]')).to_contain_text("production")
        self.accessible(admin, "catalog")
        self.shot(admin, "catalog")
        admin.get_by_role("button", name="Approval policy of Production").click()
        pol = admin.get_by_role("dialog")
        pol.get_by_label("Approvals required (0 to 10; 0: no review)").fill("2")
        self.accessible(admin, "approval-policy")
        pol.get_by_role("button", name="Save policy").click()
        expect(pol.get_by_role("status")).to_contain_text("Policy saved")
        pol.get_by_role("button", name="Close").click()

        # People over gRPC (the users page is tested above); their group through the console.
        g = self.grpc
        for who, role in (("rhea", g.common.ROLE_REQUESTER), ("alice", g.common.ROLE_APPROVER), ("bob", g.common.ROLE_APPROVER)):
            g.user(who, role, STRONG)
        admin.get_by_role("navigation", name="Main").get_by_role("link", name="Groups").click()
        expect(admin.get_by_label("Portfolio")).to_have_value(re.compile("^portfolios/"))
        admin.get_by_role("button", name="New group").click()
        d = admin.get_by_role("dialog")
        d.get_by_label("Name").fill("Release")
        d.get_by_role("button", name="Create").click()
        expect(admin.get_by_role("heading", name="Release")).to_be_visible()
        for who in ("rhea", "alice", "bob"):
            admin.get_by_label("Add member (username, users/… or serviceAccounts/…)").fill(who)
            admin.get_by_role("button", name="Add member").click()
            expect(admin.get_by_role("button", name=re.compile(f"Remove .*\\({who}\\)"))).to_be_visible()
        admin.get_by_label("Read in Production").check()
        admin.get_by_label("Change value in Production").check()
        admin.get_by_role("button", name="Save permissions").click()
        expect(admin.get_by_role("status")).to_contain_text("Permissions saved")
        self.accessible(admin, "groups")
        self.shot(admin, "groups")
        # The engine explains a grant and a refusal.
        admin.get_by_label("Who (username or users/…)").fill("rhea")
        admin.get_by_label("Permission").select_option(label="Change the value")
        admin.get_by_label("On", exact=True).select_option(label="Checkout / Production")
        admin.get_by_role("button", name="Explain").click()
        expect(admin.get_by_test_id("explanation")).to_contain_text("Allowed")
        expect(admin.get_by_test_id("explanation")).to_contain_text("groups/")
        admin.get_by_label("Who (username or users/…)").fill("fran")
        admin.get_by_role("button", name="Explain").click()
        expect(admin.get_by_test_id("explanation")).to_contain_text("Not allowed")

        # The Requester submits through the console.
        rctx = self.context(browser)
        rhea = self.page(rctx)
        self.sign_in(rhea, "rhea", STRONG)
        rhea.get_by_role("navigation", name="Main").get_by_role("link", name="Change requests").click()
        rhea.get_by_role("button", name="Submit a change").click()
        d = rhea.get_by_role("dialog")
        d.get_by_label("Environment").select_option(label="Payments / Checkout / Production")
        d.get_by_label("Feature key").fill("NEW_CHECKOUT")
        d.get_by_label("Change", exact=True).select_option(label="Change value")
        d.get_by_label("Title").fill("Turn on the new checkout")
        d.get_by_label("Payload (JSON object, for the flag store)").fill('{"before": {"on": false}, "after": {"on": true}}')
        self.accessible(rhea, "submit-change")
        d.get_by_role("button", name="Submit").click()
        expect(rhea.get_by_role("heading", name="Turn on the new checkout")).to_be_visible()
        expect(rhea.get_by_test_id("state")).to_have_text("Pending")
        expect(rhea.get_by_test_id("approvals")).to_contain_text("0 of 2")
        expect(rhea.get_by_role("button", name="Approve")).to_be_disabled()
        name = rhea.url.split("/", 3)[3]
        assert name.startswith("changeRequests/"), rhea.url

        # The CI pipeline blocks on the watch stream until the decision.
        import threading

        seen = []
        rhea_md = g.login("rhea", STRONG)

        def watch():
            for m in g.approvals.WatchChangeRequest(g.ap.WatchChangeRequestRequest(name=name), metadata=rhea_md, timeout=60):
                seen.append(m.change_request.state)
                if m.change_request.state == g.ap.CHANGE_REQUEST_STATE_APPROVED:
                    return

        ci = threading.Thread(target=watch)
        ci.start()

        # Two Approvers approve from their queues; the submitter's page follows live.
        hostile = '<b>ok</b><img src=x onerror="alert(2)">'
        for who, count in (("alice", "1 of 2"), ("bob", "2 of 2")):
            c = self.context(browser)
            p = self.page(c)
            self.sign_in(p, who, STRONG)
            p.get_by_role("navigation", name="Main").get_by_role("link", name="Change requests").click()
            expect(p.get_by_role("link", name="Awaiting my review")).to_have_attribute("aria-current", "page")
            p.get_by_role("link", name="Turn on the new checkout").click()
            expect(p.get_by_role("heading", name="After")).to_be_visible()
            if who == "alice":
                self.accessible(p, "change-request")
                self.shot(p, "change-request")
            p.get_by_label("Comment (or reason)").fill(hostile)
            p.get_by_role("button", name="Approve").click()
            expect(p.get_by_test_id("approvals")).to_contain_text(count)
            expect(rhea.get_by_test_id("approvals")).to_contain_text(count)
            c.close()
        expect(rhea.get_by_test_id("state")).to_have_text("Approved")
        expect(rhea.locator("blockquote").first).to_have_text(hostile)
        assert rhea.locator("img[src=x]").count() == 0
        ci.join(30)
        assert seen and seen[-1] == g.ap.CHANGE_REQUEST_STATE_APPROVED, seen

        # The submitter cancels a second request; a Team Admin overrides a third.
        def submit(title, reviewers=""):
            rhea.goto(self.base + "/changes?tab=mine")
            rhea.get_by_role("button", name="Submit a change").click()
            d = rhea.get_by_role("dialog")
            d.get_by_label("Feature key").fill("OTHER_FLAG")
            d.get_by_label("Title").fill(title)
            if reviewers:
                d.get_by_label("Reviewers to ask").fill(reviewers)
            d.get_by_role("button", name="Submit").click()
            expect(rhea.get_by_role("heading", name=title)).to_be_visible()
            return rhea.url

        submit("Try something")
        rhea.get_by_label("Comment (or reason)").fill("not needed after all")
        rhea.get_by_role("button", name="Cancel request").click()
        expect(rhea.get_by_test_id("state")).to_have_text("Cancelled")

        admin.goto(self.base + "/catalog")
        admin.get_by_role("button", name="Payments", exact=True).click()
        admin.get_by_role("button", name="Checkout", exact=True).click()
        admin.get_by_role("button", name="Approval policy of Production").click()
        pol = admin.get_by_role("dialog")
        pol.get_by_label("A Team Admin may override").check()
        pol.get_by_role("button", name="Save policy").click()
        expect(pol.get_by_role("status")).to_contain_text("Policy saved")
        url = submit("Urgent fix")
        admin.goto(url)
        admin.get_by_label("Comment (or reason)").fill("incident 42: cannot wait")
        admin.get_by_role("button", name="Override").click()
        expect(admin.get_by_test_id("state")).to_have_text("Approved")
        expect(admin.get_by_role("status").first).to_contain_text("incident 42")
        expect(rhea.get_by_test_id("state")).to_have_text("Approved")

        # A reviewer rejects, with the reason shown to the submitter. Rhea asks Alice by name; a
        # name of someone who may not review is refused at the field.
        rhea.goto(self.base + "/changes?tab=mine")
        rhea.get_by_role("button", name="Submit a change").click()
        d = rhea.get_by_role("dialog")
        d.get_by_label("Feature key").fill("OTHER_FLAG")
        d.get_by_label("Title").fill("Nobody to ask")
        d.get_by_label("Reviewers to ask").fill("rhea")
        d.get_by_role("button", name="Submit").click()
        expect(d.locator(".field-error")).to_contain_text("cannot review")
        d.get_by_role("button", name="Cancel").click()
        url = submit("Risky change", reviewers="alice")
        expect(rhea.get_by_text("Reviewers asked: alice")).to_be_visible()
        c = self.context(browser)
        p = self.page(c)
        self.sign_in(p, "alice", STRONG)
        self.signed_in_as(p, "alice")
        p.goto(url)
        p.get_by_label("Comment (or reason)").fill("needs a rollout plan")
        p.get_by_role("button", name="Reject").click()
        expect(rhea.get_by_test_id("state")).to_have_text("Rejected")
        expect(rhea.locator("blockquote").first).to_have_text("needs a rollout plan")
        c.close()
        assert not self.alerts, self.alerts
        rctx.close()
        admin_ctx.close()

    def admin_pages(self, browser):
        ctx = self.context(browser)
        page = self.page(ctx)
        self.sign_in(page, "admin", self.admin_password)
        nav = page.get_by_role("navigation", name="Main")

        nav.get_by_role("link", name="Audit log").click()
        expect(page.locator('tr[data-action="user.created"]').first).to_be_visible()
        page.get_by_label("Action").fill("user.created")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("tbody tr:not([data-action='user.created'])")).to_have_count(0)
        expect(page.locator("tbody tr").first).to_have_attribute("data-action", "user.created")
        page.get_by_role("button", name="Verify the chain").click()
        expect(page.get_by_role("status")).to_contain_text("The chain is intact")
        with page.expect_download() as dl:
            page.get_by_role("button", name="Export (JSON lines)").click()
        lines = open(dl.value.path()).read().splitlines()
        assert lines and all(line.startswith("{") for line in lines), lines[:3]
        self.accessible(page, "audit")
        self.shot(page, "audit")

        nav.get_by_role("link", name="Activity").click()
        expect(page.get_by_role("figure", name="Active users per day")).to_be_visible()
        expect(page.get_by_role("heading", name="Approval response times")).to_be_visible()
        self.accessible(page, "activity")
        self.shot(page, "activity")

        nav.get_by_role("link", name="Settings").click()
        page.get_by_label("Minimum length").fill("14")
        page.get_by_role("button", name="Save settings").click()
        expect(page.get_by_role("status")).to_contain_text("Settings saved")
        page.get_by_label("Minimum length").fill("3")
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator(".field-error").first).to_be_visible()
        self.accessible(page, "settings")
        # The live policy is what the password pages check against.
        nav.get_by_role("link", name="My account").click()
        expect(page.get_by_role("list", name="Password rules")).to_contain_text("14 to")

        nav.get_by_role("link", name="Outbox").click()
        row = page.locator("tr", has_text="rita@example.com").first
        expect(row).to_be_visible()
        row.get_by_role("button", name=re.compile("Read")).click()
        expect(page.get_by_role("dialog")).to_contain_text("/register?token=")
        self.accessible(page, "outbox")
        page.get_by_role("dialog").get_by_role("button", name="Close").click()

        # A portfolio service account and its key: shown once, usable, rotated, revoked.
        nav.get_by_role("link", name="Service accounts").click()
        page.get_by_role("button", name="New service account").click()
        d = page.get_by_role("dialog")
        d.get_by_label("Name").fill("Flag store")
        d.get_by_label("Scope").select_option(label="Payments")
        d.get_by_role("button", name="Create").click()
        page.get_by_role("button", name="Keys of Flag store").click()
        k = page.get_by_role("dialog")
        k.get_by_label("New key's label").fill("production")
        k.get_by_role("button", name="Create key").click()
        first = k.get_by_test_id("secret").inner_text()
        self.accessible(page, "service-account-keys")
        g = self.grpc
        who = lambda secret: g.auth.WhoAmI(g.auth_pb.WhoAmIRequest(), metadata=[("authorization", f"Bearer {secret}")])
        assert who(first).principal.startswith("serviceAccounts/")
        k.get_by_role("button", name="Rotate production").click()
        expect(k.get_by_test_id("secret")).not_to_have_text(first)
        second = k.get_by_test_id("secret").inner_text()
        assert who(second).principal.startswith("serviceAccounts/")
        assert who(first).principal  # the old key works through its grace period
        k.get_by_role("button", name=re.compile("^Revoke")).first.click()
        page.get_by_role("dialog", name=re.compile("^Revoke")).get_by_role("button", name="Revoke", exact=True).click()
        expect(k.locator("li", has_text="revoked").first).to_be_visible()
        ctx.close()

        # A Requester opening an admin page by its address: the server refuses.
        rctx = self.context(browser)
        r = self.page(rctx)
        self.sign_in(r, "rhea", STRONG)
        self.signed_in_as(r, "rhea")
        r.goto(self.base + "/audit")
        expect(r.get_by_role("alert").first).to_contain_text("denied")
        # What she may not change is disabled, with the reason.
        r.goto(self.base + "/catalog")
        r.get_by_role("button", name="Payments", exact=True).click()
        expect(r.get_by_role("button", name="Add portfolio")).to_be_disabled()
        expect(r.get_by_role("button", name="Add application")).to_be_disabled()
        expect(r.get_by_role("button", name="Add application")).to_have_attribute("title", re.compile("Administrators"))
        r.goto(self.base + "/groups")
        expect(r.get_by_role("button", name="New group")).to_be_disabled()
        rctx.close()

    def webhooks(self, browser):
        """A subscription made on the Webhooks page reaches a receiver on loopback, whose every
        message the Standard Webhooks reference library verifies with the secret the page showed
        once; its delivery log shows it, and it is sent again on demand."""
        received = []

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

        def wait_for(n):
            deadline = time.time() + 10
            while len(received) < n:
                assert time.time() < deadline, f"{len(received)} of {n} messages arrived"
                time.sleep(0.05)

        ctx = self.context(browser)
        page = self.page(ctx)
        self.sign_in(page, "admin", self.admin_password)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
        expect(page.get_by_text("No webhook yet.")).to_be_visible()
        page.get_by_role("button", name="New webhook").click()
        d = page.get_by_role("dialog")
        d.get_by_label("Name").fill("Flag store hook")
        d.get_by_label("Endpoint URL").fill("https://10.0.0.1/hook")
        d.get_by_label("Event types").fill("user.created, user.role_changed")
        self.accessible(page, "webhook-new")
        d.get_by_role("button", name="Create").click()
        # A private address is refused, next to the field.
        expect(d.locator(".field-error")).to_contain_text("private")
        d.get_by_label("Endpoint URL").fill(f"http://127.0.0.1:{srv.server_port}/hook")
        d.get_by_role("button", name="Create").click()
        secret = page.get_by_test_id("secret").inner_text()
        assert secret.startswith("whsec_"), secret
        row = page.locator('tr[data-webhook="Flag store hook"]')
        expect(row).to_contain_text("user.created, user.role_changed")
        expect(row).to_contain_text("Enabled")
        self.accessible(page, "webhooks")
        self.shot(page, "webhooks")

        self.grpc.user("wanda", self.grpc.common.ROLE_REQUESTER, STRONG)
        wait_for(1)
        verifier = standardwebhooks.Webhook(secret)
        headers, body = received[0]
        message = verifier.verify(body, headers)
        assert message["type"] == "user.created", message
        assert message["data"]["action"] == "user.created", message

        row.get_by_role("button", name=re.compile("^Deliveries")).click()
        log = page.get_by_role("dialog", name="Deliveries of Flag store hook")
        for _ in range(50):
            if log.locator("tr[data-state='Delivered']").count():
                break
            log.get_by_role("button", name="Refresh").click()
            time.sleep(0.1)
        expect(log.locator("tr[data-state='Delivered']").first).to_contain_text("HTTP 204")
        self.accessible(page, "webhook-deliveries")
        log.get_by_role("button", name=re.compile("^Redeliver")).first.click()
        wait_for(2)
        assert received[1][0]["webhook-id"] == headers["webhook-id"], "the same message again"
        verifier.verify(received[1][1], received[1][0])
        log.get_by_role("button", name=re.compile("^Payload")).first.click()
        expect(page.get_by_role("dialog", name=re.compile("^Payload"))).to_contain_text('"type":"user.created"')
        page.get_by_role("dialog", name=re.compile("^Payload")).get_by_role("button", name="Close").click()
        log.get_by_role("button", name="Done").click()

        row.get_by_role("button", name=re.compile("^Disable")).click()
        expect(row).to_contain_text("Disabled")
        self.grpc.user("xena", self.grpc.common.ROLE_REQUESTER, STRONG)
        time.sleep(0.5)
        assert len(received) == 2, "a disabled webhook is sent nothing"
        row.get_by_role("button", name=re.compile("^Delete")).click()
        page.get_by_role("dialog", name=re.compile("^Delete")).get_by_role("button", name="Delete", exact=True).click()
        expect(page.get_by_text("No webhook yet.")).to_be_visible()
        srv.shutdown()
        ctx.close()

    def two_step_sign_in(self, browser):
        g = self.grpc
        g.user("tess", g.common.ROLE_REQUESTER, STRONG)
        ctx = self.context(browser)
        page = self.page(ctx)
        self.sign_in(page, "tess", STRONG)
        self.signed_in_as(page, "tess")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="My account").click()
        expect(page.get_by_test_id("second-factor-status")).to_contain_text("Off")
        # Email notifications: off for review requests, and it stays off after a reload.
        reviews = page.get_by_label("Change requests I may review")
        expect(reviews).to_be_checked()
        reviews.uncheck()
        expect(reviews).not_to_be_checked()
        page.reload()
        expect(page.get_by_label("Change requests I may review")).not_to_be_checked()
        expect(page.get_by_label("Decisions on my change requests")).to_be_checked()
        page.get_by_role("button", name="Set up two-step sign-in").click()
        expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
        secret = page.get_by_test_id("secret").inner_text()
        self.accessible(page, "two-step-setup")
        self.shot(page, "two-step-setup")
        page.get_by_label("Code from the app").fill(totp(secret))
        page.get_by_role("button", name="Turn on").click()
        expect(page.get_by_test_id("second-factor-status")).to_contain_text("10 recovery codes left")
        recovery = page.get_by_test_id("secret").inner_text().split()
        assert len(recovery) == 10, recovery

        # Signing in now asks for the code; the next step's code (the first one is used up).
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Username or email").fill("tess")
        page.get_by_label("Password", exact=True).fill(STRONG)
        page.get_by_role("button", name="Sign in").click()
        code = page.get_by_label("Authentication code")
        expect(code).to_be_visible()
        self.accessible(page, "sign-in-code")
        code.fill(totp(secret, 1))
        page.get_by_role("button", name="Sign in").click()
        self.signed_in_as(page, "tess")

        # A recovery code, once.
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Username or email").fill("tess")
        page.get_by_label("Password", exact=True).fill(STRONG)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Authentication code").fill(recovery[0])
        page.get_by_role("button", name="Sign in").click()
        self.signed_in_as(page, "tess")

        # She turns it off herself, with her password (a session alone is not enough), and on again.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="My account").click()
        page.get_by_role("button", name="Turn off two-step sign-in").click()
        d = page.get_by_role("dialog", name="Turn off two-step sign-in?")
        d.get_by_label("Your password").fill("Not-her-password-1")
        d.get_by_role("button", name="Turn off", exact=True).click()
        expect(d.locator(".field-error")).to_be_visible()
        self.accessible(page, "two-step-off")
        d.get_by_label("Your password").fill(STRONG)
        d.get_by_role("button", name="Turn off", exact=True).click()
        expect(page.get_by_test_id("second-factor-status")).to_contain_text("Off")
        page.get_by_role("button", name="Set up two-step sign-in").click()
        secret = page.get_by_test_id("secret").inner_text()
        page.get_by_label("Code from the app").fill(totp(secret))
        page.get_by_role("button", name="Turn on").click()
        expect(page.get_by_test_id("second-factor-status")).to_contain_text("On")
        ctx.close()

        # The authenticator is lost: a Team Admin turns the factor off.
        actx = self.context(browser)
        admin = self.page(actx)
        self.sign_in(admin, "admin", self.admin_password)
        self.open_users(admin)
        self.row(admin, "tess").get_by_role("button", name="Reset password").click()
        d = admin.get_by_role("dialog")
        d.get_by_role("button", name="Turn off two-step sign-in").click()
        expect(d.get_by_role("status")).to_contain_text("Two-step sign-in is off for tess")
        actx.close()
        ctx = self.context(browser)
        page = self.page(ctx)
        self.sign_in(page, "tess", STRONG)
        self.signed_in_as(page, "tess")
        ctx.close()

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
        assert overflow <= 390, f"/users is {overflow}px wide at 390px"
        wide = (("/changes?tab=all", "changes-390"), ("/catalog", "catalog-390"), ("/groups", "groups-390"), ("/activity", "activity-390"))
        for path, name in wide:
            page.goto(self.base + path)
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            page.wait_for_load_state("networkidle")
            self.accessible(page, name)
            overflow = page.evaluate("() => document.documentElement.scrollWidth")
            assert overflow <= 390, f"{path} is {overflow}px wide at 390px"
        self.shot(page, "activity-390")
        ctx.close()


def main():
    base, addr, admin_password, shots = sys.argv[1:5]
    os.makedirs(shots, exist_ok=True)
    run = Run(base, addr, admin_password, shots)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        run.expiry_starts(browser)
        flows = [
            run.headers_and_sign_in,
            run.keyboard_and_lockout,
            run.registration,
            run.forgotten_password,
            run.forced_change_and_admin_actions,
            run.approvals,
            run.admin_pages,
            run.webhooks,
            run.two_step_sign_in,
            run.small_screen,
            run.expiry_ends,
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
