// The pages of a person who is not signed in yet, or whose password must change: sign-in,
// forgot password, the emailed reset and registration links, and the password change.
import { useEffect, useState } from "preact/hooks";

import { api, expiry, keyed, setSession, Code, ConnectError } from "../api";
import { AuthService, type SsoProvider } from "../gen/fluxgate/v1/auth_pb";
import { PasswordResetService } from "../gen/fluxgate/v1/password_reset_pb";
import { SettingsService, type PasswordPolicy } from "../gen/fluxgate/v1/settings_pb";
import { navigate, takeSecretParam } from "../router";
import { Alert, ErrorAlert, Field, useAction } from "../ui";

function Card(props: { title: string; children: preact.ComponentChildren }) {
  return (
    <main class="card" id="main">
      <h1>{props.title}</h1>
      {props.children}
    </main>
  );
}

/** Where a sign-in through an identity provider keeps its PKCE verifier until it comes back. */
const VERIFIER = "fluxgate.sso.verifier";

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Sends the browser to the provider, with the S256 challenge of a verifier kept for the return. */
async function startSso(p: SsoProvider): Promise<void> {
  if (!crypto.subtle) throw new Error("signing in through an identity provider needs HTTPS (or localhost)");
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(VERIFIER, verifier);
  location.assign(`${p.startPath}?code_challenge=${base64url(digest)}`);
}

/** The identity providers' buttons; and whether passwords are for break-glass admins only. */
function useProviders(): { providers: SsoProvider[]; passwordsOff: boolean } {
  const [state, set] = useState<{ providers: SsoProvider[]; passwordsOff: boolean }>({ providers: [], passwordsOff: false });
  useEffect(() => {
    api(AuthService)
      .listSsoProviders({})
      .then((r) => set({ providers: r.providers, passwordsOff: r.passwordSignInDisabled }))
      .catch(() => undefined);
  }, []);
  return state;
}

/** Where a sign-in through an identity provider comes back: its one-time code becomes a session. */
export function SsoDone() {
  const [error, setError] = useState("");
  useEffect(() => {
    const code = takeSecretParam("code");
    const failed = takeSecretParam("error");
    const verifier = sessionStorage.getItem(VERIFIER) ?? "";
    sessionStorage.removeItem(VERIFIER);
    if (failed || !code) {
      setError(failed || "The identity provider sent nothing back.");
      return;
    }
    api(AuthService)
      .completeSsoSignIn({ code, codeVerifier: verifier })
      .then((r) => {
        if (!r.user || !r.tokens) throw new Error("incomplete sign-in reply");
        setSession({ accessToken: r.tokens.accessToken, expiresAt: expiry(r.tokens.accessTokenExpireTime), user: r.user });
        navigate("/", true);
      })
      .catch((e) => setError(ConnectError.from(e).rawMessage));
  }, []);
  return (
    <Card title="Signing in">
      {error ? (
        <>
          <Alert kind="error">Single sign-on failed: {error}</Alert>
          <p>
            <a href="/signin">Back to sign-in</a>
          </p>
        </>
      ) : (
        <p role="status">Finishing the sign-in…</p>
      )}
    </Card>
  );
}

