// A portfolio's groups: members, the permission grid (applications × feature permission,
// environments × value permissions), and "why can / can't this principal …", answered by the
// engine through ExplainPermission.
import { useEffect, useState } from "preact/hooks";
import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";

import { api, keyed } from "../api";
import { CatalogService, type Application, type Environment, type Portfolio } from "../gen/fluxgate/v1/catalog_pb";
import {
  ApplicationGrantSchema,
  EnvironmentGrantSchema,
  FeaturePermission,
  GroupSchema,
  GroupService,
  ValuePermission,
  type Group,
} from "../gen/fluxgate/v1/groups_pb";
import { Permission, PermissionService, type ExplainPermissionResponse } from "../gen/fluxgate/v1/permissions_pb";
import { UserService } from "../gen/fluxgate/v1/users_pb";
import { NOT_MANAGER, useManages } from "../may";
import { navigate, param, withQuery } from "../router";
import { Alert, allPages, Confirm, ErrorAlert, Field, FormDialog, Select, useAction } from "../ui";

const VALUES: [ValuePermission, string][] = [
  [ValuePermission.READ, "Read"],
  [ValuePermission.LOCK, "Lock"],
  [ValuePermission.UNLOCK, "Unlock"],
  [ValuePermission.CHANGE_VALUE, "Change value"],
];

interface Tree {
  apps: Application[];
  envs: Record<string, Environment[]>;
}

async function tree(portfolio: string): Promise<Tree> {
  const c = api(CatalogService);
  const apps = await allPages(async (t) => {
    const r = await c.listApplications({ parent: portfolio, pageSize: 200, pageToken: t });
    return { items: r.applications, next: r.nextPageToken };
  });
  const envs: Record<string, Environment[]> = {};
  for (const a of apps) {
    envs[a.name] = await allPages(async (t) => {
      const r = await c.listEnvironments({ parent: a.name, pageSize: 200, pageToken: t });
      return { items: r.environments, next: r.nextPageToken };
    });
  }
  return { apps, envs };
}

export function Groups() {
  const p = param("p");
  const g = param("g");
  const [portfolios, setPortfolios] = useState<Portfolio[]>([]);
  const [groups, setGroups] = useState<Group[]>([]);
  const [creating, setCreating] = useState(false);
  const loadPortfolios = useAction(async () => {
    const ps = await allPages(async (t) => {
      const r = await api(CatalogService).listPortfolios({ pageSize: 200, pageToken: t });
      return { items: r.portfolios, next: r.nextPageToken };
    });
    setPortfolios(ps);
    if (!p && ps.length) navigate(withQuery("/groups", { p: ps[0].name }), true);
  });
  const loadGroups = useAction(async () => {
    setGroups(
      await allPages(async (t) => {
        const r = await api(GroupService).listGroups({ parent: p, pageSize: 200, pageToken: t });
        return { items: r.groups, next: r.nextPageToken };
      }),
    );
  });
  useEffect(() => {
    void loadPortfolios.run();
  }, []);
  useEffect(() => {
    if (p) void loadGroups.run();
  }, [p]);
  const selected = groups.find((x) => x.name === g);
  const may = useManages(p);
  return (
    <main id="main">
      <div class="page-head">
        <h1>Groups</h1>
        <button type="button" disabled={!p || !may} title={may ? undefined : NOT_MANAGER} onClick={() => setCreating(true)}>
          New group
        </button>
      </div>
      <div class="toolbar">
        <Select
          label="Portfolio"
          name="portfolio"
          value={p}
          onValue={(v) => navigate(withQuery("/groups", { p: v }))}
          options={portfolios.map((x) => [x.name, x.displayName])}
        />
      </div>
      <ErrorAlert action={loadPortfolios} />
      <ErrorAlert action={loadGroups} />
      {p && portfolios.length === 0 && !loadPortfolios.busy && <p>No portfolio yet: add one in the Catalog.</p>}
      <div class="split">
        <section class="column" aria-labelledby="groups-list">
          <h2 id="groups-list">Groups</h2>
          <ul class="list">
            {groups.map((x) => (
              <li key={x.name} class={x.name === g ? "selected" : ""}>
                <button
                  type="button"
                  class="link"
                  aria-current={x.name === g ? "true" : undefined}
                  onClick={() => navigate(withQuery("/groups", { p, g: x.name }))}
                >
                  {x.displayName}
                </button>
                <span class="hint">
                  {x.memberCount} member{x.memberCount === 1 ? "" : "s"}
                </span>
              </li>
            ))}
          </ul>
        </section>
        {selected ? (
          <GroupDetail
            key={selected.name}
            portfolio={p}
            group={selected}
            onChange={(n) => setGroups((xs) => xs.map((x) => (x.name === n.name ? n : x)))}
            onDeleted={() => {
              setGroups((xs) => xs.filter((x) => x.name !== selected.name));
              navigate(withQuery("/groups", { p }));
            }}
          />
        ) : (
          <p class="hint">Choose a group to see its members and permissions.</p>
        )}
      </div>
      {p && <Explain portfolio={p} />}
      {creating && (
        <NewGroup
          portfolio={p}
          onClose={() => setCreating(false)}
          onDone={(n) => {
            setGroups((xs) => [...xs, n]);
            navigate(withQuery("/groups", { p, g: n.name }));
          }}
        />
      )}
    </main>
  );
}

