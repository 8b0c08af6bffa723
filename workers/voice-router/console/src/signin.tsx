// Sign-in: paste an API key or a JWT once. It is checked against the API itself (a one-agent
// listing) and kept in this tab's sessionStorage only.

import { useState } from "preact/hooks";
import { Api, ApiError } from "./api";
import { credentialKind, saveCredential } from "./session";

export function SignIn({ notice, onSignedIn }: { notice: string | null; onSignedIn: (credential: string) => void }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    const credential = value.trim();
    if (!credentialKind(credential)) {
      setError("Paste an API key (ak_…) or a JWT (three dot-separated parts).");
      return;
    }
    setChecking(true);
    setError(null);
    try {
      await new Api(credential).call("GET", "/api/v1/agents?limit=1");
    } catch (caught) {
      const failure = caught instanceof ApiError ? caught : new ApiError(0, "network", String(caught));
      // 403: a valid credential without the agents:admin scope; the playground may still work.
      if (failure.status !== 403) {
        setChecking(false);
        setError(failure.status === 401 ? `The edge refused this credential: ${failure.message}` : failure.message);
        return;
      }
    }
    saveCredential(credential);
    onSignedIn(credential);
  };

  return (
    <section class="narrow">
      <h1>Sign in</h1>
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <p>
        Paste an API key (<code>ak_…</code>) or a JWT. The console keeps it in this browser tab only (session storage) and sends it to this
        edge's public API, with the same scopes as any client.
      </p>
      <form onSubmit={submit} noValidate>
        <div class="field">
          <label for="credential">API key or JWT</label>
          <input
            id="credential"
            name="credential"
            type="password"
            autocomplete="off"
            spellcheck={false}
            value={value}
            aria-invalid={error ? "true" : undefined}
            aria-describedby={error ? "credential-error" : undefined}
            onInput={(event) => setValue(event.currentTarget.value)}
          />
          {error && (
            <p id="credential-error" class="field-error">
              {error}
            </p>
          )}
        </div>
        <button type="submit" disabled={checking}>
          {checking ? "Checking…" : "Sign in"}
        </button>
      </form>
    </section>
  );
}
