// Portfolios → applications → environments, each column the children of the one selected to
// its left (the selection lives in the address: ?p=…&a=…), and each environment's approval
// policy. Creating and deleting are offered to everyone; the server says who may.
import { useEffect, useState } from "preact/hooks";
import { create } from "@bufbuild/protobuf";
import { DurationSchema, FieldMaskSchema } from "@bufbuild/protobuf/wkt";

import { api, currentSession, isAdmin, keyed } from "../api";
import { ApprovalPolicySchema, ApprovalService, type ApprovalPolicy } from "../gen/fluxgate/v1/approvals_pb";
import {
  ApplicationSchema,
  CatalogService,
  EnvironmentSchema,
  PortfolioSchema,
  type Application,
  type Environment,
  type Portfolio,
} from "../gen/fluxgate/v1/catalog_pb";
import { NOT_MANAGER, useManages } from "../may";
import { navigate, param, withQuery } from "../router";
import { Alert, allPages, Check, Confirm, Dialog, ErrorAlert, Field, FormDialog, useAction } from "../ui";

type Item = Portfolio | Application | Environment;
type Level = "portfolio" | "application" | "environment";

const catalog = () => api(CatalogService);

async function children(level: Level, parent: string): Promise<Item[]> {
  if (level === "portfolio") {
    return allPages(async (pageToken) => {
      const r = await catalog().listPortfolios({ pageSize: 200, pageToken });
      return { items: r.portfolios, next: r.nextPageToken };
    });
  }
  if (level === "application") {
    return allPages(async (pageToken) => {
      const r = await catalog().listApplications({ parent, pageSize: 200, pageToken });
      return { items: r.applications, next: r.nextPageToken };
    });
  }
  return allPages(async (pageToken) => {
    const r = await catalog().listEnvironments({ parent, pageSize: 200, pageToken });
    return { items: r.environments, next: r.nextPageToken };
  });
}

const titles: Record<Level, string> = {
  portfolio: "Portfolios",
  application: "Applications",
  environment: "Environments",
};

export function Catalog() {
  const p = param("p");
  const a = param("a");
  return (
    <main id="main">
      <h1>Catalog</h1>
      <p class="hint">
        Portfolios hold applications, applications hold environments. Team Admins manage portfolios; a portfolio's
        Administrators manage its applications and environments.
      </p>
      <div class="columns">
        <Column level="portfolio" parent="" selected={p} onSelect={(n) => navigate(withQuery("/catalog", { p: n }))} />
        {p && (
          <Column level="application" parent={p} selected={a} onSelect={(n) => navigate(withQuery("/catalog", { p, a: n }))} />
        )}
        {a && <Column level="environment" parent={a} selected="" onSelect={() => undefined} />}
      </div>
    </main>
  );
}

function Column(props: { level: Level; parent: string; selected: string; onSelect: (name: string) => void }) {
  const { level, parent } = props;
  const [items, setItems] = useState<Item[]>([]);
  const [adding, setAdding] = useState(false);
  const [deleting, setDeleting] = useState<Item | null>(null);
  const [policy, setPolicy] = useState<Environment | null>(null);
  const load = useAction(async () => setItems(await children(level, parent)));
  useEffect(() => {
    void load.run();
  }, [level, parent]);
  const manages = useManages(parent);
  const may = level === "portfolio" ? isAdmin(currentSession()) : manages;
  const why = level === "portfolio" ? "Only Team Admins create and delete portfolios" : NOT_MANAGER;
  const id = `col-${level}`;
  return (
    <section class="column" aria-labelledby={id}>
      <div class="page-head">
        <h2 id={id}>{titles[level]}</h2>
        <button
          type="button"
          class="secondary"
          disabled={!may}
          title={may ? undefined : why}
          onClick={() => setAdding(true)}
        >
          Add<span class="sr-only"> {level}</span>
        </button>
      </div>
      <ErrorAlert action={load} />
      {!load.busy && items.length === 0 && !load.error && <p class="hint">None yet.</p>}
      <ul class="list">
        {items.map((it) => (
          <li key={it.name} class={it.name === props.selected ? "selected" : ""} data-name={it.displayName}>
            {level === "environment" ? (
              <span class="item-name">
                {it.displayName}
                {(it as Environment).production && <span class="badge">production</span>}
              </span>
            ) : (
              <button
                type="button"
                class="link"
                aria-current={it.name === props.selected ? "true" : undefined}
                onClick={() => props.onSelect(it.name)}
              >
                {it.displayName}
              </button>
            )}
            <span class="item-actions">
              {level === "environment" && (
                <button type="button" class="secondary small" onClick={() => setPolicy(it as Environment)}>
                  Approval policy<span class="sr-only"> of {it.displayName}</span>
                </button>
              )}
              <button
                type="button"
                class="danger small"
                disabled={!may}
                title={may ? undefined : why}
                onClick={() => setDeleting(it)}
              >
                Delete<span class="sr-only"> {it.displayName}</span>
              </button>
            </span>
          </li>
        ))}
      </ul>
      {adding && (
        <AddItem level={level} parent={parent} onClose={() => setAdding(false)} onDone={(it) => setItems((xs) => [...xs, it])} />
      )}
      {deleting && (
        <DeleteItem
          level={level}
          item={deleting}
          onClose={() => setDeleting(null)}
          onDone={() => setItems((xs) => xs.filter((x) => x.name !== deleting.name))}
        />
      )}
      {policy && <PolicyEditor environment={policy} onClose={() => setPolicy(null)} />}
    </section>
  );
}