export function SignIn(props: { notice?: string }) {
  const { providers, passwordsOff } = useProviders();
  const sso = useAction((_key: string, p: SsoProvider) => startSso(p));
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [needCode, setNeedCode] = useState(false);
  const login = useAction(async (_key: string) => {
    let r;
    try {
      r = await api(AuthService).login({ username, password, secondFactorCode: code.trim() });
    } catch (e) {
      // The password checked out and the account has a second factor: ask for the code.
      if (ConnectError.from(e).code === Code.FailedPrecondition && ConnectError.from(e).rawMessage.includes("second-factor")) {
        setNeedCode(true);
      }
      throw e;
    }
    if (!r.user || !r.tokens) throw new Error("incomplete sign-in reply");
    setSession({ accessToken: r.tokens.accessToken, expiresAt: expiry(r.tokens.accessTokenExpireTime), user: r.user });
    const factor = r.secondFactorRequirement;
    navigate(r.user.mustChangePassword ? "/change-password" : factor ? "/account" : "/", true);
  });
  const form = (
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void login.run();
        }}
      >
        <Field
          label="Username or email"
          name="username"
          autocomplete="username"
          value={username}
          onValue={setUsername}
          fields={login.fields}
          required
          autofocus
        />
        <Field
          label="Password"
          name="password"
          type="password"
          autocomplete="current-password"
          value={password}
          onValue={setPassword}
          fields={login.fields}
          required
        />
        {needCode && (
          <Field
            label="Authentication code"
            name="second_factor_code"
            autocomplete="one-time-code"
            value={code}
            onValue={setCode}
            path="second_factor_code"
            fields={login.fields}
            hint="The 6 digits your authenticator app shows, or one of your recovery codes."
            autofocus
            required
          />
        )}
        {!(needCode && !code) && <ErrorAlert action={login} />}
        <button type="submit" disabled={login.busy}>
          {login.busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
  );
  return (
    <Card title="Sign in to FluxGate">
      {props.notice && <Alert kind="info">{props.notice}</Alert>}
      {providers.length > 0 && (
        <div class="sso">
          {providers.map((p) => (
            <button type="button" key={p.id} disabled={sso.busy} onClick={() => void sso.run(p)}>
              Sign in with {p.displayName || p.id}
            </button>
          ))}
          <ErrorAlert action={sso} />
        </div>
      )}
      {passwordsOff ? (
        <details>
          <summary>Break-glass sign-in (Team Admins)</summary>
          {form}
        </details>
      ) : (
        <>
          {providers.length > 0 && <p class="or">or with your password</p>}
          {form}
          <p>
            <a href="/forgot-password">Forgot your password?</a>
          </p>
        </>
      )}
    </Card>
  );
}

export function ForgotPassword() {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const ask = useAction(async (_key: string) => {
    await api(PasswordResetService).requestPasswordReset({ email });
    setSent(true);
  });
  return (
    <Card title="Reset your password">
      {sent ? (
        <Alert kind="success">
          If an active account has the address {email}, a reset link is on its way to it. The link works once and
          expires soon.
        </Alert>
      ) : (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void ask.run();
          }}
        >
          <Field
            label="Email address"
            name="email"
            type="email"
            autocomplete="email"
            value={email}
            onValue={setEmail}
            fields={ask.fields}
            required
          />
          <ErrorAlert action={ask} />
          <button type="submit" disabled={ask.busy}>
            Send me a reset link
          </button>
        </form>
      )}
      <p>
        <a href="/signin">Back to sign-in</a>
      </p>
    </Card>
  );
}

/** The rules of the live password policy, each ticked as the typed password meets it. */
export function PasswordRules(props: { password: string }) {
  const [policy, setPolicy] = useState<PasswordPolicy | null>(null);
  useEffect(() => {
    api(SettingsService)
      .getPasswordPolicy({})
      .then((r) => setPolicy(r.passwordPolicy ?? null))
      .catch(() => setPolicy(null));
  }, []);
  if (!policy) return null;
  const p = props.password;
  const len = [...p].length;
  const rules: [boolean, string][] = [[len >= policy.minLength && len <= policy.maxLength, `${policy.minLength} to ${policy.maxLength} characters`]];
  if (policy.requireUppercase) rules.push([/\p{Lu}/u.test(p), "an upper-case letter"]);
  if (policy.requireLowercase) rules.push([/\p{Ll}/u.test(p), "a lower-case letter"]);
  if (policy.requireDigit) rules.push([/\p{Nd}/u.test(p), "a digit"]);
  if (policy.requireSymbol) rules.push([/[^\p{L}\p{Nd}]/u.test(p), "a symbol"]);
  return (
    <ul class="rules" aria-label="Password rules" aria-live="polite">
      {rules.map(([ok, text]) => (
        <li key={text} class={ok ? "ok" : "todo"}>
          <span aria-hidden="true">{ok ? "✓" : "○"}</span> {text}
          <span class="sr-only">{ok ? " (met)" : " (not yet met)"}</span>
        </li>
      ))}
      {policy.rejectCommon && <li class="note">not a commonly used password</li>}
    </ul>
  );
}

