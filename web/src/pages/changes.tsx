// Change requests, the four-eyes workflow: the queues (awaiting my review, mine, all), submit,
// and a request's page with its payload, policy, reviews and the actions the caller may try,
// kept live by the server's watch stream.
import { useEffect, useState } from "preact/hooks";
import { create, type JsonObject } from "@bufbuild/protobuf";

import { api, currentSession, isAdmin, keyed, when } from "../api";
import {
  ApprovalService,
  ChangeKind,
  ChangeRequestSchema,
  ChangeRequestState,
  Verdict,
  type ChangeRequest,
} from "../gen/fluxgate/v1/approvals_pb";
import { CatalogService } from "../gen/fluxgate/v1/catalog_pb";
import { Role } from "../gen/fluxgate/v1/common_pb";
import { navigate, param, withQuery } from "../router";
import { Alert, allPages, ErrorAlert, Field, FormDialog, LoadMore, Select, TextArea, useAction } from "../ui";

export const kindNames: Record<ChangeKind, string> = {
  [ChangeKind.UNSPECIFIED]: "—",
  [ChangeKind.CREATE_FEATURE]: "Create feature",
  [ChangeKind.EDIT_FEATURE]: "Edit feature",
  [ChangeKind.DELETE_FEATURE]: "Delete feature",
  [ChangeKind.CHANGE_VALUE]: "Change value",
  [ChangeKind.LOCK]: "Lock",
  [ChangeKind.UNLOCK]: "Unlock",
  [ChangeKind.RETIRE]: "Retire",
};

export const stateNames: Record<ChangeRequestState, string> = {
  [ChangeRequestState.UNSPECIFIED]: "—",
  [ChangeRequestState.PENDING]: "Pending",
  [ChangeRequestState.APPROVED]: "Approved",
  [ChangeRequestState.REJECTED]: "Rejected",
  [ChangeRequestState.CANCELLED]: "Cancelled",
  [ChangeRequestState.EXPIRED]: "Expired",
  [ChangeRequestState.APPLIED]: "Applied",
};

const verdictNames: Record<Verdict, string> = {
  [Verdict.UNSPECIFIED]: "—",
  [Verdict.APPROVE]: "approved",
  [Verdict.REJECT]: "rejected",
  [Verdict.OVERRIDE]: "overrode",
};

const approvals = () => api(ApprovalService);

/** `portfolios/P/applications/A/environments/E` shown by its display names where known. */
function envLabel(cr: ChangeRequest, names: Record<string, string>): string {
  return names[cr.environment] ?? cr.environment;
}

type Tab = "review" | "mine" | "all";

