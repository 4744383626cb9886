// Team Admins' pages: the run-time settings (password policy, lockout, token lifetimes) and
// the email outbox.
import { useEffect, useState } from "preact/hooks";
import { create } from "@bufbuild/protobuf";
import { DurationSchema, FieldMaskSchema } from "@bufbuild/protobuf/wkt";

import { api, keyed, roleNames, when } from "../api";
import { Role } from "../gen/fluxgate/v1/common_pb";
import { EmailService, EmailState, type Email } from "../gen/fluxgate/v1/email_pb";
import {
  LockoutPolicySchema,
  PasswordPolicySchema,
  SettingsSchema,
  SettingsService,
  SignInPolicySchema,
  TokenPolicySchema,
  type Settings as SettingsMsg,
} from "../gen/fluxgate/v1/settings_pb";
import { Alert, Check, Dialog, ErrorAlert, Field, LoadMore, Select, useAction } from "../ui";

const minutes = (d: { seconds: bigint } | undefined) => String(Number(d?.seconds ?? 0n) / 60);
const duration = (mins: string) => create(DurationSchema, { seconds: BigInt(Math.round(Number(mins) * 60)) });
const ROLES = [Role.REQUESTER, Role.APPROVER, Role.TEAM_ADMIN];

export function Settings() {
  const [s, setS] = useState<SettingsMsg | null>(null);
  const [min, setMin] = useState("");
  const [max, setMax] = useState("");
  const [upper, setUpper] = useState(false);
  const [lower, setLower] = useState(false);
  const [digit, setDigit] = useState(false);
  const [symbol, setSymbol] = useState(false);
  const [common, setCommon] = useState(false);
  const [attempts, setAttempts] = useState("");
  const [lockMins, setLockMins] = useState("");
  const [accessMins, setAccessMins] = useState("");
  const [refreshMins, setRefreshMins] = useState("");
  const [factorRoles, setFactorRoles] = useState<Role[]>([]);
  const [graceDays, setGraceDays] = useState("");
  const [passwordsOff, setPasswordsOff] = useState(false);
  const [breakGlass, setBreakGlass] = useState("");
  const [saved, setSaved] = useState(false);
  const show = (x: SettingsMsg) => {
    setS(x);
    const p = x.passwordPolicy;
    setMin(String(p?.minLength ?? ""));
    setMax(String(p?.maxLength ?? ""));
    setUpper(!!p?.requireUppercase);
    setLower(!!p?.requireLowercase);
    setDigit(!!p?.requireDigit);
    setSymbol(!!p?.requireSymbol);
    setCommon(!!p?.rejectCommon);
    setAttempts(String(x.lockoutPolicy?.maxFailedAttempts ?? ""));
    setLockMins(minutes(x.lockoutPolicy?.lockoutDuration));
    setAccessMins(minutes(x.tokenPolicy?.accessTokenTtl));
    setRefreshMins(minutes(x.tokenPolicy?.refreshTokenTtl));
    const sp = x.signInPolicy;
    setFactorRoles(sp?.secondFactorRequiredRoles ?? []);
    setGraceDays(String(Number(sp?.secondFactorGracePeriod?.seconds ?? 0n) / 86400));
    setPasswordsOff(!!sp?.passwordSignInDisabled);
    setBreakGlass((sp?.breakGlassUsers ?? []).join(", "));
  };
  const load = useAction(async () => {
    const r = await api(SettingsService).getSettings({ name: "settings" });
    if (r.settings) show(r.settings);
  });
  useEffect(() => {
    void load.run();
  }, []);
  const save = useAction(async (key: string) => {
    const r = await api(SettingsService).updateSettings(
      {
        settings: create(SettingsSchema, {
          name: "settings",
          etag: s?.etag ?? "",
          passwordPolicy: create(PasswordPolicySchema, {
            minLength: Number(min),
            maxLength: Number(max),
            requireUppercase: upper,
            requireLowercase: lower,
            requireDigit: digit,
            requireSymbol: symbol,
            rejectCommon: common,
          }),
          lockoutPolicy: create(LockoutPolicySchema, { maxFailedAttempts: Number(attempts), lockoutDuration: duration(lockMins) }),
          tokenPolicy: create(TokenPolicySchema, { accessTokenTtl: duration(accessMins), refreshTokenTtl: duration(refreshMins) }),
          signInPolicy: create(SignInPolicySchema, {
            secondFactorRequiredRoles: factorRoles,
            secondFactorGracePeriod: duration(String(Number(graceDays) * 1440)),
            passwordSignInDisabled: passwordsOff,
            breakGlassUsers: breakGlass
              .split(",")
              .map((u) => u.trim())
              .filter((u) => u)
              .map((u) => (u.startsWith("users/") ? u : `users/${u}`)),
          }),
        }),
        updateMask: create(FieldMaskSchema, { paths: ["password_policy", "lockout_policy", "token_policy", "sign_in_policy"] }),
      },
      keyed(key),
    );
    if (r.settings) show(r.settings);
    setSaved(true);
  });
  if (!s) {
    return (
      <main id="main">
        <h1>Settings</h1>
        <ErrorAlert action={load} />
      </main>
    );
  }
  const f = save.fields;
  return (
    <main id="main">
      <h1>Settings</h1>
      <p class="hint">Last changed {when(s.updateTime)}. Changes apply at once, on every server.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setSaved(false);
          void save.run();
        }}
      >
        <div class="panes">
          <fieldset class="panel">
            <legend>Password policy</legend>
            <Field label="Minimum length" name="min_length" type="number" value={min} onValue={setMin} path="settings.password_policy.min_length" fields={f} />
            <Field label="Maximum length" name="max_length" type="number" value={max} onValue={setMax} path="settings.password_policy.max_length" fields={f} />
            <Check label="An upper-case letter" checked={upper} onValue={setUpper} />
            <Check label="A lower-case letter" checked={lower} onValue={setLower} />
            <Check label="A digit" checked={digit} onValue={setDigit} />
            <Check label="A symbol" checked={symbol} onValue={setSymbol} />
            <Check label="Refuse commonly used passwords" checked={common} onValue={setCommon} />
          </fieldset>
          <fieldset class="panel">
            <legend>Lockout</legend>
            <Field label="Failed sign-ins that lock an account" name="max_failed_attempts" type="number" value={attempts} onValue={setAttempts} path="settings.lockout_policy.max_failed_attempts" fields={f} />
            <Field label="Locked for (minutes)" name="lockout_duration" type="number" value={lockMins} onValue={setLockMins} path="settings.lockout_policy.lockout_duration" fields={f} />
          </fieldset>
          <fieldset class="panel">
            <legend>Sessions</legend>
            <Field label="Access token lifetime (minutes)" name="access_token_ttl" type="number" value={accessMins} onValue={setAccessMins} path="settings.token_policy.access_token_ttl" fields={f} />
            <Field label="Refresh token lifetime (minutes)" name="refresh_token_ttl" type="number" value={refreshMins} onValue={setRefreshMins} path="settings.token_policy.refresh_token_ttl" fields={f} />
          </fieldset>
          <fieldset class="panel">
            <legend>Sign-in</legend>
            <p class="hint">Two-step sign-in required for</p>
            {ROLES.map((r) => (
              <Check
                key={r}
                label={roleNames[r]}
                checked={factorRoles.includes(r)}
                onValue={(on) => setFactorRoles(on ? [...factorRoles, r] : factorRoles.filter((x) => x !== r))}
              />
            ))}
            <Field label="Time to set it up (days)" name="second_factor_grace" type="number" value={graceDays} onValue={setGraceDays} path="settings.sign_in_policy.second_factor_grace_period" fields={f} />
            <Check label="Password sign-in disabled (identity providers only)" checked={passwordsOff} onValue={setPasswordsOff} />
            <Field
              label="Break-glass Team Admins (usernames, comma-separated)"
              name="break_glass_users"
              value={breakGlass}
              onValue={setBreakGlass}
              path="settings.sign_in_policy.break_glass_users"
              fields={f}
              hint="They keep their password while password sign-in is disabled: the way in when the identity provider is down."
            />
          </fieldset>
        </div>
        {saved && <Alert kind="success">Settings saved.</Alert>}
        <ErrorAlert action={save} />
        <div class="buttons">
          <button type="submit" disabled={save.busy}>
            Save settings
          </button>
        </div>
      </form>
    </main>
  );
}

