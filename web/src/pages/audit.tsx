// The audit log (filters, pages, chain verification, export as JSON lines) and the activity
// dashboard (active users, approval response times, contributors, evaluations).
import { useEffect, useState } from "preact/hooks";
import { timestampFromDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

import { api, when } from "../api";
import { AuditService, type AuditEvent, type GetActivityReportResponse, type PeriodCount } from "../gen/fluxgate/v1/audit_pb";
import { Alert, ErrorAlert, Field, LoadMore, Select, useAction } from "../ui";

function stamp(local: string): Timestamp | undefined {
  return local ? timestampFromDate(new Date(local)) : undefined;
}

export function Audit() {
  const [actor, setActor] = useState("");
  const [target, setTarget] = useState("");
  const [action, setAction] = useState("");
  const [outcome, setOutcome] = useState("");
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [events, setEvents] = useState<AuditEvent[]>([]);
  const [next, setNext] = useState("");
  const [chain, setChain] = useState("");
  const load = useAction(async (_key: string, token: string) => {
    const r = await api(AuditService).listAuditEvents({
      pageSize: 50,
      pageToken: token,
      actor: actor.trim(),
      target: target.trim(),
      action: action.trim(),
      outcome,
      startTime: stamp(from),
      endTime: stamp(to),
    });
    setEvents((xs) => (token ? [...xs, ...r.events] : r.events));
    setNext(r.nextPageToken);
  });
  useEffect(() => {
    void load.run("");
  }, []);
  const verify = useAction(async () => {
    const r = await api(AuditService).verifyAuditChain({});
    setChain(
      r.valid
        ? `The chain is intact: ${r.eventsChecked} events checked.`
        : `The chain is broken at event ${r.firstBrokenSequence} (${r.eventsChecked} checked).`,
    );
  });
  const exporting = useAction(async () => {
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const chunk of api(AuditService).exportAuditEvents({ startTime: stamp(from), endTime: stamp(to) })) {
      parts.push(chunk.jsonLines);
      n += chunk.eventCount;
    }
    const url = URL.createObjectURL(new Blob(parts as BlobPart[], { type: "application/x-ndjson" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `fluxgate-audit-${new Date().toISOString().slice(0, 19)}.jsonl`;
    a.click();
    window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
    setChain(`Exported ${n} events.`);
  });
  return (
    <main id="main">
      <div class="page-head">
        <h1>Audit log</h1>
        <div class="buttons">
          <button type="button" class="secondary" disabled={verify.busy} onClick={() => void verify.run()}>
            Verify the chain
          </button>
          <button type="button" class="secondary" disabled={exporting.busy} onClick={() => void exporting.run()}>
            Export (JSON lines)
          </button>
        </div>
      </div>
      {chain && <Alert kind={chain.includes("broken") ? "error" : "success"}>{chain}</Alert>}
      <ErrorAlert action={verify} />
      <ErrorAlert action={exporting} />
      <form
        class="toolbar"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          void load.run("");
        }}
      >
        <Field label="Actor" name="actor" value={actor} onValue={setActor} fields={load.fields} placeholder="users/… or serviceAccounts/…" />
        <Field label="Target" name="target" value={target} onValue={setTarget} fields={load.fields} />
        <Field label="Action" name="action" value={action} onValue={setAction} fields={load.fields} placeholder="e.g. user.created" />
        <Select
          label="Outcome"
          name="outcome"
          value={outcome}
          onValue={setOutcome}
          options={[
            ["", "Any"],
            ["success", "Success"],
            ["failure", "Failure"],
          ]}
        />
        <Field label="From" name="start_time" type="datetime-local" value={from} onValue={setFrom} path="start_time" fields={load.fields} />
        <Field label="To" name="end_time" type="datetime-local" value={to} onValue={setTo} path="end_time" fields={load.fields} />
        <button type="submit" disabled={load.busy}>
          Filter
        </button>
      </form>
      <ErrorAlert action={load} />
      <div class="table-wrap" tabIndex={0} role="region" aria-label="Audit events">
        <table>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Time</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Outcome</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody>
            {events.map((e) => (
              <tr key={String(e.sequence)} data-action={e.action}>
                <td>{String(e.sequence)}</td>
                <td>{when(e.time)}</td>
                <td>{e.actorDisplayName || e.actor}</td>
                <td>
                  <code>{e.action}</code>
                </td>
                <td>{e.target}</td>
                <td>{e.outcome}</td>
                <td>{e.detail}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!load.busy && !load.error && events.length === 0 && <p>No event matches.</p>}
      <LoadMore next={next} busy={load.busy} onMore={() => void load.run(next)} />
    </main>
  );
}

/** A bar chart of counts per period, with the same figures as a table for screen readers. */
function Bars(props: { title: string; data: PeriodCount[] }) {
  const max = Math.max(1, ...props.data.map((d) => Number(d.count)));
  const w = 100 / Math.max(1, props.data.length);
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <svg viewBox="0 0 100 40" preserveAspectRatio="none" aria-hidden="true">
        {props.data.map((d, i) => {
          const h = (Number(d.count) / max) * 38;
          return <rect key={i} x={i * w + w * 0.1} y={40 - h} width={w * 0.8} height={h} />;
        })}
      </svg>
      <table class="sr-only">
        <caption>{props.title}</caption>
        <tbody>
          {props.data.map((d, i) => (
            <tr key={i}>
              <th scope="row">{when(d.periodStart)}</th>
              <td>{String(d.count)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {props.data.length === 0 && <p class="hint">No activity in this period.</p>}
    </figure>
  );
}

function secs(d: Duration | undefined): string {
  if (!d) return "—";
  const s = Number(d.seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function Activity() {
  const [days, setDays] = useState("30");
  const [report, setReport] = useState<GetActivityReportResponse | null>(null);
  const load = useAction(async () => {
    const end = new Date();
    const start = new Date(end.getTime() - Number(days) * 86_400_000);
    setReport(
      await api(AuditService).getActivityReport({ startTime: timestampFromDate(start), endTime: timestampFromDate(end), top: 10 }),
    );
  });
  useEffect(() => {
    void load.run();
  }, [days]);
  const m = report?.approvalResponseTimes;
  return (
    <main id="main">
      <h1>Activity</h1>
      <div class="toolbar">
        <Select
          label="Period"
          name="period"
          value={days}
          onValue={setDays}
          options={[
            ["7", "Last 7 days"],
            ["30", "Last 30 days"],
            ["90", "Last 90 days"],
          ]}
        />
      </div>
      <ErrorAlert action={load} />
      {report && (
        <>
          <div class="panes">
            <section class="panel">
              <Bars title="Active users per day" data={report.activeUsersPerDay} />
            </section>
            <section class="panel">
              <Bars title="Active users per week" data={report.activeUsersPerWeek} />
            </section>
          </div>
          <div class="panes">
            <section class="panel" aria-labelledby="contributors">
              <h2 id="contributors">Most active contributors</h2>
              <Ranking rows={report.mostActiveContributors} unit="changes" />
            </section>
            <section class="panel" aria-labelledby="evaluations">
              <h2 id="evaluations">Evaluations by user</h2>
              <Ranking rows={report.featureEvaluationsByUser} unit="evaluations" />
            </section>
          </div>
          {m && (
            <section class="panel" aria-labelledby="response">
              <h2 id="response">Approval response times</h2>
              <div class="table-wrap" tabIndex={0} role="region" aria-label="Approval response times per environment">
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Environment</th>
                      <th scope="col">Submitted</th>
                      <th scope="col">Approved</th>
                      <th scope="col">Rejected</th>
                      <th scope="col">Pending</th>
                      <th scope="col">Median to first review</th>
                      <th scope="col">Median to decision</th>
                    </tr>
                  </thead>
                  <tbody>
                    {[...(m.overall ? [{ ...m.overall, environment: "All environments" }] : []), ...m.environments].map((e) => (
                      <tr key={e.environment}>
                        <th scope="row">{e.environment}</th>
                        <td>{String(e.submitted)}</td>
                        <td>{String(e.approved)}</td>
                        <td>{String(e.rejected)}</td>
                        <td>{String(e.pending)}</td>
                        <td>{secs(e.timeToFirstReview?.median)}</td>
                        <td>{secs(e.timeToDecision?.median)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
              <h3>By reviewer</h3>
              <ul>
                {m.reviewers.map((r) => (
                  <li key={r.reviewer}>
                    {r.reviewerDisplayName}: {String(r.approvals)} approved, {String(r.rejections)} rejected, median response{" "}
                    {secs(r.responseTime?.median)}
                  </li>
                ))}
              </ul>
            </section>
          )}
        </>
      )}
    </main>
  );
}

function Ranking(props: { rows: { principal: string; displayName: string; count: bigint }[]; unit: string }) {
  if (!props.rows.length) return <p class="hint">None in this period.</p>;
  const max = Math.max(1, ...props.rows.map((r) => Number(r.count)));
  return (
    <ol class="ranking">
      {props.rows.map((r) => (
        <li key={r.principal}>
          <span>{r.displayName || r.principal}</span>
          <span class="bar" style={{ width: `${(Number(r.count) / max) * 100}%` }} aria-hidden="true" />
          <span>
            {String(r.count)} {props.unit}
          </span>
        </li>
      ))}
    </ol>
  );
}
