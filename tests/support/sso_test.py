"""Sign-in through identity providers, end to end, against a running FluxGate configured (by
tests/e2e/sso.rs) with two OpenID providers this script starts on loopback:

- "mock": oidc-provider-mock (PyPI), a real OpenID provider with a login form and per-user
  claims; FluxGate may create accounts from it and maps its `roles` and `groups` claims.
- "hostile": a provider written here that answers the protocol but issues whatever ID token a
  scenario asks for (another audience, expired, no nonce, `alg: none`, an unknown key, another
  issuer, HMAC with the client secret, a rotated key), and may link by verified email.

Usage: sso_test.py BASE_URL GRPC_ADDR ADMIN_PASSWORD MOCK_PORT HOSTILE_PORT FLUXCTL SHOTS_DIR

Flows: the console in Chromium (sign in, account created, group and role mapped, signed out,
signed in again with the group and role gone at the provider), fluxctl's loopback sign-in, the
hostile cases (each refused with its one message), linking by email, the last Team Admin kept,
an SSO-only account refused a password, and a deactivated account refused. Prints "sso: ok".
"""

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import oidc_provider_mock
import werkzeug.serving
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402  (stub generation from proto/)

BASE, GRPC, ADMIN_PASSWORD, MOCK_PORT, HOSTILE_PORT, FLUXCTL, SHOTS = sys.argv[1:8]
CLIENT_ID = "fluxgate"
# The hostile provider's client secret, as tests/e2e/sso.rs configures it.
CLIENT_SECRET = "hostile-client-secret-0123456789abcdef"
CHROMIUM = os.environ.get("FLUXGATE_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
expect.set_options(timeout=15_000)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce():
    v = secrets.token_urlsafe(48)
    return v, b64(hashlib.sha256(v.encode()).digest())


# ---------------------------------------------------------------- the providers


def start_mock(port):
    app = oidc_provider_mock.app(require_nonce=True)
    srv = werkzeug.serving.make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"


def mock_user(mock, sub, **claims):
    r = httpx.put(f"{mock}/users/{urllib.parse.quote(sub)}", json=claims)
    assert r.status_code == 204, r.text


class Hostile:
    """An OpenID provider that issues the ID token a scenario asks for."""

    def __init__(self, port):
        self.issuer = f"http://127.0.0.1:{port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.next_key = RSAKey.generate_key(2048, parameters={"kid": "k2"})
        self.stranger = RSAKey.generate_key(2048, parameters={"kid": "k-stranger"})
        self.published = [self.key]
        self.scenario = "ok"
        self.claims = {}
        self.codes = {}
        self.lock = threading.Lock()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def json(self, obj, status=200):
                self.reply(status, json.dumps(obj).encode(), [("Content-Type", "application/json")])

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                if u.path == "/.well-known/openid-configuration":
                    self.json(me.discovery())
                elif u.path == "/jwks":
                    keys = []
                    for k in me.published:
                        d = k.as_dict(private=False)
                        d.update(use="sig", alg="RS256")
                        keys.append(d)
                    self.json({"keys": keys})
                elif u.path == "/authorize":
                    self.reply(302, headers=[("Location", me.authorize(q))])
                else:
                    self.reply(404)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                with me.lock:
                    grant = me.codes.pop(form.get("code", ""), None)
                if self.path != "/token" or grant is None:
                    self.json({"error": "invalid_grant"}, 400)
                    return
                nonce, scenario, claims = grant
                self.json(
                    {
                        "access_token": secrets.token_urlsafe(16),
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": me.id_token(nonce, scenario, claims),
                    }
                )

        self.srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def discovery(self):
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def authorize(self, q):
        back = q["redirect_uri"]
        if self.scenario == "denied":
            return back + "?" + urllib.parse.urlencode({"error": "access_denied", "error_description": "the user said no", "state": q["state"]})
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = (q.get("nonce"), self.scenario, dict(self.claims))
        answer = {"code": code, "state": q["state"]}
        if self.scenario == "iss_param":
            answer["iss"] = "http://127.0.0.1:1/elsewhere"
        return back + "?" + urllib.parse.urlencode(answer)

    def id_token(self, nonce, scenario, claims):
        now = int(time.time())
        c = {"iss": self.issuer, "sub": "hostile-user", "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": nonce}
        c.update(claims)
        key = self.key
        if scenario == "audience":
            c["aud"] = "another-client"
        elif scenario == "expired":
            c["iat"], c["exp"] = now - 7200, now - 3600
        elif scenario == "nonce":
            c["nonce"] = "not-the-nonce-that-was-sent"
        elif scenario == "no_nonce":
            del c["nonce"]
        elif scenario == "issuer":
            c["iss"] = "http://127.0.0.1:1/elsewhere"
        elif scenario == "unknown_key":
            key = self.stranger
        elif scenario == "rotated":
            key = self.next_key
        elif scenario == "hs256":
            return jwt.encode({"alg": "HS256"}, c, OctKey.import_key(CLIENT_SECRET))
        elif scenario == "alg_none":
            head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{head}.{b64(json.dumps(c).encode())}."
        return jwt.encode({"alg": "RS256", "kid": key.kid}, c, key)


# ---------------------------------------------------------------- the API


class Api:
    def __init__(self):
        import grpc

        out = tempfile.mkdtemp()
        interop.generate(out)
        from fluxgate.v1 import auth_pb2, auth_pb2_grpc, groups_pb2, groups_pb2_grpc, users_pb2, users_pb2_grpc
        from fluxgate.v1 import common_pb2, password_reset_pb2, password_reset_pb2_grpc

        self.grpc = grpc
        self.a, self.g, self.u, self.pr = auth_pb2, groups_pb2, users_pb2, password_reset_pb2
        self.common = common_pb2
        ch = grpc.insecure_channel(GRPC)
        self.auth = auth_pb2_grpc.AuthServiceStub(ch)
        self.groups = groups_pb2_grpc.GroupServiceStub(ch)
        self.users = users_pb2_grpc.UserServiceStub(ch)
        self.resets = password_reset_pb2_grpc.PasswordResetServiceStub(ch)
        self.md = self.bearer(self.auth.Login(auth_pb2.LoginRequest(username="admin", password=ADMIN_PASSWORD)).tokens.access_token)

    @staticmethod
    def bearer(token):
        return [("authorization", f"Bearer {token}")]

    def user(self, username):
        return self.users.GetUser(self.u.GetUserRequest(name=f"users/{username}"), metadata=self.md).user

    def approvers(self):
        """The members of Payments/Approvers (set up by sso.rs), as user names."""
        gs = self.groups.ListGroups(self.g.ListGroupsRequest(parent=self.payments(), page_size=50), metadata=self.md).groups
        g = next(x for x in gs if x.display_name == "Approvers")
        ms = self.groups.ListGroupMembers(self.g.ListGroupMembersRequest(group=g.name, page_size=50), metadata=self.md).members
        return set(ms)

    def payments(self):
        from fluxgate.v1 import catalog_pb2, catalog_pb2_grpc

        cat = catalog_pb2_grpc.CatalogServiceStub(self.grpc.insecure_channel(GRPC))
        ps = cat.ListPortfolios(catalog_pb2.ListPortfoliosRequest(), metadata=self.md).portfolios
        return next(p.name for p in ps if p.display_name == "Payments")

    def collect(self, code, verifier):
        return self.auth.CompleteSsoSignIn(self.a.CompleteSsoSignInRequest(code=code, code_verifier=verifier))

    def refused(self, f, code):
        try:
            f()
        except self.grpc.RpcError as e:
            assert e.code() == code, (e.code(), e.details())
            return e.details()
        raise AssertionError("expected a refusal")


# ---------------------------------------------------------------- the flows


class Leg:
    """One sign-in driven over HTTP, as a browser would, keeping its own cookie."""

    def __init__(self, provider, verifier=None, challenge=None):
        self.verifier, challenge2 = pkce()
        if verifier:
            self.verifier, challenge2 = verifier, challenge
        self.http = httpx.Client(follow_redirects=False, timeout=15)
        r = self.http.get(f"{BASE}/sso/{provider}/start", params={"code_challenge": challenge2})
        assert r.status_code == 303, (r.status_code, r.text)
        self.cookie = r.headers["set-cookie"].split(";")[0]
        assert r.headers["set-cookie"].lower().count("httponly") == 1
        self.to_provider = r.headers["location"]

    def at_hostile(self):
        """The hostile provider's answer: the address of FluxGate's callback."""
        r = self.http.get(self.to_provider)
        assert r.status_code == 302, r.text
        return r.headers["location"]

    def at_mock(self, sub):
        r = self.http.get(self.to_provider)
        assert r.status_code == 200, r.text
        r = self.http.post(self.to_provider, data={"sub": sub})
        assert r.status_code == 302, r.text
        return r.headers["location"]

    def back(self, callback, cookie=True):
        """Delivers the provider's answer; FluxGate's redirect and its query."""
        headers = {"cookie": self.cookie} if cookie else {}
        r = self.http.get(callback, headers=headers)
        assert r.status_code == 303, (r.status_code, r.text)
        loc = r.headers["location"]
        return loc, dict(urllib.parse.parse_qsl(urllib.parse.urlparse(loc).query))


def hostile_cases(api, hostile):
    """Each attack refused with its one message (and audited: sso.rs counts the events)."""
    good = {"sub": "hostile-user", "email": "nobody-here@example.com", "email_verified": True}
    cases = [
        ("audience", "for another client (audience)"),
        ("expired", "has expired"),
        ("nonce", "nonce is missing or does not match"),
        ("no_nonce", "nonce is missing or does not match"),
        ("issuer", "issued by another issuer"),
        ("unknown_key", "signed by a key the provider does not publish"),
        ("hs256", "signature algorithm is not allowed (algorithm `HS256`"),
        ("alg_none", "none"),
        ("denied", "the provider refused: access_denied"),
        ("iss_param", "mix-up"),
    ]
    for scenario, words in cases:
        hostile.scenario, hostile.claims = scenario, good
        leg = Leg("hostile")
        loc, q = leg.back(leg.at_hostile())
        assert loc.startswith(f"{BASE}/sso/done?"), loc
        assert "code" not in q, (scenario, q)
        assert words in q.get("error", ""), (scenario, q)
        print(f"  refused {scenario}: {q['error']}")

    # A well-formed answer from a provider that may not create accounts: no account matches.
    hostile.scenario = "ok"
    leg = Leg("hostile")
    redeemed = leg.at_hostile()
    _, q = leg.back(redeemed)
    assert "no account here matches" in q.get("error", ""), q

    # The state: made up; the right one without the browser's cookie; replayed (the code too).
    leg = Leg("hostile")
    cb = leg.at_hostile()
    forged = cb.split("state=")[0] + "state=made-up-state"
    _, q = leg.back(forged)
    assert "wrong state" in q["error"], q
    _, q = leg.back(cb, cookie=False)
    assert "not started in this browser" in q["error"], q
    _, q = leg.back(cb)
    assert "already used" in q["error"], q
    # A used authorization code replayed inside a fresh sign-in of the attacker's own: the
    # provider refuses it (used, and bound to another PKCE verifier).
    used_code = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(redeemed).query))["code"]
    hostile.scenario = "ok"
    attacker = Leg("hostile")
    fresh = attacker.at_hostile()
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(fresh).query))["state"]
    replay = fresh.split("?")[0] + "?" + urllib.parse.urlencode({"code": used_code, "state": state})
    _, q = attacker.back(replay)
    assert "refused the authorization code" in q["error"], q

    # The mix-up: an answer meant for the hostile provider delivered to the mock's callback.
    leg = Leg("hostile")
    right = leg.at_hostile()
    _, q = leg.back(right.replace("/sso/hostile/callback", "/sso/mock/callback"))
    assert "came back to provider" in q["error"], q
    # ... and the hijacked answer is used up: it cannot be finished at the right address either.
    _, q = leg.back(right)
    assert "already used" in q["error"], q

    # Linking by verified email: carol (made by sso.rs) is found, not created; unverified is not.
    hostile.claims = {"sub": "carol-at-hostile", "email": "carol@example.com", "email_verified": False}
    leg = Leg("hostile")
    _, q = leg.back(leg.at_hostile())
    assert "did not say the email is verified" in q["error"], q
    hostile.claims = {"sub": "carol-at-hostile", "email": "carol@example.com", "email_verified": True}
    leg = Leg("hostile")
    _, q = leg.back(leg.at_hostile())
    assert "code" in q, q
    # The code is the client's: another verifier gets nothing and burns it; it works once.
    api.refused(lambda: api.collect(q["code"], pkce()[0]), api.grpc.StatusCode.UNAUTHENTICATED)
    api.refused(lambda: api.collect(q["code"], leg.verifier), api.grpc.StatusCode.UNAUTHENTICATED)
    leg = Leg("hostile")
    _, q = leg.back(leg.at_hostile())
    r = api.collect(q["code"], leg.verifier)
    assert r.user.username == "carol" and r.tokens.access_token, r
    api.refused(lambda: api.collect(q["code"], leg.verifier), api.grpc.StatusCode.UNAUTHENTICATED)
    # The session is an ordinary one.
    me = api.auth.WhoAmI(api.a.WhoAmIRequest(), metadata=api.bearer(r.tokens.access_token))
    assert me.user.username == "carol", me

    # Key rotation: a token signed by a key published after discovery is accepted once the keys
    # are fetched again (at most every 10 seconds).
    hostile.published = [hostile.key, hostile.next_key]
    time.sleep(10.5)
    hostile.scenario = "rotated"
    leg = Leg("hostile")
    _, q = leg.back(leg.at_hostile())
    assert "code" in q, q
    assert api.collect(q["code"], leg.verifier).user.username == "carol"

    # The last active Team Admin is never demoted by claims: the admin links by email through
    # a provider that maps roles, with no admin role in the token.
    admin = api.user("admin")
    hostile.scenario = "ok"
    hostile.claims = {"sub": "admin-at-hostile", "email": admin.email, "email_verified": True, "roles": []}
    leg = Leg("hostile")
    _, q = leg.back(leg.at_hostile())
    assert api.collect(q["code"], leg.verifier).user.username == "admin"
    assert api.user("admin").role == api.common.ROLE_TEAM_ADMIN


