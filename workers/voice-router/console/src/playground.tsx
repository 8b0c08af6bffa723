// Playground: start an API call with an agent (POST /api/v1/calls), open its relay WebSocket with
// the call's session token, and talk to the agent as a carrier would (typed, or by the browser's
// own speech where it has it); end it with POST /api/v1/calls/{id}/end.

import { useEffect, useRef, useState } from "preact/hooks";
import { type Agent, Api, ApiError, type CallCreated, type CallView, listAgents } from "./api";
import { ErrorNote } from "./agents";
import { Conversation, KEYPAD, type Outbound, websocketUrl } from "./relay";
import { href } from "./route";
import { canListen, canSpeak, listen, type Recognition, Speaker } from "./speech";

type Phase = "idle" | "starting" | "connecting" | "live" | "ending" | "ended";

const asApiError = (caught: unknown) => (caught instanceof ApiError ? caught : new ApiError(0, "internal", String(caught)));

export function Playground({ api, agentId }: { api: Api; agentId: string | null }) {
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [selected, setSelected] = useState(agentId ?? "");
  const [phase, setPhase] = useState<Phase>("idle");
  const [call, setCall] = useState<CallCreated | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [draft, setDraft] = useState("");
  const [, setVersion] = useState(0);
  const [speakReplies, setSpeakReplies] = useState(false);
  const [listening, setListening] = useState(false);
  const [status, setStatus] = useState("");
  const conversation = useRef(new Conversation());
  const socket = useRef<WebSocket | null>(null);
  const speaker = useRef(new Speaker());
  const recognition = useRef<Recognition | null>(null);
  const callRef = useRef<CallCreated | null>(null);
  const endRequested = useRef(false);
  const speakRef = useRef(speakReplies);
  speakRef.current = speakReplies;
  const refresh = () => setVersion((v) => v + 1);
  const transcript = useRef<HTMLDivElement>(null);
  // The newest words stay in view as they stream in.
  useEffect(() => {
    const log = transcript.current;
    if (log) log.scrollTop = log.scrollHeight;
  });

  useEffect(() => {
    listAgents(api).then(
      (list) => {
        setAgents(list);
        setSelected((current) => current || list[0]?.id || "");
      },
      (caught: unknown) => {
        setAgents([]);
        setError(asApiError(caught));
      },
    );
  }, [api]);

  // Leaving the playground, or closing the tab, ends a call still running, so it does not hold
  // a concurrent-call lease until its idle timeout.
  useEffect(() => {
    const endOpenCall = () => {
      const open = callRef.current;
      if (!open || conversation.current.ended || endRequested.current) return;
      endRequested.current = true;
      api.call("POST", `/api/v1/calls/${encodeURIComponent(open.call_id)}/end`, undefined, { keepalive: true }).catch(() => {});
    };
    addEventListener("pagehide", endOpenCall);
    return () => {
      removeEventListener("pagehide", endOpenCall);
      recognition.current?.stop();
      speaker.current.cancel();
      endOpenCall();
      socket.current?.close(1000, "console left the playground");
    };
  }, [api]);

  const send = (messages: Outbound[]) => {
    for (const message of messages) socket.current?.send(JSON.stringify(message));
    refresh();
  };

  const start = async () => {
    if (!selected) return;
    setError(null);
    conversation.current = new Conversation();
    endRequested.current = false;
    speaker.current.reset();
    setPhase("starting");
    setStatus("Starting a call…");
    let created: CallCreated;
    try {
      created = await api.call<CallCreated>("POST", "/api/v1/calls", { agent_id: selected });
    } catch (caught) {
      setError(asApiError(caught));
      setPhase("idle");
      setStatus("");
      return;
    }
    setCall(created);
    callRef.current = created;
    setPhase("connecting");
    const ws = new WebSocket(websocketUrl(created.relay_url, location));
    socket.current = ws;
    ws.onopen = () => {
      setPhase("live");
      setStatus(`Call ${created.call_id} connected (region ${created.region}).`);
      send([conversation.current.setup(created.call_id, selected)]);
    };
    ws.onmessage = (event) => {
      let message: unknown;
      try {
        message = JSON.parse(String(event.data));
      } catch {
        return;
      }
      const wasBusy = conversation.current.reply !== null;
      const piece = conversation.current.receive(message, performance.now());
      if (!wasBusy && conversation.current.reply) speaker.current.reset();
      if (piece && speakRef.current) speaker.current.speak(piece);
      if (!conversation.current.busy) setStatus("The agent finished its reply.");
      refresh();
    };
    ws.onclose = (event) => {
      socket.current = null;
      recognition.current?.stop();
      speaker.current.cancel();
      conversation.current.closed(event.code, event.reason);
      setPhase("ended");
      // After "End call", its own answer says how the call ended.
      if (!endRequested.current) setStatus(`The call ended: the relay closed (${event.code}${event.reason ? `: ${event.reason}` : ""}).`);
      refresh();
    };
  };

  const end = async () => {
    const open = callRef.current;
    if (!open) return;
    endRequested.current = true;
    setPhase("ending");
    try {
      const view = await api.call<CallView>("POST", `/api/v1/calls/${encodeURIComponent(open.call_id)}/end`);
      setStatus(`The call ended (${view.end_reason ?? view.status}) after ${view.turn_count} turns.`);
    } catch (caught) {
      setError(asApiError(caught));
    }
    // The origin sends `end` and closes the relay; close our side too if it lingers.
    setTimeout(() => socket.current?.close(1000, "call ended"), 2000);
  };

  /** What the user heard of the reply so far: the spoken part when replies are spoken. */
  const heard = () => (speakRef.current && canSpeak() ? speaker.current.heard : undefined);

  const say = (text: string) => {
    if (!text.trim() || phase !== "live") return;
    const interrupting = conversation.current.reply !== null;
    if (interrupting) speaker.current.cancel();
    send(conversation.current.say(text.trim(), performance.now(), heard()));
    setStatus(interrupting ? "You interrupted the agent." : "Waiting for the agent…");
  };

  const submit = (event: Event) => {
    event.preventDefault();
    say(draft);
    setDraft("");
  };

  const toggleListening = () => {
    if (listening) {
      recognition.current?.stop();
      return;
    }
    recognition.current = listen({
      onSpeech: () => {
        // The user speaks over the reply: as a carrier, interrupt with what was heard.
        if (conversation.current.reply) {
          speaker.current.cancel();
          const interrupt = conversation.current.interrupt(performance.now(), heard());
          if (interrupt) send([interrupt]);
        }
      },
      onUtterance: say,
      onStop: (problem) => {
        setListening(false);
        if (problem) setStatus(`Speech recognition stopped: ${problem}.`);
      },
    });
    setListening(recognition.current !== null);
  };

  const live = phase === "live";
  const entries = conversation.current.entries;
  return (
    <section>
      <h1>Playground</h1>
      {error && <ErrorNote error={error} />}
      <div class="call-controls">
        <div class="field inline">
          <label for="agent">Agent</label>
          <select id="agent" value={selected} disabled={phase !== "idle" && phase !== "ended"} onChange={(event) => setSelected(event.currentTarget.value)}>
            {agents?.map((agent) => (
              <option key={agent.id} value={agent.id}>
                {agent.name} ({agent.id})
              </option>
            ))}
          </select>
        </div>
        {phase === "idle" || phase === "ended" ? (
          <button type="button" onClick={start} disabled={!selected}>
            {phase === "ended" ? "Start another call" : "Start call"}
          </button>
        ) : (
          <button type="button" class="danger" onClick={end} disabled={phase !== "live"}>
            End call
          </button>
        )}
        {agents?.length === 0 && !error && (
          <p>
            No agents yet: <a href={href.newAgent()}>create one</a>.
          </p>
        )}
      </div>
      <p class="muted" role="status" id="call-status">
        {status}
      </p>
      {call && (
        <p class="muted">
          Call <code>{call.call_id}</code>
        </p>
      )}
      <div class="playground">
        <div class="conversation">
          <h2 class="visually-hidden">Conversation</h2>
          <div class="transcript" role="log" aria-label="Conversation" tabIndex={0} ref={transcript}>
          <ol>
            {entries.map((entry, index) => (
              <li key={index} class={`entry ${entry.kind}${entry.kind === "agent" && entry.interrupted ? " interrupted" : ""}`}>
                {entry.kind === "agent" ? (
                  <>
                    <span class="who">Agent</span>
                    <span class="text">{entry.text}</span>
                    {entry.interrupted && <span class="tag">interrupted</span>}
                    {entry.ttftMs !== null && <span class="tag">first token {entry.ttftMs} ms</span>}
                  </>
                ) : entry.kind === "you" ? (
                  <>
                    <span class="who">You</span>
                    <span class="text">{entry.text}</span>
                  </>
                ) : entry.kind === "dtmf" ? (
                  <>
                    <span class="who">You pressed</span>
                    <span class="text">{entry.digit}</span>
                  </>
                ) : (
                  <span class="text">{entry.text}</span>
                )}
              </li>
            ))}
            {live && conversation.current.busy && !conversation.current.reply && <li class="entry pending">The agent is thinking…</li>}
          </ol>
          </div>
          <form class="say" onSubmit={submit}>
            <label for="say">Say something</label>
            <input id="say" type="text" autocomplete="off" value={draft} disabled={!live} onInput={(event) => setDraft(event.currentTarget.value)} />
            <button type="submit" disabled={!live || !draft.trim()}>
              Send
            </button>
          </form>
          <div class="speech">
            {canListen() ? (
              <button type="button" class="secondary" aria-pressed={listening} disabled={!live} onClick={toggleListening}>
                {listening ? "Stop listening" : "Speak (microphone)"}
              </button>
            ) : (
              <p class="muted">This browser has no speech recognition; type instead.</p>
            )}
            {canSpeak() && (
              <label class="check">
                <input type="checkbox" checked={speakReplies} onChange={(event) => setSpeakReplies(event.currentTarget.checked)} />
                Speak the agent's replies
              </label>
            )}
          </div>
        </div>
        <fieldset class="keypad" disabled={!live}>
          <legend>Keypad (DTMF)</legend>
          {KEYPAD.map((digit) => (
            <button type="button" key={digit} class="key" aria-label={`Key ${digit}`} onClick={() => send([conversation.current.dtmf(digit)])}>
              {digit}
            </button>
          ))}
        </fieldset>
      </div>
    </section>
  );
}
