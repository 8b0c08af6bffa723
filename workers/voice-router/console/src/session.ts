// The credential the console signs in with: an API key (`ak_…`) or a JWT, pasted once and kept
// in this tab's sessionStorage only (gone when the tab closes; never localStorage, never a
// cookie). Every request sends it as `Authorization: Bearer …`, as any API client does.

const STORAGE_KEY = "aybiza.console.credential";

export type CredentialKind = "api_key" | "jwt";

/** What a pasted credential looks like, or null when it is neither form. */
export function credentialKind(text: string): CredentialKind | null {
  // shared::api_key: `ak_` + 16 to 128 of [A-Za-z0-9_-].
  if (/^ak_[A-Za-z0-9_-]{16,128}$/.test(text)) return "api_key";
  // A JWS compact serialisation: three base64url parts (RFC 7515 §7.1).
  if (/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(text)) return "jwt";
  return null;
}

export function loadCredential(): string | null {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function saveCredential(credential: string): void {
  sessionStorage.setItem(STORAGE_KEY, credential);
}

export function clearCredential(): void {
  try {
    sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage unavailable: nothing was kept
  }
}

/** The claims of a JWT, for display only (the edge verifies it; the console never does). */
export function jwtClaims(token: string): Record<string, unknown> | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replaceAll("-", "+").replaceAll("_", "/"));
    const claims: unknown = JSON.parse(json);
    return claims && typeof claims === "object" ? (claims as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
