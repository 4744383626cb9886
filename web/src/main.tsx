// The console's shell: restores the session from the refresh cookie, routes by path, and
// shows the navigation a signed-in person's role can use (the server still decides).
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";

import {
  api,
  currentSession,
  isAdmin,
  onSession,
  refresh,
  roleNames,
  scheduleRefresh,
  setSession,
  type Session,
} from "./api";
import { AuthService } from "./gen/fluxgate/v1/auth_pb";
import { ChangePassword, ForgotPassword, Register, ResetPassword, SignIn, SsoDone } from "./pages/auth";
import { Account } from "./pages/account";
import { Activity, Audit } from "./pages/audit";
import { Catalog } from "./pages/catalog";
import { ChangeDetail, Changes } from "./pages/changes";
import { Groups } from "./pages/groups";
import { ServiceAccounts } from "./pages/service_accounts";
import { Outbox, Settings } from "./pages/settings";
import { Users } from "./pages/users";
import { Webhooks } from "./pages/webhooks";
import { navigate, onLinkClick, usePath } from "./router";

/** Pages anyone may open, signed in or not. */
const PUBLIC: Record<string, () => preact.JSX.Element> = {
  "/register": Register,
  "/reset-password": ResetPassword,
  "/forgot-password": ForgotPassword,
  "/sso/done": SsoDone,
};

/** A page of the signed-in console: its path, its menu label, and whether only Team Admins see it. */
interface Route {
  path: string;
  label: string;
  page: () => preact.JSX.Element;
  admin?: boolean;
}

const ROUTES: Route[] = [
  { path: "/changes", label: "Change requests", page: Changes },
  { path: "/catalog", label: "Catalog", page: Catalog },
  { path: "/groups", label: "Groups", page: Groups },
  { path: "/users", label: "Users", page: Users, admin: true },
  { path: "/service-accounts", label: "Service accounts", page: ServiceAccounts },
  { path: "/audit", label: "Audit log", page: Audit, admin: true },
  { path: "/activity", label: "Activity", page: Activity },
  { path: "/settings", label: "Settings", page: Settings, admin: true },
  { path: "/outbox", label: "Outbox", page: Outbox, admin: true },
  { path: "/webhooks", label: "Webhooks", page: Webhooks, admin: true },
  { path: "/account", label: "My account", page: Account },
];

/** The menu: what the role can use. A page left out can still be opened by its address; the server refuses. */
const menu = (s: Session) => ROUTES.filter((r) => !r.admin || isAdmin(s));

/** The route a path belongs to (a change request's page belongs to "Change requests"). */
const routeOf = (path: string) =>
  ROUTES.find((r) => r.path === path) ?? (path.startsWith("/changeRequests/") ? ROUTES[0] : undefined);

function useSession(): Session | null {
  const [s, set] = useState(currentSession());
  useEffect(() => onSession((x) => {
    set(x);
    scheduleRefresh(x);
  }), []);
  return s;
}

function Home(props: { session: Session }) {
  return (
    <main id="main">
      <h1>Welcome, {props.session.user.displayName || props.session.user.username}</h1>
      <p>You are signed in as {props.session.user.username} ({roleNames[props.session.user.role]}).</p>
      <ul>
        {menu(props.session).map((n) => (
          <li key={n.path}>
            <a href={n.path}>{n.label}</a>
          </li>
        ))}
      </ul>
    </main>
  );
}

function Shell(props: { session: Session; path: string }) {
  const { session, path } = props;
  const [open, setOpen] = useState(false);
  const signOut = async () => {
    try {
      await api(AuthService).logout({});
    } finally {
      setSession(null);
      navigate("/signin", true);
    }
  };
  let page: preact.JSX.Element;
  if (session.user.mustChangePassword || path === "/change-password") {
    page = <ChangePassword forced={session.user.mustChangePassword} onDone={() => navigate("/", true)} />;
  } else if (path.startsWith("/changeRequests/")) {
    page = <ChangeDetail name={path.slice(1)} />;
  } else {
    const Page = routeOf(path)?.page;
    page = Page ? <Page /> : <Home session={session} />;
  }
  const current = routeOf(path)?.path;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/">
          FluxGate
        </a>
        <button type="button" class="menu secondary" aria-expanded={open} aria-controls="nav" onClick={() => setOpen(!open)}>
          Menu
        </button>
        <nav id="nav" aria-label="Main" class={open ? "open" : ""}>
          {menu(session).map((n) => (
            <a key={n.path} href={n.path} aria-current={current === n.path ? "page" : undefined} onClick={() => setOpen(false)}>
              {n.label}
            </a>
          ))}
        </nav>
        <div class="who">
          <span data-testid="whoami">
            {session.user.username} · {roleNames[session.user.role]}
          </span>
          <button type="button" class="secondary" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      {page}
    </>
  );
}

function App() {
  const path = usePath();
  const session = useSession();
  const [restoring, setRestoring] = useState(true);
  const [ended, setEnded] = useState(false);
  useEffect(() => {
    // Coming back from an identity provider, the page makes the session itself (no race with
    // a refresh that would find no cookie yet and sign it out).
    if (path === "/sso/done") setRestoring(false);
    else void refresh().finally(() => setRestoring(false));
  }, []);
  // A session that ends under the user's feet (revoked, deactivated, expired) sends them to sign-in.
  useEffect(
    () =>
      onSession((s, why) => {
        if (!s) setEnded(why === "ended");
      }),
    [],
  );
  const Public = PUBLIC[path];
  if (Public) return <Public />;
  if (restoring) return <p class="loading" role="status">Loading…</p>;
  if (!session) {
    if (path !== "/signin") history.replaceState(null, "", "/signin");
    return <SignIn notice={ended ? "Your session has ended. Sign in again." : undefined} />;
  }
  if (path === "/signin") {
    history.replaceState(null, "", "/");
    return <Shell session={session} path="/" />;
  }
  return <Shell session={session} path={path} />;
}

document.addEventListener("click", onLinkClick);
render(<App />, document.getElementById("app")!);
