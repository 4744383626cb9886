// Service accounts (organisation or portfolio) and their API keys: a key's secret is shown
// once; rotation keeps the old key working for a grace period; revocation ends it at once.
import { useEffect, useState } from "preact/hooks";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";

import { api, keyed, roleNames, when } from "../api";
import { CatalogService, type Portfolio } from "../gen/fluxgate/v1/catalog_pb";
import { Role } from "../gen/fluxgate/v1/common_pb";
import {
  ServiceAccountKeySchema,
  ServiceAccountSchema,
  ServiceAccountService,
  type ServiceAccount,
  type ServiceAccountKey,
} from "../gen/fluxgate/v1/service_accounts_pb";
import { Alert, allPages, Check, Confirm, Dialog, ErrorAlert, Field, FormDialog, Secret, Select, useAction } from "../ui";

const sa = () => api(ServiceAccountService);

export function ServiceAccounts() {
  const [accounts, setAccounts] = useState<ServiceAccount[]>([]);
  const [portfolios, setPortfolios] = useState<Portfolio[]>([]);
  const [creating, setCreating] = useState(false);
  const [open, setOpen] = useState<ServiceAccount | null>(null);
  const load = useAction(async () => {
    setAccounts(
      await allPages(async (t) => {
        const r = await sa().listServiceAccounts({ pageSize: 200, pageToken: t });
        return { items: r.serviceAccounts, next: r.nextPageToken };
      }),
    );
    setPortfolios(
      await allPages(async (t) => {
        const r = await api(CatalogService).listPortfolios({ pageSize: 200, pageToken: t });
        return { items: r.portfolios, next: r.nextPageToken };
      }),
    );
  });
  useEffect(() => {
    void load.run();
  }, []);
  const portfolioName = (n: string) => portfolios.find((p) => p.name === n)?.displayName ?? n;
  return (
    <main id="main">
      <div class="page-head">
        <h1>Service accounts</h1>
        <button type="button" onClick={() => setCreating(true)}>
          New service account
        </button>
      </div>
      <ErrorAlert action={load} />
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Service accounts">
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Scope</th>
              <th scope="col">Role</th>
              <th scope="col">State</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {accounts.map((a) => (
              <tr key={a.name} data-name={a.displayName}>
                <td>{a.displayName}</td>
                <td>{a.portfolio ? portfolioName(a.portfolio) : "Organisation"}</td>
                <td>{a.provisioner ? "Provisioning (SCIM)" : roleNames[a.role]}</td>
                <td>{a.active ? "Active" : "Deactivated"}</td>
                <td class="actions">
                  <button type="button" class="secondary small" onClick={() => setOpen(a)}>
                    Keys<span class="sr-only"> of {a.displayName}</span>
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!load.busy && !load.error && accounts.length === 0 && <p>No service account yet.</p>}
      {creating && (
        <NewAccount portfolios={portfolios} onClose={() => setCreating(false)} onDone={(a) => setAccounts((xs) => [...xs, a])} />
      )}
      {open && <Keys account={open} onClose={() => setOpen(null)} />}
    </main>
  );
}

function NewAccount(props: { portfolios: Portfolio[]; onClose: () => void; onDone: (a: ServiceAccount) => void }) {
  const [displayName, setDisplayName] = useState("");
  const [description, setDescription] = useState("");
  const [portfolio, setPortfolio] = useState("");
  const [role, setRole] = useState(String(Role.REQUESTER));
  const [provisioner, setProvisioner] = useState(false);
  const submit = useAction(async (key: string) => {
    const r = await sa().createServiceAccount(
      {
        serviceAccount: create(ServiceAccountSchema, {
          displayName,
          description,
          portfolio,
          role: portfolio ? Role.UNSPECIFIED : provisioner ? Role.REQUESTER : (Number(role) as Role),
          provisioner: !portfolio && provisioner,
        }),
      },
      keyed(key),
    );
    if (r.serviceAccount) props.onDone(r.serviceAccount);
    props.onClose();
  });
  return (
    <FormDialog title="New service account" onClose={props.onClose} action={submit} verb="Create">
      <Field label="Name" name="display_name" value={displayName} onValue={setDisplayName} path="service_account.display_name" fields={submit.fields} required />
      <Field label="Description" name="description" value={description} onValue={setDescription} path="service_account.description" fields={submit.fields} />
      <Select
        label="Scope"
        name="portfolio"
        value={portfolio}
        onValue={setPortfolio}
        options={[["", "Organisation (admin service account)"], ...props.portfolios.map((p): [string, string] => [p.name, p.displayName])]}
      />
      {!portfolio && (
        <Check
          label="Provisioning account (SCIM): its keys work on /scim/v2 and nothing else"
          checked={provisioner}
          onValue={setProvisioner}
        />
      )}
      {!portfolio && !provisioner && (
        <Select
          label="Role"
          name="role"
          value={role}
          onValue={setRole}
          options={[Role.REQUESTER, Role.APPROVER, Role.TEAM_ADMIN].map((r): [string, string] => [String(r), roleNames[r]])}
        />
      )}
    </FormDialog>
  );
}

function Keys(props: { account: ServiceAccount; onClose: () => void }) {
  const [keys, setKeys] = useState<ServiceAccountKey[]>([]);
  const [label, setLabel] = useState("");
  const [secret, setSecret] = useState("");
  const [graceMins, setGraceMins] = useState("60");
  const [revoking, setRevoking] = useState<ServiceAccountKey | null>(null);
  const load = useAction(async () => {
    const r = await sa().listServiceAccountKeys({ parent: props.account.name });
    setKeys(r.keys);
  });
  useEffect(() => {
    void load.run();
  }, [props.account.name]);
  const add = useAction(async (key: string) => {
    const r = await sa().createServiceAccountKey(
      { parent: props.account.name, key: create(ServiceAccountKeySchema, { displayName: label }) },
      keyed(key),
    );
    setSecret(r.secret);
    setLabel("");
    await load.run();
  });
  const rotate = useAction(async (key: string, k: ServiceAccountKey) => {
    const r = await sa().rotateServiceAccountKey(
      { name: k.name, gracePeriod: create(DurationSchema, { seconds: BigInt(Math.round(Number(graceMins) * 60)) }) },
      keyed(key),
    );
    setSecret(r.secret);
    await load.run();
  });
  const revoke = useAction(async (key: string) => {
    if (revoking) await sa().revokeServiceAccountKey({ name: revoking.name }, keyed(key));
    setRevoking(null);
    await load.run();
  });
  return (
    <Dialog title={`Keys of ${props.account.displayName}`} onClose={props.onClose}>
      {secret && (
        <Alert kind="success">
          <p>Copy the secret now: it is shown only once.</p>
          <Secret label="API key" value={secret} />
        </Alert>
      )}
      <ErrorAlert action={load} />
      <ul class="list">
        {keys.map((k) => (
          <li key={k.name}>
            <span>
              {k.displayName || k.name} · created {when(k.createTime)}
              {k.revokeTime ? ` · revoked ${when(k.revokeTime)}` : k.expireTime ? ` · expires ${when(k.expireTime)}` : ""}
            </span>
            {!k.revokeTime && (
              <span class="item-actions">
                <button type="button" class="secondary small" disabled={rotate.busy} onClick={() => void rotate.run(k)}>
                  Rotate<span class="sr-only"> {k.displayName}</span>
                </button>
                <button type="button" class="danger small" onClick={() => setRevoking(k)}>
                  Revoke<span class="sr-only"> {k.displayName}</span>
                </button>
              </span>
            )}
          </li>
        ))}
      </ul>
      <Field label="Rotation keeps the old key working for (minutes)" name="grace" type="number" value={graceMins} onValue={setGraceMins} fields={rotate.fields} path="grace_period" />
      <ErrorAlert action={rotate} />
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void add.run();
        }}
      >
        <Field label="New key's label" name="key_label" value={label} onValue={setLabel} path="key.display_name" fields={add.fields} />
        <button type="submit" disabled={add.busy}>
          Create key
        </button>
      </form>
      <ErrorAlert action={add} />
      {revoking && (
        <Confirm title={`Revoke ${revoking.displayName || "this key"}?`} action={revoke} verb="Revoke" danger onClose={() => setRevoking(null)}>
          <p>Callers using it are refused from now on.</p>
        </Confirm>
      )}
      <div class="buttons">
        <button type="button" onClick={props.onClose}>
          Done
        </button>
      </div>
    </Dialog>
  );
}
