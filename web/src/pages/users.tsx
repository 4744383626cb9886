// Users: list with search and filters (paged by the server's page tokens, never all at once),
// create, edit, reset password, deactivate / reactivate and delete. Every refusal shown is the
// server's own.
import { useEffect, useRef, useState } from "preact/hooks";
import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";

import { api, currentSession, keyed, roleNames, when } from "../api";
import { Role } from "../gen/fluxgate/v1/common_pb";
import { AuthService } from "../gen/fluxgate/v1/auth_pb";
import { PasswordResetService } from "../gen/fluxgate/v1/password_reset_pb";
import { UserSchema, UserService, type RegistrationLink, type User } from "../gen/fluxgate/v1/users_pb";
import { Alert, Dialog, ErrorAlert, Field, FormDialog, LoadMore, Secret, Select, useAction } from "../ui";
import { PasswordRules } from "./auth";

const PAGE = 50;

const roleOptions: [string, string][] = [
  [String(Role.REQUESTER), roleNames[Role.REQUESTER]],
  [String(Role.APPROVER), roleNames[Role.APPROVER]],
  [String(Role.TEAM_ADMIN), roleNames[Role.TEAM_ADMIN]],
];

type Open =
  | { kind: "create" }
  | { kind: "edit"; user: User }
  | { kind: "reset"; user: User }
  | { kind: "state"; user: User }
  | { kind: "delete"; user: User }
  | null;

/** Why one's own row cannot be deactivated or deleted (the server refuses it too). */
const selfRefused = "A Team Admin cannot deactivate or delete themselves";