function NewPassword(props: {
  value: string;
  onValue: (v: string) => void;
  confirm: string;
  onConfirm: (v: string) => void;
  fields: { field: string; description: string }[];
  path: string;
}) {
  return (
    <>
      <Field
        label="New password"
        name="new-password"
        type="password"
        autocomplete="new-password"
        value={props.value}
        onValue={props.onValue}
        path={props.path}
        fields={props.fields}
        required
      />
      <PasswordRules password={props.value} />
      <Field
        label="Repeat the new password"
        name="confirm-password"
        type="password"
        autocomplete="new-password"
        value={props.confirm}
        onValue={props.onConfirm}
        fields={props.confirm && props.confirm !== props.value ? [{ field: "confirm", description: "does not match" }] : []}
        path="confirm"
        required
      />
    </>
  );
}

/** The page of an emailed link: the token is read once, then taken out of the address bar. */
function LinkPage(props: { kind: "register" | "reset" }) {
  const [token] = useState(() => takeSecretParam("token"));
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [done, setDone] = useState("");
  const submit = useAction(async (key: string) => {
    if (password !== confirm) throw new Error("The two passwords differ.");
    const svc = api(PasswordResetService);
    const r =
      props.kind === "register"
        ? await svc.completeRegistration({ token, password }, keyed(key))
        : await svc.confirmPasswordReset({ token, newPassword: password }, keyed(key));
    setDone(r.username);
  });
  const title = props.kind === "register" ? "Choose your password" : "Choose a new password";
  if (!token) {
    return (
      <Card title={title}>
        <Alert>This link has no token. Open the link from your email again, or ask for a new one.</Alert>
        <p>
          <a href={props.kind === "register" ? "/signin" : "/forgot-password"}>
            {props.kind === "register" ? "Go to sign-in" : "Ask for a new reset link"}
          </a>
        </p>
      </Card>
    );
  }
  if (done) {
    return (
      <Card title={title}>
        <Alert kind="success">
          Your password is set, {done}. You can sign in with it now.
        </Alert>
        <p>
          <a href="/signin">Sign in</a>
        </p>
      </Card>
    );
  }
  const dead = submit.code === Code.NotFound || submit.code === Code.FailedPrecondition;
  return (
    <Card title={title}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit.run();
        }}
      >
        <NewPassword
          value={password}
          onValue={setPassword}
          confirm={confirm}
          onConfirm={setConfirm}
          fields={submit.fields}
          path={props.kind === "register" ? "password" : "new_password"}
        />
        <ErrorAlert action={submit} />
        {dead && (
          <p>
            <a href="/forgot-password">Ask for a new link</a>
          </p>
        )}
        <button type="submit" disabled={submit.busy}>
          Set password
        </button>
      </form>
    </Card>
  );
}

export const Register = () => <LinkPage kind="register" />;
export const ResetPassword = () => <LinkPage kind="reset" />;

/** Change one's own password; forced after a temporary password. */
export function ChangePassword(props: { forced: boolean; onDone: () => void; children?: preact.ComponentChildren }) {
  const [current, setCurrent] = useState("");
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [done, setDone] = useState(false);
  const change = useAction(async (key: string) => {
    if (password !== confirm) throw new Error("The two passwords differ.");
    const r = await api(AuthService).changePassword({ currentPassword: current, newPassword: password }, keyed(key));
    // Every earlier session, this one included, is revoked: the reply's session replaces it.
    if (r.tokens && r.user) {
      setSession({ accessToken: r.tokens.accessToken, expiresAt: expiry(r.tokens.accessTokenExpireTime), user: r.user });
    }
    setDone(true);
    props.onDone();
  });
  return (
    <Card title={props.forced ? "Choose a new password" : "Change your password"}>
      {props.forced && (
        <Alert kind="info">Your password is temporary: choose your own before you go on.</Alert>
      )}
      {done && <Alert kind="success">Your password is changed. Your other sessions were signed out.</Alert>}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void change.run();
        }}
      >
        <Field
          label="Current password"
          name="current-password"
          type="password"
          autocomplete="current-password"
          value={current}
          onValue={setCurrent}
          path="current_password"
          fields={change.fields}
          required
        />
        <NewPassword
          value={password}
          onValue={setPassword}
          confirm={confirm}
          onConfirm={setConfirm}
          fields={change.fields}
          path="new_password"
        />
        <ErrorAlert action={change} />
        <button type="submit" disabled={change.busy}>
          Change password
        </button>
      </form>
      {props.children}
    </Card>
  );
}
