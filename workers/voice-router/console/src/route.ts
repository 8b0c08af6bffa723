// Pages are addressed by the URL fragment (`/console/#/agents/ava`), so the static assets hold
// one HTML file and any other path stays the Worker's (a JSON 404), with no rewrite rules.

export type Route =
  | { page: "agents" }
  | { page: "agent"; id: string | null }
  | { page: "playground"; agentId: string | null }
  | { page: "calls" }
  | { page: "call"; id: string }
  | { page: "usage" };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case "agents":
      if (parts[1] === "new") return { page: "agent", id: null };
      return parts[1] ? { page: "agent", id: parts[1] } : { page: "agents" };
    case "playground":
      return { page: "playground", agentId: parts[1] ?? null };
    case "calls":
      return parts[1] ? { page: "call", id: parts[1] } : { page: "calls" };
    case "usage":
      return { page: "usage" };
    default:
      return { page: "agents" };
  }
}

export const href = {
  agents: () => "#/agents",
  newAgent: () => "#/agents/new",
  agent: (id: string) => `#/agents/${encodeURIComponent(id)}`,
  playground: (agentId?: string) => (agentId ? `#/playground/${encodeURIComponent(agentId)}` : "#/playground"),
  calls: () => "#/calls",
  call: (id: string) => `#/calls/${encodeURIComponent(id)}`,
  usage: () => "#/usage",
};

/** The navigation, in order. */
export const NAV: { label: string; href: string; pages: Route["page"][] }[] = [
  { label: "Agents", href: href.agents(), pages: ["agents", "agent"] },
  { label: "Playground", href: href.playground(), pages: ["playground"] },
  { label: "Calls", href: href.calls(), pages: ["calls", "call"] },
  { label: "Usage", href: href.usage(), pages: ["usage"] },
];

/** The page's title (the document's and its heading's). */
export function titleOf(route: Route): string {
  switch (route.page) {
    case "agent":
      return route.id ? `Agent ${route.id}` : "New agent";
    case "playground":
      return "Playground";
    case "calls":
      return "Calls";
    case "call":
      return `Call ${route.id}`;
    case "usage":
      return "Usage";
    default:
      return "Agents";
  }
}
