// My account: the password, and the second factor (TOTP with a QR code, recovery codes shown
// once, removal).
import { useEffect, useState } from "preact/hooks";
import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { encode } from "uqr";

import { api, keyed, when } from "../api";
import {
  AuthService,
  type BeginTotpEnrollmentResponse,
  type GetSecondFactorResponse,
  type NotificationPreferences,
} from "../gen/fluxgate/v1/auth_pb";
import { Alert, Check, Confirm, ErrorAlert, Field, Secret, useAction } from "../ui";
import { ChangePassword } from "./auth";

/** A QR code drawn as SVG squares (no script, no inline style: the CSP allows it). */
function Qr(props: { text: string; label: string }) {
  const q = encode(props.text, { ecc: "M", border: 2 });
  const cells: preact.JSX.Element[] = [];
  q.data.forEach((row, y) =>
    row.forEach((on, x) => {
      if (on) cells.push(<rect key={`${x}-${y}`} x={x} y={y} width={1} height={1} />);
    }),
  );
  return (
    <svg class="qr" viewBox={`0 0 ${q.size} ${q.size}`} role="img" aria-label={props.label}>
      <rect class="qr-bg" x={0} y={0} width={q.size} height={q.size} />
      {cells}
    </svg>
  );
}

function SecondFactor() {
  const [status, setStatus] = useState<GetSecondFactorResponse | null>(null);
  const [enrolment, setEnrolment] = useState<BeginTotpEnrollmentResponse | null>(null);
  const [code, setCode] = useState("");
  const [recovery, setRecovery] = useState<string[]>([]);
  const [removing, setRemoving] = useState(false);
  const [password, setPassword] = useState("");
  const load = useAction(async () => setStatus(await api(AuthService).getSecondFactor({})));
  useEffect(() => {
    void load.run();
  }, []);
  const begin = useAction(async (key: string) => {
    setEnrolment(await api(AuthService).beginTotpEnrollment({}, keyed(key)));
    setRecovery([]);
  });
  const confirm = useAction(async (key: string) => {
    const r = await api(AuthService).confirmTotpEnrollment({ code: code.trim() }, keyed(key));
    setRecovery(r.recoveryCodes);
    setEnrolment(null);
    setCode("");
    await load.run();
  });
  const remove = useAction(async (key: string) => {
    await api(AuthService).removeSecondFactor({ user: "", currentPassword: password }, keyed(key));
    setRemoving(false);
    setPassword("");
    setRecovery([]);
    await load.run();
  });
  return (
    <section class="panel" aria-labelledby="two-step">
      <h2 id="two-step">Two-step sign-in</h2>
      <ErrorAlert action={load} />
      {status?.requirement && !status.totpEnabled && (
        <Alert kind={status.requirement.overdue ? "error" : "info"}>
          {status.requirement.overdue
            ? "Your role requires two-step sign-in and the time to set it up has passed: set it up below to use the console again."
            : `Your role requires two-step sign-in: set it up by ${when(status.requirement.dueTime)}.`}
        </Alert>
      )}
      {recovery.length > 0 && (
        <Alert kind="success">
          <p>
            Two-step sign-in is on. Keep these recovery codes somewhere safe: each signs you in once if you lose your
            authenticator. They are shown only now.
          </p>
          <Secret label="Recovery codes" value={recovery.join("\n")} />
        </Alert>
      )}
      {status?.totpEnabled ? (
        <>
          <p data-testid="second-factor-status">
            On: sign-in asks for a code from your authenticator app. {status.recoveryCodesLeft} recovery code
            {status.recoveryCodesLeft === 1 ? "" : "s"} left.
          </p>
          <button type="button" class="danger" onClick={() => setRemoving(true)}>
            Turn off two-step sign-in
          </button>
        </>
      ) : enrolment ? (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void confirm.run();
          }}
        >
          <p>Scan this code with an authenticator app, or type the key into it. Then enter the code it shows.</p>
          <Qr text={enrolment.otpauthUri} label="QR code for your authenticator app" />
          <Secret label="Key" value={enrolment.secret} />
          <Field
            label="Code from the app"
            name="totp-code"
            autocomplete="one-time-code"
            value={code}
            onValue={setCode}
            path="code"
            fields={confirm.fields}
            required
          />
          <ErrorAlert action={confirm} />
          <button type="submit" disabled={confirm.busy}>
            Turn on
          </button>
        </form>
      ) : (
        status && (
          <>
            <p data-testid="second-factor-status">Off: a password alone signs you in.</p>
            <ErrorAlert action={begin} />
            <button type="button" disabled={begin.busy} onClick={() => void begin.run()}>
              Set up two-step sign-in
            </button>
          </>
        )
      )}
      {removing && (
        <Confirm title="Turn off two-step sign-in?" action={remove} verb="Turn off" danger onClose={() => setRemoving(false)}>
          <p>Your password alone will sign you in again; your recovery codes stop working.</p>
          <Field
            label="Your password"
            name="remove-password"
            type="password"
            autocomplete="current-password"
            value={password}
            onValue={setPassword}
            path="current_password"
            fields={remove.fields}
            required
          />
        </Confirm>
      )}
    </section>
  );
}

/** Which emails the person wants: review requests, and decisions on their own requests. */
function Notifications() {
  const [prefs, setPrefs] = useState<NotificationPreferences | null>(null);
  const load = useAction(async () => {
    const r = await api(AuthService).getNotificationPreferences({});
    setPrefs(r.preferences ?? null);
  });
  useEffect(() => {
    void load.run();
  }, []);
  const save = useAction(async (key: string, next: NotificationPreferences) => {
    try {
      const r = await api(AuthService).updateNotificationPreferences(
        { preferences: next, updateMask: create(FieldMaskSchema, { paths: ["review_requests", "decisions", "review_digest"] }) },
        keyed(key),
      );
      setPrefs(r.preferences ?? null);
    } catch (e) {
      // Show what the server has, not what was asked for.
      void load.run();
      throw e;
    }
  });
  // The box follows the click at once; the server's answer settles it.
  const change = (next: NotificationPreferences) => {
    setPrefs(next);
    void save.run(next);
  };
  return (
    <section class="panel" aria-labelledby="notifications">
      <h2 id="notifications">Email notifications</h2>
      <ErrorAlert action={load} />
      {prefs && (
        <>
          <Check
            label="Change requests I may review"
            checked={prefs.reviewRequests}
            onValue={(v) => change({ ...prefs, reviewRequests: v })}
          />
          {prefs.reviewRequests && (
            <Check
              label="As one daily digest instead of an email per request"
              checked={prefs.reviewDigest}
              onValue={(v) => change({ ...prefs, reviewDigest: v })}
            />
          )}
          <Check
            label="Decisions on my change requests"
            checked={prefs.decisions}
            onValue={(v) => change({ ...prefs, decisions: v })}
          />
        </>
      )}
      <ErrorAlert action={save} />
    </section>
  );
}

export function Account() {
  return (
    <ChangePassword forced={false} onDone={() => undefined}>
      <SecondFactor />
      <Notifications />
    </ChangePassword>
  );
}