export function Users() {
  const me = currentSession()?.user.name;
  const [query, setQuery] = useState("");
  const [role, setRole] = useState("");
  const [state, setState] = useState("");
  const [users, setUsers] = useState<User[]>([]);
  const [next, setNext] = useState("");
  const [open, setOpen] = useState<Open>(null);
  const [notice, setNotice] = useState("");
  const generation = useRef(0);
  const load = useAction(async (_key: string, token: string, gen: number) => {
    const r = await api(UserService).listUsers({
      pageSize: PAGE,
      pageToken: token,
      query: query.trim(),
      role: role ? (Number(role) as Role) : Role.UNSPECIFIED,
      active: state === "" ? undefined : state === "active",
    });
    if (gen !== generation.current) return;
    setUsers((u) => (token ? [...u, ...r.users] : r.users));
    setNext(r.nextPageToken);
  });
  const reload = () => {
    generation.current += 1;
    void load.run("", generation.current);
  };
  useEffect(() => {
    const t = window.setTimeout(reload, 200);
    return () => window.clearTimeout(t);
  }, [query, role, state]);

  // The next page loads when the end of the list scrolls into view.
  const sentinel = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = sentinel.current;
    if (!el || !next) return;
    const io = new IntersectionObserver((es) => {
      if (es.some((e) => e.isIntersecting)) void load.run(next, generation.current);
    });
    io.observe(el);
    return () => io.disconnect();
  }, [next]);

  const replace = (u: User) => setUsers((us) => us.map((x) => (x.name === u.name ? u : x)));
  const done = (text: string, u?: User) => {
    if (u) replace(u);
    setNotice(text);
  };

  return (
    <main id="main">
      <div class="page-head">
        <h1>Users</h1>
        <button type="button" onClick={() => setOpen({ kind: "create" })}>
          Create user
        </button>
      </div>
      <div class="toolbar" role="search">
        <Field label="Search" name="q" type="search" value={query} onValue={setQuery} placeholder="name, username or email" />
        <Select label="Role" name="role" value={role} onValue={setRole} options={[["", "Any role"], ...roleOptions]} />
        <Select
          label="State"
          name="state"
          value={state}
          onValue={setState}
          options={[
            ["", "Any state"],
            ["active", "Active"],
            ["deactivated", "Deactivated"],
          ]}
        />
      </div>
      {notice && <Alert kind="success">{notice}</Alert>}
      <ErrorAlert action={load} />
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Users table">
        <table>
          <caption class="sr-only">Users</caption>
          <thead>
            <tr>
              <th scope="col">Username</th>
              <th scope="col">Name</th>
              <th scope="col">Email</th>
              <th scope="col">Role</th>
              <th scope="col">State</th>
              <th scope="col">Last sign-in</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {users.map((u) => (
              <tr key={u.name} data-username={u.username}>
                <td>{u.username}</td>
                <td>{u.displayName}</td>
                <td>{u.email}</td>
                <td>{roleNames[u.role]}</td>
                <td>{u.active ? (u.mustChangePassword ? "Active (temporary password)" : "Active") : "Deactivated"}</td>
                <td>{when(u.lastLoginTime)}</td>
                <td class="actions">
                  <button type="button" class="secondary" onClick={() => setOpen({ kind: "edit", user: u })}>
                    Edit<span class="sr-only"> {u.username}</span>
                  </button>
                  <button type="button" class="secondary" onClick={() => setOpen({ kind: "reset", user: u })}>
                    Reset password<span class="sr-only"> of {u.username}</span>
                  </button>
                  <button
                    type="button"
                    class="secondary"
                    disabled={u.name === me}
                    title={u.name === me ? selfRefused : undefined}
                    onClick={() => setOpen({ kind: "state", user: u })}
                  >
                    {u.active ? "Deactivate" : "Reactivate"}
                    <span class="sr-only"> {u.username}</span>
                  </button>
                  <button
                    type="button"
                    class="danger"
                    disabled={u.name === me}
                    title={u.name === me ? selfRefused : undefined}
                    onClick={() => setOpen({ kind: "delete", user: u })}
                  >
                    Delete<span class="sr-only"> {u.username}</span>
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!load.busy && users.length === 0 && !load.error && <p>No user matches.</p>}
      <div ref={sentinel}>
        <LoadMore next={next} busy={load.busy} onMore={() => void load.run(next, generation.current)} />
      </div>
      {open?.kind === "create" && (
        <CreateUser
          onClose={() => setOpen(null)}
          onCreated={(u) => {
            setUsers((us) => [u, ...us]);
          }}
        />
      )}
      {open?.kind === "edit" && (
        <EditUser user={open.user} onClose={() => setOpen(null)} onDone={(u) => done(`${u.username} updated.`, u)} />
      )}
      {open?.kind === "reset" && <ResetUser user={open.user} onClose={() => setOpen(null)} onDone={replace} />}
      {open?.kind === "state" && (
        <ToggleActive
          user={open.user}
          onClose={() => setOpen(null)}
          onDone={(u) => done(`${u.username} ${u.active ? "reactivated" : "deactivated"}.`, u)}
        />
      )}
      {open?.kind === "delete" && (
        <DeleteUser
          user={open.user}
          onClose={() => setOpen(null)}
          onDone={(u) => {
            setUsers((us) => us.filter((x) => x.name !== u.name));
            setNotice(`${u.username} deleted.`);
          }}
        />
      )}
    </main>
  );
}

function CreateUser(props: { onClose: () => void; onCreated: (u: User) => void }) {
  const [username, setUsername] = useState("");
  const [email, setEmail] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [role, setRole] = useState(String(Role.REQUESTER));
  const [mode, setMode] = useState<"link" | "password">("link");
  const [password, setPassword] = useState("");
  const [temporary, setTemporary] = useState(true);
  const [created, setCreated] = useState<{ user: User; link?: RegistrationLink } | null>(null);
  const submit = useAction(async (key: string) => {
    const r = await api(UserService).createUser(
      {
        user: create(UserSchema, { username, email, displayName, role: Number(role) as Role }),
        initialPassword: mode === "password" ? password : "",
        requirePasswordChange: mode === "password" && temporary,
      },
      keyed(key),
    );
    if (r.user) {
      setCreated({ user: r.user, link: r.registrationLink });
      props.onCreated(r.user);
    }
  });
  if (created) {
    return (
      <Dialog title="User created" onClose={props.onClose}>
        <Alert kind="success">{created.user.username} can now sign in.</Alert>
        {created.link && (
          <>
            <p>
              Share this registration link with them (it was emailed too). It works once, until{" "}
              {when(created.link.expireTime)}.
            </p>
            <Secret label="Registration link" value={created.link.url} />
          </>
        )}
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Done
          </button>
        </div>
      </Dialog>
    );
  }
  return (
    <FormDialog title="Create user" onClose={props.onClose} action={submit} verb="Create">
      <Field label="Username" name="username" value={username} onValue={setUsername} path="user.username" fields={submit.fields} required />
      <Field label="Email" name="email" type="email" value={email} onValue={setEmail} path="user.email" fields={submit.fields} required />
      <Field label="Full name" name="display_name" value={displayName} onValue={setDisplayName} path="user.display_name" fields={submit.fields} required />
      <Select label="Role" name="role" value={role} onValue={setRole} options={roleOptions} />
      <fieldset>
        <legend>First password</legend>
        <label class="choice">
          <input type="radio" name="mode" checked={mode === "link"} onChange={() => setMode("link")} /> Send a
          registration link: they choose it
        </label>
        <label class="choice">
          <input type="radio" name="mode" checked={mode === "password"} onChange={() => setMode("password")} /> Set
          one now
        </label>
      </fieldset>
      {mode === "password" && (
        <>
          <Field
            label="Initial password"
            name="initial_password"
            type="password"
            autocomplete="new-password"
            value={password}
            onValue={setPassword}
            fields={submit.fields}
            required
          />
          <PasswordRules password={password} />
          <label class="choice">
            <input type="checkbox" checked={temporary} onChange={(e) => setTemporary((e.target as HTMLInputElement).checked)} />{" "}
            They must change it at first sign-in
          </label>
        </>
      )}
    </FormDialog>
  );
}

function EditUser(props: { user: User; onClose: () => void; onDone: (u: User) => void }) {
  const u = props.user;
  const [email, setEmail] = useState(u.email);
  const [displayName, setDisplayName] = useState(u.displayName);
  const [role, setRole] = useState(String(u.role));
  const [reason, setReason] = useState("");
  const [confirming, setConfirming] = useState(false);
  const roleChanged = Number(role) !== u.role;
  const submit = useAction(async (key: string) => {
    const paths: string[] = [];
    if (email !== u.email) paths.push("email");
    if (displayName !== u.displayName) paths.push("display_name");
    if (roleChanged) paths.push("role");
    if (!paths.length) {
      props.onClose();
      return;
    }
    const r = await api(UserService).updateUser(
      {
        user: create(UserSchema, { name: u.name, email, displayName, role: Number(role) as Role, etag: u.etag }),
        updateMask: create(FieldMaskSchema, { paths }),
        reason,
      },
      keyed(key),
    );
    if (r.user) props.onDone(r.user);
    props.onClose();
  });
  return (
    <FormDialog
      title={`Edit ${u.username}`}
      onClose={props.onClose}
      action={submit}
      verb={confirming ? "Confirm" : "Save"}
      onSubmit={() => (roleChanged && !confirming ? setConfirming(true) : void submit.run())}
    >
      <Field label="Email" name="email" type="email" value={email} onValue={setEmail} path="user.email" fields={submit.fields} required />
      <Field label="Full name" name="display_name" value={displayName} onValue={setDisplayName} path="user.display_name" fields={submit.fields} required />
      <Select
        label="Role"
        name="role"
        value={role}
        onValue={(v) => {
          setRole(v);
          setConfirming(false);
        }}
        options={roleOptions}
      />
      <Field label="Reason (kept in the audit log)" name="reason" value={reason} onValue={setReason} fields={submit.fields} />
      {confirming && (
        <Alert kind="info">
          Change {u.username}'s role from {roleNames[u.role]} to {roleNames[Number(role) as Role]}? Press Confirm to go on.
        </Alert>
      )}
    </FormDialog>
  );
}

function ResetUser(props: { user: User; onClose: () => void; onDone: (u: User) => void }) {
  const [temporary, setTemporary] = useState("");
  const [link, setLink] = useState<RegistrationLink | null>(null);
  const submit = useAction(async (key: string) => {
    const r = await api(PasswordResetService).resetUserPassword({ name: props.user.name, etag: props.user.etag }, keyed(key));
    setTemporary(r.temporaryPassword);
    if (r.user) props.onDone(r.user);
  });
  const [factorRemoved, setFactorRemoved] = useState(false);
  // For someone who lost their authenticator: sign-in by password alone again.
  const removeFactor = useAction(async (key: string) => {
    await api(AuthService).removeSecondFactor({ user: props.user.name }, keyed(key));
    setFactorRemoved(true);
  });
  // For someone who never chose a password: a new registration link (the old one stops working).
  const issue = useAction(async (key: string) => {
    const r = await api(PasswordResetService).issueRegistrationLink({ name: props.user.name }, keyed(key));
    setLink(r.registrationLink ?? null);
  });
  return (
    <Dialog title={`Reset the password of ${props.user.username}`} onClose={props.onClose}>
      {temporary ? (
        <>
          <p>Give them this temporary password. It is shown only now; they must change it at their next sign-in.</p>
          <Secret label="Temporary password" value={temporary} />
        </>
      ) : link ? (
        <>
          <p>Share this new registration link (it was emailed too); it works once, until {when(link.expireTime)}.</p>
          <Secret label="Registration link" value={link.url} />
        </>
      ) : (
        <p>
          Their sessions end now and they get a temporary password, shown once. Someone who never chose a password can
          get a new registration link instead.
        </p>
      )}
      {factorRemoved && <Alert kind="success">Two-step sign-in is off for {props.user.username}.</Alert>}
      <ErrorAlert action={submit} />
      <ErrorAlert action={issue} />
      <ErrorAlert action={removeFactor} />
      <div class="buttons">
        <button type="button" class="secondary" onClick={props.onClose}>
          {temporary || link ? "Done" : "Cancel"}
        </button>
        {!temporary && !link && (
          <>
            <button type="button" class="secondary" disabled={issue.busy} onClick={() => void issue.run()}>
              New registration link
            </button>
            <button type="button" class="secondary" disabled={removeFactor.busy} onClick={() => void removeFactor.run()}>
              Turn off two-step sign-in
            </button>
            <button type="button" disabled={submit.busy} onClick={() => void submit.run()}>
              Reset password
            </button>
          </>
        )}
      </div>
    </Dialog>
  );
}

function ToggleActive(props: { user: User; onClose: () => void; onDone: (u: User) => void }) {
  const u = props.user;
  const submit = useAction(async (key: string) => {
    const svc = api(UserService);
    const r = u.active
      ? await svc.deactivateUser({ name: u.name, etag: u.etag }, keyed(key))
      : await svc.reactivateUser({ name: u.name, etag: u.etag }, keyed(key));
    if (r.user) props.onDone(r.user);
    props.onClose();
  });
  return (
    <Dialog title={`${u.active ? "Deactivate" : "Reactivate"} ${u.username}?`} onClose={props.onClose}>
      <p>
        {u.active
          ? "They can no longer sign in, and every open session of theirs ends now."
          : "They can sign in again; their group memberships come back as they were."}
      </p>
      <ErrorAlert action={submit} />
      <div class="buttons">
        <button type="button" class="secondary" onClick={props.onClose}>
          Cancel
        </button>
        <button type="button" class={u.active ? "danger" : ""} disabled={submit.busy} onClick={() => void submit.run()}>
          {u.active ? "Deactivate" : "Reactivate"}
        </button>
      </div>
    </Dialog>
  );
}

function DeleteUser(props: { user: User; onClose: () => void; onDone: (u: User) => void }) {
  const u = props.user;
  const submit = useAction(async (key: string) => {
    await api(UserService).deleteUser({ name: u.name, etag: u.etag }, keyed(key));
    props.onDone(u);
    props.onClose();
  });
  return (
    <Dialog title={`Delete ${u.username}?`} onClose={props.onClose}>
      <p>The account is removed for good; its audit history stays.</p>
      <ErrorAlert action={submit} />
      <div class="buttons">
        <button type="button" class="secondary" onClick={props.onClose}>
          Cancel
        </button>
        <button type="button" class="danger" disabled={submit.busy} onClick={() => void submit.run()}>
          Delete
        </button>
      </div>
    </Dialog>
  );
}