const stateNames: Record<EmailState, string> = {
  [EmailState.UNSPECIFIED]: "—",
  [EmailState.PENDING]: "Pending",
  [EmailState.SENT]: "Sent",
  [EmailState.FAILED]: "Failed",
  [EmailState.HELD]: "Held (no SMTP server)",
};

export function Outbox() {
  const [state, setState] = useState("");
  const [recipient, setRecipient] = useState("");
  const [emails, setEmails] = useState<Email[]>([]);
  const [next, setNext] = useState("");
  const [open, setOpen] = useState<Email | null>(null);
  const load = useAction(async (_key: string, token: string) => {
    const r = await api(EmailService).listEmails({
      pageSize: 50,
      pageToken: token,
      states: state ? [Number(state) as EmailState] : [],
      recipient: recipient.trim(),
    });
    setEmails((xs) => (token ? [...xs, ...r.emails] : r.emails));
    setNext(r.nextPageToken);
  });
  useEffect(() => {
    const t = window.setTimeout(() => void load.run(""), 200);
    return () => window.clearTimeout(t);
  }, [state, recipient]);
  const retry = useAction(async (key: string, e: Email) => {
    const r = await api(EmailService).retryEmail({ name: e.name }, keyed(key));
    if (r.email) setEmails((xs) => xs.map((x) => (x.name === e.name ? r.email! : x)));
  });
  const states = Object.entries(stateNames).filter(([k]) => k !== "0") as [string, string][];
  return (
    <main id="main">
      <h1>Email outbox</h1>
      <div class="toolbar" role="search">
        <Select label="State" name="state" value={state} onValue={setState} options={[["", "Any state"], ...states]} />
        <Field label="Recipient" name="recipient" type="search" value={recipient} onValue={setRecipient} />
      </div>
      <ErrorAlert action={load} />
      <ErrorAlert action={retry} />
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Emails">
        <table>
          <thead>
            <tr>
              <th scope="col">Written</th>
              <th scope="col">To</th>
              <th scope="col">Subject</th>
              <th scope="col">State</th>
              <th scope="col">Attempts</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {emails.map((e) => (
              <tr key={e.name}>
                <td>{when(e.createTime)}</td>
                <td>{e.recipient}</td>
                <td>{e.subject}</td>
                <td>
                  {stateNames[e.state]}
                  {e.lastError && <div class="hint">{e.lastError}</div>}
                </td>
                <td>{e.attempts}</td>
                <td class="actions">
                  <button type="button" class="secondary small" onClick={() => setOpen(e)}>
                    Read<span class="sr-only"> the email to {e.recipient}</span>
                  </button>
                  {e.state === EmailState.FAILED && (
                    <button type="button" class="secondary small" disabled={retry.busy} onClick={() => void retry.run(e)}>
                      Retry
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!load.busy && !load.error && emails.length === 0 && <p>No email.</p>}
      <LoadMore next={next} busy={load.busy} onMore={() => void load.run(next)} />
      {open && (
        <Dialog title={open.subject} onClose={() => setOpen(null)}>
          <p>To {open.recipient}</p>
          <pre class="json">{open.body || "(the body is kept only while the message is held or pending)"}</pre>
          <div class="buttons">
            <button type="button" onClick={() => setOpen(null)}>
              Close
            </button>
          </div>
        </Dialog>
      )}
    </main>
  );
}
