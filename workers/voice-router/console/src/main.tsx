// The console's shell: sign-in gate, navigation, one page per route.

import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { Api, ApiError, whenUnauthorized } from "./api";
import { AgentEditor, AgentList } from "./agents";
import { CallDetail, CallList } from "./calls";
import { Playground } from "./playground";
import { NAV, parseRoute, type Route, titleOf } from "./route";
import { clearCredential, jwtClaims, loadCredential } from "./session";
import { SignIn } from "./signin";
import { Usage } from "./usage";

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

/** Who is signed in, as far as the console can tell without the edge (JWT claims only). */
function identity(credential: string): string {
  if (credential.startsWith("ak_")) return `API key ${credential.slice(0, 7)}…`;
  const claims = jwtClaims(credential);
  const tenant = typeof claims?.tenant_id === "string" ? claims.tenant_id : null;
  const subject = typeof claims?.sub === "string" ? claims.sub : null;
  return [subject, tenant && `tenant ${tenant}`].filter(Boolean).join(", ") || "JWT";
}

function App() {
  const [credential, setCredential] = useState(loadCredential);
  const [notice, setNotice] = useState<string | null>(null);
  const route = useRoute();
  const api = useMemo(() => (credential ? new Api(credential) : null), [credential]);

  useEffect(() => {
    whenUnauthorized((error: ApiError) => {
      clearCredential();
      setCredential(null);
      setNotice(`Signed out: the edge refused the credential (${error.message}).`);
    });
  }, []);
  useEffect(() => {
    document.title = `${api ? titleOf(route) : "Sign in"} · AYBIZA Edge console`;
  }, [route, api]);

  const signOut = () => {
    clearCredential();
    setCredential(null);
    setNotice("Signed out. The credential was removed from this tab.");
  };

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="bar">
        <span class="brand">AYBIZA Edge</span>
        {api && credential && (
          <>
            <nav aria-label="Console">
              <ul>
                {NAV.map((item) => (
                  <li key={item.href}>
                    <a href={item.href} aria-current={item.pages.includes(route.page) ? "page" : undefined}>
                      {item.label}
                    </a>
                  </li>
                ))}
              </ul>
            </nav>
            <span class="who">{identity(credential)}</span>
            <button type="button" class="secondary" onClick={signOut}>
              Sign out
            </button>
          </>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        {!api ? (
          <SignIn
            notice={notice}
            onSignedIn={(value) => {
              setNotice(null);
              setCredential(value);
            }}
          />
        ) : route.page === "agents" ? (
          <AgentList api={api} />
        ) : route.page === "agent" ? (
          <AgentEditor api={api} id={route.id} key={route.id ?? "new"} />
        ) : route.page === "calls" ? (
          <CallList api={api} />
        ) : route.page === "call" ? (
          <CallDetail api={api} id={route.id} key={route.id} />
        ) : route.page === "usage" ? (
          <Usage api={api} />
        ) : (
          <Playground api={api} agentId={route.agentId} />
        )}
      </main>
    </>
  );
}

const root = document.getElementById("app");
if (root) {
  root.textContent = "";
  render(<App />, root);
}