function NewGroup(props: { portfolio: string; onClose: () => void; onDone: (g: Group) => void }) {
  const [displayName, setDisplayName] = useState("");
  const [description, setDescription] = useState("");
  const submit = useAction(async (key: string) => {
    const r = await api(GroupService).createGroup(
      { parent: props.portfolio, group: create(GroupSchema, { displayName, description }) },
      keyed(key),
    );
    if (r.group) props.onDone(r.group);
    props.onClose();
  });
  return (
    <FormDialog title="New group" onClose={props.onClose} action={submit} verb="Create">
      <Field label="Name" name="display_name" value={displayName} onValue={setDisplayName} path="group.display_name" fields={submit.fields} required />
      <Field label="Description" name="description" value={description} onValue={setDescription} path="group.description" fields={submit.fields} />
    </FormDialog>
  );
}

/** `users/{id}` → username, for display; other names as they are. */
async function memberLabel(name: string): Promise<string> {
  if (!name.startsWith("users/")) return name;
  try {
    const r = await api(UserService).getUser({ name });
    return r.user ? `${r.user.displayName} (${r.user.username})` : name;
  } catch {
    return name;
  }
}

function GroupDetail(props: { portfolio: string; group: Group; onChange: (g: Group) => void; onDeleted: () => void }) {
  const { group } = props;
  const may = useManages(props.portfolio);
  const [members, setMembers] = useState<[string, string][]>([]);
  const [member, setMember] = useState("");
  const [deleting, setDeleting] = useState(false);
  const loadMembers = useAction(async () => {
    const names = await allPages(async (t) => {
      const r = await api(GroupService).listGroupMembers({ group: group.name, pageSize: 200, pageToken: t });
      return { items: r.members, next: r.nextPageToken };
    });
    setMembers(await Promise.all(names.map(async (n) => [n, await memberLabel(n)] as [string, string])));
  });
  useEffect(() => {
    void loadMembers.run();
  }, [group.name, group.memberCount]);
  const add = useAction(async (key: string) => {
    const name = member.includes("/") ? member.trim() : `users/${member.trim()}`;
    const r = await api(GroupService).addGroupMember({ group: group.name, member: name }, keyed(key));
    if (r.group) props.onChange(r.group);
    setMember("");
  });
  const remove = useAction(async (key: string, name: string) => {
    const r = await api(GroupService).removeGroupMember({ group: group.name, member: name }, keyed(key));
    if (r.group) props.onChange(r.group);
  });
  const del = useAction(async (key: string) => {
    await api(GroupService).deleteGroup({ name: group.name, etag: group.etag }, keyed(key));
    props.onDeleted();
  });
  return (
    <section class="column" aria-labelledby="group-title">
      <div class="page-head">
        <h2 id="group-title">{group.displayName}</h2>
        <button
          type="button"
          class="danger small"
          disabled={group.administrators || !may}
          title={group.administrators ? "Every portfolio keeps its Administrators group" : may ? undefined : NOT_MANAGER}
          onClick={() => setDeleting(true)}
        >
          Delete group
        </button>
      </div>
      {group.description && <p>{group.description}</p>}
      {group.administrators && (
        <Alert kind="info">The portfolio's Administrators: they manage it and hold every permission in it.</Alert>
      )}
      <h3>Members</h3>
      <ErrorAlert action={loadMembers} />
      <ul class="list">
        {members.map(([n, label]) => (
          <li key={n}>
            <span>{label}</span>
            <button
              type="button"
              class="secondary small"
              disabled={remove.busy || !may}
              title={may ? undefined : NOT_MANAGER}
              onClick={() => void remove.run(n)}
            >
              Remove<span class="sr-only"> {label}</span>
            </button>
          </li>
        ))}
      </ul>
      <ErrorAlert action={remove} />
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void add.run();
        }}
      >
        <Field
          label="Add member (username, users/… or serviceAccounts/…)"
          name="member"
          value={member}
          onValue={setMember}
          fields={add.fields}
        />
        <button type="submit" disabled={add.busy || !member.trim() || !may} title={may ? undefined : NOT_MANAGER}>
          Add member
        </button>
      </form>
      <ErrorAlert action={add} />
      {!may && <p class="hint">{NOT_MANAGER}.</p>}
      {!group.administrators && <Grid portfolio={props.portfolio} group={group} may={may} onChange={props.onChange} />}
      {deleting && (
        <Confirm title={`Delete ${group.displayName}?`} action={del} verb="Delete" danger onClose={() => setDeleting(false)}>
          <p>Its members lose what it granted them.</p>
        </Confirm>
      )}
    </section>
  );
}

