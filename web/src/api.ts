// The console's one way to the server: the public gRPC services over gRPC-Web, with the
// access token held in memory only. The refresh token lives in an HttpOnly, SameSite=Strict
// cookie scoped to the AuthService path, which the server sets when a call carries
// `x-fluxgate-session-cookie: 1` (scripts can neither read it nor send it cross-site).
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import { AuthService } from "./gen/fluxgate/v1/auth_pb";
import type { User } from "./gen/fluxgate/v1/users_pb";
import { Role } from "./gen/fluxgate/v1/common_pb";

/** The signed-in person, as far as the console needs to know. */
export interface Session {
  accessToken: string;
  expiresAt: number;
  user: User;
}

let session: Session | null = null;
/** Why the last session ended: "" when signed out on purpose or never signed in. */
export type Ended = "" | "ended";
const listeners = new Set<(s: Session | null, why: Ended) => void>();

export function currentSession(): Session | null {
  return session;
}

export function onSession(f: (s: Session | null, why: Ended) => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

export function setSession(s: Session | null, why: Ended = ""): void {
  session = s;
  for (const f of listeners) f(s, why);
}

/** The metadata every call carries; the write key is added by `write`. */
const auth: Interceptor = (next) => async (req) => {
  req.header.set("x-fluxgate-session-cookie", "1");
  if (session && !req.header.has("authorization")) {
    req.header.set("authorization", `Bearer ${session.accessToken}`);
  }
  return next(req);
};

/** Refreshes the access token once when a call finds it expired, then retries the call. */
const renew: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (e) {
    const err = ConnectError.from(e);
    const signingIn = req.service.typeName === AuthService.typeName && (req.method.name === "Login" || req.method.name === "RefreshSession");
    if (err.code !== Code.Unauthenticated || !session || signingIn) {
      throw err;
    }
    if (!(await refresh())) throw err;
    req.header.set("authorization", `Bearer ${session!.accessToken}`);
    return next(req);
  }
};

export const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  interceptors: [renew, auth],
  useBinaryFormat: true,
});

const clients = new Map<string, unknown>();

/** The client of one service. */
export function api<T extends DescService>(service: T): Client<T> {
  let c = clients.get(service.typeName) as Client<T> | undefined;
  if (!c) {
    c = createClient(service, transport);
    clients.set(service.typeName, c);
  }
  return c;
}

let refreshing: Promise<boolean> | null = null;

/** Trades the refresh cookie for a new access token; false when there is no live session. */
export function refresh(): Promise<boolean> {
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const r = await api(AuthService).refreshSession({ refreshToken: "" });
        const accessToken = r.tokens?.accessToken ?? "";
        const me = await api(AuthService).whoAmI({}, { headers: { authorization: `Bearer ${accessToken}` } });
        if (!me.user) throw new Error("not a user");
        setSession({ accessToken, expiresAt: expiry(r.tokens?.accessTokenExpireTime), user: me.user });
        return true;
      } catch {
        setSession(null, session ? "ended" : "");
        return false;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

export function expiry(t: Timestamp | undefined): number {
  return t ? timestampDate(t).getTime() : Date.now() + 60_000;
}

let timer: number | undefined;

/** Keeps the access token fresh a little before it expires, while the page is open. */
export function scheduleRefresh(s: Session | null): void {
  window.clearTimeout(timer);
  if (!s) return;
  const wait = Math.max(5_000, s.expiresAt - Date.now() - 30_000);
  timer = window.setTimeout(() => void refresh(), wait);
}

/** A fresh idempotency key: one per user action, reused if that action is retried. */
export function newKey(): string {
  return crypto.randomUUID();
}

/** Call options of a write: the action's idempotency key. */
export function keyed(key: string): { headers: Record<string, string> } {
  return { headers: { "idempotency-key": key } };
}

/** A field the server refused, from google.rpc.BadRequest. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The field violations of an INVALID_ARGUMENT, decoded from its google.rpc.BadRequest detail. */
export function violations(e: unknown): FieldViolation[] {
  const err = ConnectError.from(e);
  const out: FieldViolation[] = [];
  for (const d of err.details) {
    if (!("type" in d) || d.type !== "google.rpc.BadRequest") continue;
    const r = new BinaryReader(d.value);
    while (r.pos < r.len) {
      const [no] = r.tag();
      if (no !== 1) {
        r.skip(2);
        continue;
      }
      const v = new BinaryReader(r.bytes());
      const fv = { field: "", description: "" };
      while (v.pos < v.len) {
        const [n] = v.tag();
        if (n === 1) fv.field = v.string();
        else if (n === 2) fv.description = v.string();
        else v.skip(2);
      }
      out.push(fv);
    }
  }
  return out;
}

/** A sentence for a refused or failed call: the server's own words. */
export function message(e: unknown): string {
  const err = ConnectError.from(e);
  const vs = violations(err);
  if (vs.length) return vs.map((v) => `${v.field}: ${v.description}`).join("; ");
  if (err.code === Code.Unavailable || err.code === Code.Unknown && !err.rawMessage) {
    return "The server could not be reached. Try again.";
  }
  return err.rawMessage || Code[err.code];
}

export function code(e: unknown): Code {
  return ConnectError.from(e).code;
}

export const roleNames: Record<Role, string> = {
  [Role.UNSPECIFIED]: "—",
  [Role.TEAM_ADMIN]: "Team Admin",
  [Role.APPROVER]: "Approver",
  [Role.REQUESTER]: "Requester",
};

export function isAdmin(s: Session | null): boolean {
  return s?.user.role === Role.TEAM_ADMIN;
}

export function when(t: Timestamp | undefined): string {
  return t ? timestampDate(t).toLocaleString() : "never";
}

export { Code, ConnectError };