def console_flow(api, mock):
    """A person signs in through the provider in the console, twice; the provider's groups and
    roles follow them; they sign out."""
    mock_user(mock, "alice", email="alice@example.com", email_verified=True, name="Alice Example", groups=["payments-approvers"], roles=["fluxgate-approver"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        try:
            page.goto(BASE + "/")
            page.get_by_role("button", name="Sign in with Mock IdP").click()
            page.get_by_placeholder("sub").fill("alice")
            page.get_by_role("button", name="Authorize").click()
            expect(page.get_by_test_id("whoami")).to_contain_text("alice · Approver")
            page.screenshot(path=os.path.join(SHOTS, "sso-signed-in.png"))
            alice = api.user("alice")
            assert alice.name in api.approvers(), api.approvers()
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("button", name="Sign in with Mock IdP")).to_be_visible()

            # At the provider, alice leaves the group and loses the role.
            mock_user(mock, "alice", email="alice@example.com", email_verified=True, name="Alice Example", groups=[], roles=[])
            page.get_by_role("button", name="Sign in with Mock IdP").click()
            page.get_by_placeholder("sub").fill("alice")
            page.get_by_role("button", name="Authorize").click()
            expect(page.get_by_test_id("whoami")).to_contain_text("alice · Requester")
            assert alice.name not in api.approvers(), api.approvers()
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("button", name="Sign in with Mock IdP")).to_be_visible()

            # A refusal comes back to the console with its message.
            page.goto(BASE + "/sso/done?error=" + urllib.parse.quote("the provider refused: access_denied"))
            expect(page.get_by_role("alert")).to_contain_text("access_denied")
        except Exception:
            page.screenshot(path=os.path.join(SHOTS, "sso-failure.png"))
            raise
        finally:
            browser.close()

    # An account the provider made has no password, and is given none by a reset.
    api.refused(
        lambda: api.resets.ResetUserPassword(api.pr.ResetUserPasswordRequest(name=alice.name, etag=api.user("alice").etag), metadata=api.md),
        api.grpc.StatusCode.FAILED_PRECONDITION,
    )
    api.resets.RequestPasswordReset(api.pr.RequestPasswordResetRequest(email="alice@example.com"))