/** The group's grants as a grid of checkboxes, saved in one UpdateGroup with the etag. */
function Grid(props: { portfolio: string; group: Group; may: boolean; onChange: (g: Group) => void }) {
  const { group } = props;
  const [t, setTree] = useState<Tree | null>(null);
  const [features, setFeatures] = useState<Record<string, FeaturePermission>>({});
  const [values, setValues] = useState<Record<string, ValuePermission[]>>({});
  const [saved, setSaved] = useState(false);
  const reset = (g: Group) => {
    setFeatures(Object.fromEntries(g.applicationGrants.map((x) => [x.application, x.featurePermission])));
    setValues(Object.fromEntries(g.environmentGrants.map((x) => [x.environment, [...x.permissions]])));
  };
  const load = useAction(async () => setTree(await tree(props.portfolio)));
  useEffect(() => {
    void load.run();
    reset(group);
  }, [group.name]);
  const save = useAction(async (key: string) => {
    const r = await api(GroupService).updateGroup(
      {
        group: create(GroupSchema, {
          name: group.name,
          etag: group.etag,
          applicationGrants: Object.entries(features)
            .filter(([, f]) => f !== FeaturePermission.UNSPECIFIED)
            .map(([application, featurePermission]) => create(ApplicationGrantSchema, { application, featurePermission })),
          environmentGrants: Object.entries(values)
            .filter(([, ps]) => ps.length)
            .map(([environment, permissions]) => create(EnvironmentGrantSchema, { environment, permissions })),
        }),
        updateMask: create(FieldMaskSchema, { paths: ["application_grants", "environment_grants"] }),
      },
      keyed(key),
    );
    if (r.group) {
      props.onChange(r.group);
      reset(r.group);
    }
    setSaved(true);
  });
  const toggle = (env: string, v: ValuePermission, on: boolean) => {
    setSaved(false);
    setValues((m) => {
      const cur = new Set(m[env] ?? []);
      if (on) cur.add(v);
      else cur.delete(v);
      return { ...m, [env]: [...cur].sort() };
    });
  };
  if (!t) return <ErrorAlert action={load} />;
  return (
    <>
      <h3>Permissions</h3>
      {t.apps.length === 0 && <p class="hint">The portfolio has no application yet.</p>}
      {t.apps.map((a) => (
        <fieldset key={a.name} class="grid">
          <legend>{a.displayName}</legend>
          <Select
            label={`Features of ${a.displayName}`}
            name={`feature-${a.name}`}
            value={String(features[a.name] ?? FeaturePermission.UNSPECIFIED)}
            onValue={(v) => {
              setSaved(false);
              setFeatures((m) => ({ ...m, [a.name]: Number(v) as FeaturePermission }));
            }}
            options={[
              [String(FeaturePermission.UNSPECIFIED), "No feature permission"],
              [String(FeaturePermission.CREATE), "Create"],
              [String(FeaturePermission.CREATE_EDIT_DELETE), "Create, edit and delete"],
            ]}
          />
          <div class="table-wrap" tabIndex={0} role="region" aria-label={`Environments of ${a.displayName}`}>
            <table>
              <thead>
                <tr>
                  <th scope="col">Environment</th>
                  {VALUES.map(([, l]) => (
                    <th scope="col" key={l}>
                      {l}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {(t.envs[a.name] ?? []).map((e) => (
                  <tr key={e.name}>
                    <th scope="row">{e.displayName}</th>
                    {VALUES.map(([v, l]) => (
                      <td key={l}>
                        <input
                          type="checkbox"
                          aria-label={`${l} in ${e.displayName}`}
                          checked={(values[e.name] ?? []).includes(v)}
                          onChange={(ev) => toggle(e.name, v, (ev.target as HTMLInputElement).checked)}
                        />
                      </td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </fieldset>
      ))}
      {saved && <Alert kind="success">Permissions saved.</Alert>}
      <ErrorAlert action={save} />
      <div class="buttons">
        <button type="button" disabled={save.busy || !props.may} title={props.may ? undefined : NOT_MANAGER} onClick={() => void save.run()}>
          Save permissions
        </button>
      </div>
    </>
  );
}

const PERMISSIONS: [string, string][] = [
  [String(Permission.READ), "Read the value"],
  [String(Permission.LOCK), "Lock"],
  [String(Permission.UNLOCK), "Unlock"],
  [String(Permission.CHANGE_VALUE), "Change the value"],
  [String(Permission.CREATE_FEATURE), "Create a feature"],
  [String(Permission.EDIT_FEATURE), "Edit a feature"],
  [String(Permission.DELETE_FEATURE), "Delete a feature"],
];

/** "Why can / can't this principal …": the engine's decision, reason and contributing groups. */
function Explain(props: { portfolio: string }) {
  const [principal, setPrincipal] = useState("");
  const [permission, setPermission] = useState(String(Permission.CHANGE_VALUE));
  const [resource, setResource] = useState("");
  const [resources, setResources] = useState<[string, string][]>([]);
  const [answer, setAnswer] = useState<ExplainPermissionResponse | null>(null);
  useEffect(() => {
    void tree(props.portfolio)
      .then((t) => {
        const list: [string, string][] = [];
        for (const a of t.apps) {
          list.push([a.name, `${a.displayName} (application)`]);
          for (const e of t.envs[a.name] ?? []) list.push([e.name, `${a.displayName} / ${e.displayName}`]);
        }
        setResources(list);
        if (list.length) setResource(list[list.length - 1][0]);
      })
      .catch(() => setResources([]));
  }, [props.portfolio]);
  const explain = useAction(async () => {
    const who = principal.includes("/") ? principal.trim() : `users/${principal.trim()}`;
    setAnswer(
      await api(PermissionService).explainPermission({
        check: { principal: who, permission: Number(permission) as Permission, resource },
      }),
    );
  });
  return (
    <section class="panel" aria-labelledby="explain">
      <h2 id="explain">Why can or can't someone…?</h2>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void explain.run();
        }}
      >
        <Field label="Who (username or users/…)" name="principal" value={principal} onValue={setPrincipal} path="check.principal" fields={explain.fields} required />
        <Select label="Permission" name="permission" value={permission} onValue={setPermission} options={PERMISSIONS} />
        <Select label="On" name="resource" value={resource} onValue={setResource} options={resources} />
        <button type="submit" disabled={explain.busy || !resource}>
          Explain
        </button>
      </form>
      <ErrorAlert action={explain} />
      {answer?.decision && (
        <div data-testid="explanation">
          <Alert kind={answer.decision.allowed ? "success" : "info"}>
            <strong>{answer.decision.allowed ? "Allowed" : "Not allowed"}</strong>: {answer.decision.reason}
          </Alert>
          {answer.groups.length > 0 && (
            <ul>
              {answer.groups.map((c) => (
                <li key={c.group}>
                  {c.group}
                  {c.administrators ? " (Administrators)" : ""}: {c.grants}
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}
