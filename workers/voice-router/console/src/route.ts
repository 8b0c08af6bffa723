// Pages are addressed by the URL fragment (`/console/#/agents/ava`), so the static assets hold
// one HTML file and any other path stays the Worker's (a JSON 404), with no rewrite rules.

export type Route =
  | { page: "agents" }
  | { page: "agent"; id: string | null }
  | { page: "playground"; agentId: string | null };
// Phase 2 (issue 14's read API): { page: "calls" }, { page: "call"; id }, { page: "usage" }.

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case "agents":
      if (parts[1] === "new") return { page: "agent", id: null };
      return parts[1] ? { page: "agent", id: parts[1] } : { page: "agents" };
    case "playground":
      return { page: "playground", agentId: parts[1] ?? null };
    default:
      return { page: "agents" };
  }
}

export const href = {
  agents: () => "#/agents",
  newAgent: () => "#/agents/new",
  agent: (id: string) => `#/agents/${encodeURIComponent(id)}`,
  playground: (agentId?: string) => (agentId ? `#/playground/${encodeURIComponent(agentId)}` : "#/playground"),
};

/** The navigation, in order; phase 2 adds Calls and Usage here. */
export const NAV: { label: string; href: string; pages: Route["page"][] }[] = [
  { label: "Agents", href: href.agents(), pages: ["agents", "agent"] },
  { label: "Playground", href: href.playground(), pages: ["playground"] },
];
