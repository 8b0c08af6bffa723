// The plain-JavaScript floor of the voice path's relay hop (tests/bench/voice.bench.mjs): a Worker
// hands the caller's WebSocket to a Durable Object (one per call), which accepts it with the
// hibernation API, as the Rust `CallSession` does, opens the call's relay socket at the origin
// and passes every message across, both ways, as it comes. Nothing else: no session state, no
// storage, no turn tracking, no signing (the bench signs the origin's handshake and hands the
// headers over), no reconnection. So it is what any relay through workerd costs here, not an
// equivalent of `CallSession`.
//
// `GET /relay` with `Upgrade: websocket`, `x-relay-origin` (the origin relay's http URL) and
// `x-relay-headers` (the signed handshake headers, JSON). Binding: RELAY (namespace of JsRelay).

export class JsRelay {
  constructor(state) {
    this.state = state;
    this.origin = null;
  }

  async fetch(request) {
    const signed = JSON.parse(request.headers.get("x-relay-headers") ?? "{}");
    const answer = await fetch(request.headers.get("x-relay-origin"), { headers: { ...signed, upgrade: "websocket" } });
    if (!answer.webSocket) return new Response(`the origin refused the relay: ${answer.status} ${await answer.text()}`, { status: 502 });
    const origin = answer.webSocket;
    origin.accept();
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.state.acceptWebSocket(server);
    origin.addEventListener("message", (event) => {
      for (const caller of this.state.getWebSockets()) caller.send(event.data);
    });
    origin.addEventListener("close", () => {
      for (const caller of this.state.getWebSockets()) caller.close(1000, "origin closed");
    });
    this.origin = origin;
    return new Response(null, { status: 101, webSocket: client });
  }

  webSocketMessage(_caller, message) {
    this.origin?.send(message);
  }

  webSocketClose(caller) {
    caller.close(1000, "closing");
    this.origin?.close(1000, "caller left");
  }
}

export default {
  fetch(request, env) {
    if (request.headers.get("upgrade") !== "websocket") return new Response("a relay WebSocket only", { status: 426 });
    const id = env.RELAY.idFromName(request.headers.get("x-relay-origin") ?? "");
    return env.RELAY.get(id).fetch(request);
  },
};