def fluxctl_flow(api, mock):
    """fluxctl signs in through the browser and a loopback address."""
    mock_user(mock, "bob", email="bob@example.com", email_verified=True, name="Bob Example")
    env = dict(os.environ, FLUXCTL_SESSION_FILE=os.path.join(tempfile.mkdtemp(), "session.json"))
    env.pop("FLUXGATE_TOKEN", None)
    p = subprocess.Popen([FLUXCTL, "--server", BASE, "login", "--sso", "mock", "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = None
    for line in p.stderr:
        if "/sso/mock/start?" in line:
            url = line.strip()
            break
    assert url, "fluxctl printed no address"
    http = httpx.Client(follow_redirects=False, timeout=15)
    r = http.get(url)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"].split(";")[0]
    to_mock = r.headers["location"]
    assert http.get(to_mock).status_code == 200
    r = http.post(to_mock, data={"sub": "bob"})
    r = http.get(r.headers["location"], headers={"cookie": cookie})
    assert r.status_code == 303, r.text
    loopback = r.headers["location"]
    assert loopback.startswith("http://127.0.0.1:") and "code=" in loopback, loopback
    r = httpx.get(loopback)
    assert "Signed in" in r.text, r.text
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, (out, err)
    assert "as bob" in out, out
    who = subprocess.run([FLUXCTL, "--server", BASE, "whoami"], capture_output=True, text=True, env=env)
    assert who.returncode == 0 and "bob" in who.stdout, (who.stdout, who.stderr)

    # Deactivated here: the session ends, and the provider's word no longer signs bob in.
    bob = api.user("bob")
    api.users.DeactivateUser(api.u.DeactivateUserRequest(name=bob.name, etag=bob.etag), metadata=api.md)
    who = subprocess.run([FLUXCTL, "--server", BASE, "whoami"], capture_output=True, text=True, env=env)
    assert who.returncode != 0, who.stdout
    leg = Leg("mock")
    _, q = leg.back(leg.at_mock("bob"))
    assert "deactivated" in q.get("error", ""), q


def main():
    mock = start_mock(int(MOCK_PORT))
    hostile = Hostile(int(HOSTILE_PORT))
    api = Api()
    providers = api.auth.ListSsoProviders(api.a.ListSsoProvidersRequest())
    assert [p.id for p in providers.providers] == ["mock", "hostile"], providers
    assert providers.providers[0].start_path == "/sso/mock/start"
    console_flow(api, mock)
    print("console flow: ok")
    fluxctl_flow(api, mock)
    print("fluxctl flow: ok")
    hostile_cases(api, hostile)
    print("hostile cases: ok")
    print("sso: ok")


if __name__ == "__main__":
    main()
