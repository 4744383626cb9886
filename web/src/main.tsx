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
import { ChangePassword, ForgotPassword, Register, ResetPassword, SignIn } from "./pages/auth";
import { Users } from "./pages/users";
import { navigate, onLinkClick, usePath } from "./router";

/** Pages anyone may open, signed in or not. */
const PUBLIC: Record<string, () => preact.JSX.Element> = {
  "/register": Register,
  "/reset-password": ResetPassword,
  "/forgot-password": ForgotPassword,
};

interface NavItem {
  path: string;
  label: string;
  admin?: boolean;
}

const NAV: NavItem[] = [
  { path: "/users", label: "Users", admin: true },
  { path: "/account", label: "My account" },
];

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
        {NAV.filter((n) => !n.admin || isAdmin(props.session)).map((n) => (
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
  const [menu, setMenu] = useState(false);
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
  } else if (path === "/users") {
    page = <Users />;
  } else if (path === "/account") {
    page = <ChangePassword forced={false} onDone={() => undefined} />;
  } else {
    page = <Home session={session} />;
  }
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/">
          FluxGate
        </a>
        <button type="button" class="menu secondary" aria-expanded={menu} aria-controls="nav" onClick={() => setMenu(!menu)}>
          Menu
        </button>
        <nav id="nav" aria-label="Main" class={menu ? "open" : ""}>
          {NAV.filter((n) => !n.admin || isAdmin(session)).map((n) => (
            <a key={n.path} href={n.path} aria-current={path === n.path ? "page" : undefined} onClick={() => setMenu(false)}>
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
    void refresh().finally(() => setRestoring(false));
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