function AddItem(props: { level: Level; parent: string; onClose: () => void; onDone: (it: Item) => void }) {
  const [displayName, setDisplayName] = useState("");
  const [description, setDescription] = useState("");
  const [production, setProduction] = useState(false);
  const submit = useAction(async (key: string) => {
    let it: Item | undefined;
    if (props.level === "portfolio") {
      const r = await catalog().createPortfolio({ portfolio: create(PortfolioSchema, { displayName, description }) }, keyed(key));
      it = r.portfolio;
    } else if (props.level === "application") {
      const r = await catalog().createApplication(
        { parent: props.parent, application: create(ApplicationSchema, { displayName, description }) },
        keyed(key),
      );
      it = r.application;
    } else {
      const r = await catalog().createEnvironment(
        { parent: props.parent, environment: create(EnvironmentSchema, { displayName, description, production }) },
        keyed(key),
      );
      it = r.environment;
    }
    if (it) props.onDone(it);
    props.onClose();
  });
  const path = props.level;
  return (
    <FormDialog title={`Add ${props.level}`} onClose={props.onClose} action={submit} verb="Add">
      <Field label="Name" name="display_name" value={displayName} onValue={setDisplayName} path={`${path}.display_name`} fields={submit.fields} required />
      <Field label="Description" name="description" value={description} onValue={setDescription} path={`${path}.description`} fields={submit.fields} />
      {props.level === "environment" && <Check label="Production" checked={production} onValue={setProduction} />}
    </FormDialog>
  );
}

function DeleteItem(props: { level: Level; item: Item; onClose: () => void; onDone: () => void }) {
  const [force, setForce] = useState(false);
  const del = useAction(async (key: string) => {
    const req = { name: props.item.name, etag: props.item.etag, force };
    if (props.level === "portfolio") await catalog().deletePortfolio(req, keyed(key));
    else if (props.level === "application") await catalog().deleteApplication(req, keyed(key));
    else await catalog().deleteEnvironment(req, keyed(key));
    props.onDone();
    props.onClose();
  });
  return (
    <Confirm title={`Delete ${props.item.displayName}?`} action={del} verb="Delete" danger onClose={props.onClose}>
      <p>Deleting is refused while anything still refers to it; the server says what.</p>
      <Check label="Also remove the group grants that refer to it (force)" checked={force} onValue={setForce} />
    </Confirm>
  );
}

function PolicyEditor(props: { environment: Environment; onClose: () => void }) {
  const name = `${props.environment.name}/approvalPolicy`;
  const may = useManages(props.environment.name);
  const [policy, setPolicy] = useState<ApprovalPolicy | null>(null);
  const [required, setRequired] = useState("1");
  const [peer, setPeer] = useState(false);
  const [override, setOverride] = useState(false);
  const [named, setNamed] = useState(false);
  const [hours, setHours] = useState("168");
  const [saved, setSaved] = useState(false);
  const load = useAction(async () => {
    const r = await api(ApprovalService).getApprovalPolicy({ name });
    const p = r.policy!;
    setPolicy(p);
    setRequired(String(p.requiredApprovals));
    setPeer(p.peerReview);
    setOverride(p.adminOverride);
    setNamed(p.requireRequestedReviewer);
    setHours(String(Number(p.pendingTtl?.seconds ?? 0n) / 3600));
  });
  useEffect(() => {
    void load.run();
  }, [name]);
  const save = useAction(async (key: string) => {
    const r = await api(ApprovalService).updateApprovalPolicy(
      {
        policy: create(ApprovalPolicySchema, {
          name,
          requiredApprovals: Number(required),
          peerReview: peer,
          adminOverride: override,
          requireRequestedReviewer: named,
          pendingTtl: create(DurationSchema, { seconds: BigInt(Math.round(Number(hours) * 3600)) }),
          etag: policy?.etag ?? "",
        }),
        updateMask: create(FieldMaskSchema, {
          paths: ["required_approvals", "peer_review", "admin_override", "pending_ttl", "require_requested_reviewer"],
        }),
      },
      keyed(key),
    );
    if (r.policy) setPolicy(r.policy);
    setSaved(true);
  });
  return (
    <Dialog title={`Approval policy of ${props.environment.displayName}`} onClose={props.onClose}>
      <ErrorAlert action={load} />
      {policy && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            setSaved(false);
            void save.run();
          }}
        >
          <Field
            label="Approvals required (0 to 10; 0: no review)"
            name="required_approvals"
            type="number"
            value={required}
            onValue={setRequired}
            path="policy.required_approvals"
            fields={save.fields}
          />
          <Check label="Requesters may review (peer review)" checked={peer} onValue={setPeer} />
          <Check label="A Team Admin may override" checked={override} onValue={setOverride} />
          <Check label="Requests name their reviewers, and one of them must approve" checked={named} onValue={setNamed} />
          {save.fields
            .filter((f) => f.field === "policy.require_requested_reviewer")
            .map((f) => (
              <div class="field-error" key={f.field}>
                {f.description}
              </div>
            ))}
          <Field
            label="A pending request expires after (hours)"
            name="pending_ttl"
            type="number"
            value={hours}
            onValue={setHours}
            path="policy.pending_ttl"
            fields={save.fields}
          />
          {saved && <Alert kind="success">Policy saved.</Alert>}
          {!may && <p class="hint">{NOT_MANAGER}.</p>}
          <ErrorAlert action={save} />
          <div class="buttons">
            <button type="button" class="secondary" onClick={props.onClose}>
              Close
            </button>
            <button type="submit" disabled={save.busy || !may} title={may ? undefined : NOT_MANAGER}>
              Save policy
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
