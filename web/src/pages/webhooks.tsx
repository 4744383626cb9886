// Webhooks (Team Admins): subscriptions to events and audit streams, their signing secret
// (shown once, rotated with an overlap), and each one's delivery log with redelivery.
import { create } from "@bufbuild/protobuf";
import { DurationSchema, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";

import { api, keyed, when } from "../api";
import {
  WebhookDeliveryState,
  WebhookFormat,
  WebhookSchema,
  WebhookService,
  type Webhook,
  type WebhookDelivery,
} from "../gen/fluxgate/v1/webhooks_pb";
import { Alert, Confirm, Dialog, ErrorAlert, Field, FormDialog, LoadMore, Secret, Select, useAction } from "../ui";

const hooks = () => api(WebhookService);

const formatNames: Record<WebhookFormat, string> = {
  [WebhookFormat.UNSPECIFIED]: "—",
  [WebhookFormat.EVENTS]: "Events (one message each)",
  [WebhookFormat.AUDIT_STREAM]: "Audit stream (JSON lines, every event)",
};

const deliveryStates: Record<WebhookDeliveryState, string> = {
  [WebhookDeliveryState.UNSPECIFIED]: "—",
  [WebhookDeliveryState.PENDING]: "Pending",
  [WebhookDeliveryState.DELIVERED]: "Delivered",
  [WebhookDeliveryState.FAILED]: "Failed",
};

/** Event types as typed: separated by commas, spaces or lines. */
const typesOf = (s: string) => s.split(/[\s,]+/).filter(Boolean);

export function Webhooks() {
  const [list, setList] = useState<Webhook[]>([]);
  const [adding, setAdding] = useState(false);
  const [secret, setSecret] = useState<{ hook: string; value: string } | null>(null);
  const [editing, setEditing] = useState<Webhook | null>(null);
  const [deleting, setDeleting] = useState<Webhook | null>(null);
  const [log, setLog] = useState<Webhook | null>(null);
  const load = useAction(async () => {
    const r = await hooks().listWebhooks({});
    setList(r.webhooks);
  });
  useEffect(() => {
    void load.run();
  }, []);
  const toggle = useAction(async (key: string, w: Webhook) => {
    await hooks().updateWebhook(
      {
        webhook: create(WebhookSchema, { name: w.name, enabled: !w.enabled, etag: w.etag }),
        updateMask: create(FieldMaskSchema, { paths: ["enabled"] }),
      },
      keyed(key),
    );
    await load.run();
  });
  const rotate = useAction(async (key: string, w: Webhook) => {
    const r = await hooks().rotateWebhookSecret(
      { name: w.name, overlap: create(DurationSchema, { seconds: BigInt(86_400) }) },
      keyed(key),
    );
    setSecret({ hook: w.displayName, value: r.secret });
    await load.run();
  });
  const remove = useAction(async (key: string) => {
    if (deleting) await hooks().deleteWebhook({ name: deleting.name, etag: deleting.etag }, keyed(key));
    setDeleting(null);
    await load.run();
  });
  return (
    <main id="main">
      <h1>Webhooks</h1>
      <p class="lead">
        Endpoints told of events as they commit, signed per Standard Webhooks; an audit stream carries the whole trail to a SIEM.
      </p>
      <div class="toolbar">
        <button type="button" onClick={() => setAdding(true)}>
          New webhook
        </button>
      </div>
      {secret && (
        <Alert kind="success">
          <p>Copy the signing secret of {secret.hook} now: it is shown only once.</p>
          <Secret label="Signing secret" value={secret.value} />
        </Alert>
      )}
      <ErrorAlert action={load} />
      <ErrorAlert action={toggle} />
      <ErrorAlert action={rotate} />
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Webhooks">
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Endpoint</th>
              <th scope="col">Sends</th>
              <th scope="col">State</th>
              <th scope="col">Backlog</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((w) => (
              <tr key={w.name} data-webhook={w.displayName}>
                <td>{w.displayName}</td>
                <td>
                  <code>{w.url}</code>
                </td>
                <td>
                  {w.format === WebhookFormat.AUDIT_STREAM ? "Every audit event (stream)" : w.eventTypes.join(", ")}
                  <div class="hint">up to event {String(w.cursorSequence)}</div>
                </td>
                <td>{w.enabled ? "Enabled" : "Disabled"}</td>
                <td>
                  {String(w.pendingDeliveries)} pending
                  {w.failedDeliveries > 0n && <div class="hint">{String(w.failedDeliveries)} failed</div>}
                </td>
                <td class="actions">
                  <button type="button" class="secondary small" onClick={() => setLog(w)}>
                    Deliveries<span class="sr-only"> of {w.displayName}</span>
                  </button>
                  <button type="button" class="secondary small" onClick={() => setEditing(w)}>
                    Edit<span class="sr-only"> {w.displayName}</span>
                  </button>
                  <button type="button" class="secondary small" disabled={toggle.busy} onClick={() => void toggle.run(w)}>
                    {w.enabled ? "Disable" : "Enable"}
                    <span class="sr-only"> {w.displayName}</span>
                  </button>
                  <button type="button" class="secondary small" disabled={rotate.busy} onClick={() => void rotate.run(w)}>
                    Rotate secret<span class="sr-only"> of {w.displayName}</span>
                  </button>
                  <button type="button" class="danger small" onClick={() => setDeleting(w)}>
                    Delete<span class="sr-only"> {w.displayName}</span>
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!load.busy && !load.error && list.length === 0 && <p>No webhook yet.</p>}
      {adding && (
        <NewWebhook
          onClose={() => setAdding(false)}
          onDone={(w, s) => {
            setSecret({ hook: w.displayName, value: s });
            void load.run();
          }}
        />
      )}
      {editing && <EditWebhook hook={editing} onClose={() => setEditing(null)} onDone={() => void load.run()} />}
      {deleting && (
        <Confirm title={`Delete ${deleting.displayName}?`} action={remove} verb="Delete" danger onClose={() => setDeleting(null)}>
          <p>Nothing more is sent to it, and its delivery log goes too.</p>
        </Confirm>
      )}
      {log && <Deliveries hook={log} onClose={() => setLog(null)} />}
    </main>
  );
}

function NewWebhook(props: { onClose: () => void; onDone: (w: Webhook, secret: string) => void }) {
  const [displayName, setDisplayName] = useState("");
  const [url, setUrl] = useState("https://");
  const [format, setFormat] = useState(String(WebhookFormat.EVENTS));
  const [types, setTypes] = useState("change_request.*");
  const [known, setKnown] = useState<string[]>([]);
  useEffect(() => {
    void hooks()
      .listWebhookEventTypes({})
      .then((r) => setKnown(r.eventTypes))
      .catch(() => setKnown([]));
  }, []);
  const stream = Number(format) === WebhookFormat.AUDIT_STREAM;
  const submit = useAction(async (key: string) => {
    const r = await hooks().createWebhook(
      {
        webhook: create(WebhookSchema, {
          displayName,
          url,
          format: Number(format) as WebhookFormat,
          eventTypes: stream ? [] : typesOf(types),
          enabled: true,
        }),
        startAfterSequence: stream ? 0n : undefined,
      },
      keyed(key),
    );
    if (r.webhook) props.onDone(r.webhook, r.secret);
    props.onClose();
  });
  return (
    <FormDialog title="New webhook" onClose={props.onClose} action={submit} verb="Create">
      <Field label="Name" name="display_name" value={displayName} onValue={setDisplayName} path="webhook.display_name" fields={submit.fields} required />
      <Field label="Endpoint URL" name="url" type="url" value={url} onValue={setUrl} path="webhook.url" fields={submit.fields} required />
      <Select
        label="Sends"
        name="format"
        value={format}
        onValue={setFormat}
        options={[WebhookFormat.EVENTS, WebhookFormat.AUDIT_STREAM].map((f): [string, string] => [String(f), formatNames[f]])}
      />
      {stream ? (
        <p class="hint">Every audit event from the first, in chain order, 100 lines per request.</p>
      ) : (
        <EventTypes value={types} onValue={setTypes} known={known} fields={submit.fields} />
      )}
    </FormDialog>
  );
}

function EventTypes(props: { value: string; onValue: (v: string) => void; known: string[]; fields: { field: string; description: string }[] }) {
  const problem = props.fields.find((f) => f.field.startsWith("webhook.event_types"));
  return (
    <>
      <Field
        label="Event types"
        name="event_types"
        value={props.value}
        onValue={props.onValue}
        list="event-types"
        hint="Separated by commas: change_request.approved, user.role_changed, a namespace such as change_request.*, or * for every event."
      />
      {problem && <div class="field-error">{problem.description}</div>}
      <datalist id="event-types">
        {props.known.map((t) => (
          <option key={t} value={t} />
        ))}
      </datalist>
    </>
  );
}

function EditWebhook(props: { hook: Webhook; onClose: () => void; onDone: () => void }) {
  const [displayName, setDisplayName] = useState(props.hook.displayName);
  const [url, setUrl] = useState(props.hook.url);
  const [types, setTypes] = useState(props.hook.eventTypes.join(", "));
  const stream = props.hook.format === WebhookFormat.AUDIT_STREAM;
  const submit = useAction(async (key: string) => {
    await hooks().updateWebhook(
      {
        webhook: create(WebhookSchema, {
          name: props.hook.name,
          displayName,
          url,
          eventTypes: typesOf(types),
          etag: props.hook.etag,
        }),
        updateMask: create(FieldMaskSchema, { paths: stream ? ["display_name", "url"] : ["display_name", "url", "event_types"] }),
      },
      keyed(key),
    );
    props.onDone();
    props.onClose();
  });
  return (
    <FormDialog title={`Edit ${props.hook.displayName}`} onClose={props.onClose} action={submit} verb="Save">
      <Field label="Name" name="display_name" value={displayName} onValue={setDisplayName} path="webhook.display_name" fields={submit.fields} required />
      <Field label="Endpoint URL" name="url" type="url" value={url} onValue={setUrl} path="webhook.url" fields={submit.fields} required />
      {!stream && <EventTypes value={types} onValue={setTypes} known={[]} fields={submit.fields} />}
    </FormDialog>
  );
}

function Deliveries(props: { hook: Webhook; onClose: () => void }) {
  const [items, setItems] = useState<WebhookDelivery[]>([]);
  const [next, setNext] = useState("");
  const [payload, setPayload] = useState<WebhookDelivery | null>(null);
  const load = useAction(async (_key: string, token: string) => {
    const r = await hooks().listWebhookDeliveries({ parent: props.hook.name, pageSize: 50, pageToken: token });
    setItems((xs) => (token ? [...xs, ...r.deliveries] : r.deliveries));
    setNext(r.nextPageToken);
  });
  useEffect(() => {
    void load.run("");
  }, [props.hook.name]);
  const redeliver = useAction(async (key: string, d: WebhookDelivery) => {
    const r = await hooks().redeliverWebhookDelivery({ name: d.name }, keyed(key));
    if (r.delivery) setItems((xs) => xs.map((x) => (x.name === d.name ? r.delivery! : x)));
  });
  const open = useAction(async (_key: string, d: WebhookDelivery) => {
    const r = await hooks().getWebhookDelivery({ name: d.name });
    setPayload(r.delivery ?? null);
  });
  return (
    <Dialog title={`Deliveries of ${props.hook.displayName}`} onClose={props.onClose}>
      <div class="toolbar">
        <button type="button" class="secondary" disabled={load.busy} onClick={() => void load.run("")}>
          Refresh
        </button>
      </div>
      <ErrorAlert action={load} />
      <ErrorAlert action={redeliver} />
      <ErrorAlert action={open} />
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Deliveries">
        <table>
          <thead>
            <tr>
              <th scope="col">Queued</th>
              <th scope="col">Type</th>
              <th scope="col">Events</th>
              <th scope="col">State</th>
              <th scope="col">Attempts</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {items.map((d) => (
              <tr key={d.name} data-state={deliveryStates[d.state]}>
                <td>{when(d.createTime)}</td>
                <td>{d.eventType}</td>
                <td>{d.firstSequence === d.lastSequence ? String(d.firstSequence) : `${d.firstSequence}–${d.lastSequence}`}</td>
                <td>
                  {deliveryStates[d.state]}
                  {d.lastStatusCode > 0 && ` (HTTP ${d.lastStatusCode})`}
                  {d.lastError && <div class="hint">{d.lastError}</div>}
                </td>
                <td>{d.attempts}</td>
                <td class="actions">
                  <button type="button" class="secondary small" onClick={() => void open.run(d)}>
                    Payload<span class="sr-only"> of event {String(d.firstSequence)}</span>
                  </button>
                  {d.state !== WebhookDeliveryState.PENDING && (
                    <button type="button" class="secondary small" disabled={redeliver.busy} onClick={() => void redeliver.run(d)}>
                      Redeliver<span class="sr-only"> event {String(d.firstSequence)}</span>
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!load.busy && !load.error && items.length === 0 && <p>Nothing sent yet.</p>}
      <LoadMore next={next} busy={load.busy} onMore={() => void load.run(next)} />
      {payload && (
        <Dialog title={`Payload of event ${String(payload.firstSequence)}`} onClose={() => setPayload(null)}>
          <pre class="json">{payload.payload}</pre>
          <div class="buttons">
            <button type="button" onClick={() => setPayload(null)}>
              Close
            </button>
          </div>
        </Dialog>
      )}
      <div class="buttons">
        <button type="button" onClick={props.onClose}>
          Done
        </button>
      </div>
    </Dialog>
  );
}