export function Changes() {
  const tab = (param("tab") || "review") as Tab;
  const [items, setItems] = useState<ChangeRequest[]>([]);
  const [next, setNext] = useState("");
  const [submitting, setSubmitting] = useState(false);
  const [envs, setEnvs] = useState<Record<string, string>>({});
  const me = currentSession()?.user;
  const load = useAction(async (_key: string, token: string) => {
    const r = await approvals().listChangeRequests({
      awaitingMyReview: tab === "review",
      submitter: tab === "mine" ? (me?.name ?? "") : "",
      pageSize: 50,
      pageToken: token,
    });
    setItems((xs) => (token ? [...xs, ...r.changeRequests] : r.changeRequests));
    setNext(r.nextPageToken);
  });
  useEffect(() => {
    setItems([]);
    void load.run("");
  }, [tab]);
  useEffect(() => {
    void environmentNames().then(setEnvs).catch(() => undefined);
  }, []);
  const tabs: [Tab, string][] = [
    ["review", "Awaiting my review"],
    ["mine", "Submitted by me"],
    ["all", "All"],
  ];
  return (
    <main id="main">
      <div class="page-head">
        <h1>Change requests</h1>
        <button type="button" onClick={() => setSubmitting(true)}>
          Submit a change
        </button>
      </div>
      <nav class="tabs" aria-label="Queues">
        {tabs.map(([t, label]) => (
          <a key={t} href={withQuery("/changes", { tab: t })} aria-current={t === tab ? "page" : undefined}>
            {label}
          </a>
        ))}
      </nav>
      <ErrorAlert action={load} />
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Change requests">
        <table>
          <thead>
            <tr>
              <th scope="col">Title</th>
              <th scope="col">Change</th>
              <th scope="col">Environment</th>
              <th scope="col">Submitter</th>
              <th scope="col">State</th>
              <th scope="col">Approvals</th>
              <th scope="col">Submitted</th>
            </tr>
          </thead>
          <tbody>
            {items.map((cr) => (
              <tr key={cr.name} data-title={cr.title}>
                <td>
                  <a href={`/${cr.name}`}>{cr.title}</a>
                </td>
                <td>
                  {kindNames[cr.kind]} <code>{cr.featureKey}</code>
                </td>
                <td>{envLabel(cr, envs)}</td>
                <td>{cr.submitterDisplayName}</td>
                <td class="state">{stateNames[cr.state]}</td>
                <td>
                  {cr.approvals} of {cr.requiredApprovals}
                </td>
                <td>{when(cr.createTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!load.busy && !load.error && items.length === 0 && <p>Nothing here.</p>}
      <LoadMore next={next} busy={load.busy} onMore={() => void load.run(next)} />
      {submitting && <SubmitChange onClose={() => setSubmitting(false)} />}
    </main>
  );
}

/** Every environment's path, named `Portfolio / Application / Environment`. */
async function environmentNames(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const c = api(CatalogService);
  const ports = await allPages(async (t) => {
    const r = await c.listPortfolios({ pageSize: 200, pageToken: t });
    return { items: r.portfolios, next: r.nextPageToken };
  });
  for (const p of ports) {
    const apps = await allPages(async (t) => {
      const r = await c.listApplications({ parent: p.name, pageSize: 200, pageToken: t });
      return { items: r.applications, next: r.nextPageToken };
    });
    for (const a of apps) {
      const envs = await allPages(async (t) => {
        const r = await c.listEnvironments({ parent: a.name, pageSize: 200, pageToken: t });
        return { items: r.environments, next: r.nextPageToken };
      });
      for (const e of envs) out[e.name] = `${p.displayName} / ${a.displayName} / ${e.displayName}`;
    }
  }
  return out;
}

function SubmitChange(props: { onClose: () => void }) {
  const [envs, setEnvs] = useState<[string, string][]>([]);
  const [environment, setEnvironment] = useState("");
  const [featureKey, setFeatureKey] = useState("");
  const [kind, setKind] = useState(String(ChangeKind.CHANGE_VALUE));
  const [title, setTitle] = useState("");
  const [description, setDescription] = useState("");
  const [payload, setPayload] = useState('{\n  "value": true\n}');
  const [payloadError, setPayloadError] = useState("");
  const [reviewers, setReviewers] = useState("");
  const loadEnvs = useAction(async () => {
    const names = await environmentNames();
    const list = Object.entries(names).sort((a, b) => a[1].localeCompare(b[1]));
    setEnvs(list);
    if (list.length) setEnvironment(list[0][0]);
  });
  useEffect(() => {
    void loadEnvs.run();
  }, []);
  const submit = useAction(async (key: string) => {
    let parsed: JsonObject | undefined;
    if (payload.trim()) {
      const v: unknown = JSON.parse(payload);
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("The payload must be a JSON object.");
      parsed = v as JsonObject;
    }
    const r = await approvals().submitChangeRequest(
      {
        changeRequest: create(ChangeRequestSchema, {
          environment,
          featureKey,
          kind: Number(kind) as ChangeKind,
          title,
          description,
          payload: parsed,
          requestedReviewers: reviewers
            .split(/[\s,]+/)
            .filter(Boolean)
            .map((u) => (u.startsWith("users/") ? u : `users/${u}`)),
        }),
        requestId: key,
      },
      keyed(key),
    );
    if (r.changeRequest) navigate(`/${r.changeRequest.name}`);
  });
  const kinds = Object.entries(kindNames).filter(([k]) => k !== "0") as [string, string][];
  return (
    <FormDialog
      title="Submit a change"
      onClose={props.onClose}
      action={submit}
      verb="Submit"
      disabled={!environment}
      onSubmit={() => {
        try {
          if (payload.trim()) JSON.parse(payload);
          setPayloadError("");
          void submit.run();
        } catch (err) {
          setPayloadError(`not JSON: ${(err as Error).message}`);
        }
      }}
    >
      <ErrorAlert action={loadEnvs} />
      <Select label="Environment" name="environment" value={environment} onValue={setEnvironment} options={envs} />
      <Field label="Feature key" name="feature_key" value={featureKey} onValue={setFeatureKey} path="change_request.feature_key" fields={submit.fields} required />
      <Select label="Change" name="kind" value={kind} onValue={setKind} options={kinds} />
      <Field label="Title" name="title" value={title} onValue={setTitle} path="change_request.title" fields={submit.fields} required />
      <TextArea label="Description" name="description" value={description} onValue={setDescription} path="change_request.description" fields={submit.fields} rows={3} />
      <Field
        label="Reviewers to ask (usernames, optional)"
        name="requested_reviewers"
        value={reviewers}
        onValue={setReviewers}
        path="change_request.requested_reviewers"
        fields={submit.fields.map((f) => ({ ...f, field: f.field.replace(/\[\d+\]$/, "") }))}
        hint="Separated by commas. Only they are emailed; each must be someone who may review this change."
      />
      <TextArea
        label="Payload (JSON object, for the flag store)"
        name="payload"
        value={payload}
        onValue={setPayload}
        path="change_request.payload"
        fields={payloadError ? [{ field: "change_request.payload", description: payloadError }] : submit.fields}
        rows={5}
      />
    </FormDialog>
  );
}

/** A request's page, updated live from WatchChangeRequest while it is open. */
export function ChangeDetail(props: { name: string }) {
  const [cr, setCr] = useState<ChangeRequest | null>(null);
  const [live, setLive] = useState(false);
  const [envs, setEnvs] = useState<Record<string, string>>({});
  const load = useAction(async () => {
    const r = await approvals().getChangeRequest({ name: props.name });
    setCr(r.changeRequest ?? null);
  });
  useEffect(() => {
    void load.run();
    void environmentNames().then(setEnvs).catch(() => undefined);
    // Live updates: the stream ends at a final state, or when the page closes.
    const stop = new AbortController();
    void (async () => {
      try {
        setLive(true);
        for await (const m of approvals().watchChangeRequest({ name: props.name }, { signal: stop.signal })) {
          if (m.changeRequest) setCr(m.changeRequest);
        }
      } catch {
        // The page still works without live updates.
      } finally {
        setLive(false);
      }
    })();
    return () => stop.abort();
  }, [props.name]);
  if (!cr) {
    return (
      <main id="main">
        <h1>Change request</h1>
        <ErrorAlert action={load} />
      </main>
    );
  }
  return (
    <main id="main">
      <p>
        <a href="/changes">← Change requests</a>
      </p>
      <h1>{cr.title}</h1>
      <p>
        <span class="state" data-testid="state">
          {stateNames[cr.state]}
        </span>{" "}
        · <span data-testid="approvals">{cr.approvals} of {cr.requiredApprovals} approvals</span>
        {live && <span class="hint"> · live</span>}
      </p>
      <div class="panes">
        <section class="panel" aria-labelledby="what">
          <h2 id="what">The change</h2>
          <dl class="facts">
            <dt>Change</dt>
            <dd>{kindNames[cr.kind]}</dd>
            <dt>Feature</dt>
            <dd>
              <code>{cr.featureKey}</code>
            </dd>
            <dt>Environment</dt>
            <dd>{envLabel(cr, envs)}</dd>
            <dt>Submitted by</dt>
            <dd>{cr.submitterDisplayName}</dd>
            <dt>Submitted</dt>
            <dd>{when(cr.createTime)}</dd>
            <dt>Expires</dt>
            <dd>{when(cr.expireTime)}</dd>
            {cr.applyTime && (
              <>
                <dt>Applied</dt>
                <dd>
                  {when(cr.applyTime)} by {cr.appliedBy}
                </dd>
              </>
            )}
          </dl>
          {cr.description && <p class="description">{cr.description}</p>}
          <Payload payload={cr.payload} />
        </section>
        <section class="panel" aria-labelledby="policy">
          <h2 id="policy">Policy and reviews</h2>
          <ul>
            <li>
              {cr.requiredApprovals} approval{cr.requiredApprovals === 1 ? "" : "s"} required
            </li>
            <li>{cr.peerReview ? "Requesters may review (peer review)" : "Reviewers need the Approver role"}</li>
            <li>{cr.adminOverride ? "A Team Admin may override" : "No override"}</li>
            {cr.requestedReviewers.length > 0 && (
              <li>
                Reviewers asked: {cr.requestedReviewerUsernames.join(", ")}
                {cr.requireRequestedReviewer && " (one of them must approve)"}
              </li>
            )}
          </ul>
          {cr.overridden && <Alert kind="info">Overridden: {cr.overrideReason}</Alert>}
          <h3>Reviews</h3>
          {cr.reviews.length === 0 && <p class="hint">No review yet.</p>}
          <ul class="reviews">
            {cr.reviews.map((r) => (
              <li key={`${r.reviewer}-${r.revision}-${r.verdict}`}>
                <strong>{r.reviewerDisplayName}</strong> {verdictNames[r.verdict]} revision {String(r.revision)} ·{" "}
                {when(r.createTime)}
                {!r.current && <span class="hint"> (an earlier revision: no longer counts)</span>}
                {r.comment && <blockquote>{r.comment}</blockquote>}
              </li>
            ))}
          </ul>
        </section>
      </div>
      <Actions cr={cr} onChange={setCr} />
    </main>
  );
}

function Payload(props: { payload: JsonObject | undefined }) {
  const p = props.payload;
  if (!p) return <p class="hint">No payload.</p>;
  if ("before" in p && "after" in p) {
    return (
      <div class="panes">
        <div>
          <h3>Before</h3>
          <pre class="json">{JSON.stringify(p.before, null, 2)}</pre>
        </div>
        <div>
          <h3>After</h3>
          <pre class="json">{JSON.stringify(p.after, null, 2)}</pre>
        </div>
      </div>
    );
  }
  return (
    <>
      <h3>Payload</h3>
      <pre class="json">{JSON.stringify(p, null, 2)}</pre>
    </>
  );
}

/** What the caller may try on the request; the server still decides, and says why not. */
function Actions(props: { cr: ChangeRequest; onChange: (cr: ChangeRequest) => void }) {
  const { cr } = props;
  const me = currentSession()?.user;
  const [comment, setComment] = useState("");
  const [done, setDone] = useState("");
  const pending = cr.state === ChangeRequestState.PENDING;
  const mine = me?.name === cr.submitter;
  const act = useAction(async (key: string, what: "approve" | "reject" | "override" | "cancel") => {
    const a = approvals();
    const k = keyed(key);
    const r =
      what === "approve"
        ? await a.approveChangeRequest({ name: cr.name, revision: cr.revision, comment }, k)
        : what === "reject"
          ? await a.rejectChangeRequest({ name: cr.name, revision: cr.revision, comment }, k)
          : what === "override"
            ? await a.overrideChangeRequest({ name: cr.name, revision: cr.revision, reason: comment }, k)
            : await a.cancelChangeRequest({ name: cr.name, etag: cr.etag, reason: comment }, k);
    if (r.changeRequest) props.onChange(r.changeRequest);
    setComment("");
    setDone(`Done: ${what}.`);
  });
  if (!pending && cr.state !== ChangeRequestState.APPROVED) return null;
  const reviewer = !mine && (me?.role !== Role.REQUESTER || cr.peerReview);
  const why = mine
    ? "You submitted this request: someone else must review it."
    : !reviewer
      ? "Reviewing here needs the Approver role."
      : "";
  return (
    <section class="panel" aria-labelledby="act">
      <h2 id="act">Review</h2>
      {why && pending && <p class="hint">{why}</p>}
      <TextArea label="Comment (or reason)" name="comment" value={comment} onValue={setComment} rows={2} fields={act.fields} path="comment" />
      {done && <Alert kind="success">{done}</Alert>}
      <ErrorAlert action={act} />
      <div class="buttons">
        {pending && (
          <>
            <button type="button" disabled={act.busy || !reviewer} title={why || undefined} onClick={() => void act.run("approve")}>
              Approve
            </button>
            <button type="button" class="danger" disabled={act.busy || !reviewer} title={why || undefined} onClick={() => void act.run("reject")}>
              Reject
            </button>
            {isAdmin(currentSession()) && cr.adminOverride && (
              <button type="button" class="secondary" disabled={act.busy} onClick={() => void act.run("override")}>
                Override
              </button>
            )}
          </>
        )}
        {(mine || isAdmin(currentSession())) && (
          <button type="button" class="secondary" disabled={act.busy} onClick={() => void act.run("cancel")}>
            Cancel request
          </button>
        )}
      </div>
    </section>
  );
}
