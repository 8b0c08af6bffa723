// Agents: the list (with delete) and the editor (create and edit), over /api/v1/agents.

import { useEffect, useRef, useState } from "preact/hooks";
import { type Agent, agentPath, Api, ApiError, listAgents } from "./api";
import { defaultKey, type FieldDef, fieldOfError, type FormValues, formOf, ID_FIELD, isAgentId, SECTIONS, specOf } from "./agent_fields";
import { href } from "./route";

const when = (ms: number) => new Date(ms).toLocaleString();
const asApiError = (caught: unknown) => (caught instanceof ApiError ? caught : new ApiError(0, "internal", String(caught)));

/** The message of an error, with the request id to quote. */
export function ErrorNote({ error }: { error: ApiError }) {
  return (
    <p class="error" role="alert">
      {error.message}
      {error.requestId && <span class="muted"> (request {error.requestId})</span>}
    </p>
  );
}

export function AgentList({ api }: { api: Api }) {
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [status, setStatus] = useState("");

  const load = () =>
    listAgents(api).then(setAgents, (caught: unknown) => {
      setError(asApiError(caught));
      setAgents([]);
    });
  useEffect(() => {
    load();
  }, [api]);

  const remove = async (id: string) => {
    setConfirming(null);
    try {
      await api.call("DELETE", agentPath(id));
      setStatus(`Agent ${id} deleted.`);
      setError(null);
      await load();
    } catch (caught) {
      setError(asApiError(caught));
    }
  };

  return (
    <section>
      <div class="title-row">
        <h1>Agents</h1>
        <a class="button" href={href.newAgent()}>
          New agent
        </a>
      </div>
      <p class="muted" role="status">
        {status}
      </p>
      {error && <ErrorNote error={error} />}
      {agents === null ? (
        <p class="muted">Loading agents…</p>
      ) : agents.length === 0 ? (
        !error && <p>No agents yet. Create one to talk to it in the playground.</p>
      ) : (
        <table>
          <caption class="visually-hidden">Agents of this tenant</caption>
          <thead>
            <tr>
              <th scope="col">Id</th>
              <th scope="col">Name</th>
              <th scope="col">Model</th>
              <th scope="col">Version</th>
              <th scope="col">Updated</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {agents.map((agent) => (
              <tr key={agent.id}>
                <td>
                  <a href={href.agent(agent.id)}>{agent.id}</a>
                </td>
                <td>{agent.name}</td>
                <td>{agent.model ?? <span class="muted">origin default</span>}</td>
                <td>{agent.version}</td>
                <td>{when(agent.updated_at_ms)}</td>
                <td class="actions">
                  <a href={href.playground(agent.id)} aria-label={`Talk to ${agent.id}`}>
                    Talk
                  </a>
                  {confirming === agent.id ? (
                    <>
                      <button type="button" class="danger" onClick={() => remove(agent.id)}>
                        Delete {agent.id}
                      </button>
                      <button type="button" class="secondary" onClick={() => setConfirming(null)}>
                        Keep
                      </button>
                    </>
                  ) : (
                    <button type="button" class="secondary" aria-label={`Delete ${agent.id}`} onClick={() => setConfirming(agent.id)}>
                      Delete
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** A message for the next editor (a new agent's page is a new editor: its URL names it). */
let flash = "";

const inputId = (path: string) => `f-${path.replace(/[^A-Za-z0-9]/g, "-")}`;

function Field({
  field,
  values,
  error,
  creating,
  set,
}: {
  field: FieldDef;
  values: FormValues;
  error: string | undefined;
  creating: boolean;
  set: (key: string, value: string) => void;
}) {
  const id = inputId(field.path);
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const describedBy = [field.hint && hintId, error && errorId].filter(Boolean).join(" ") || undefined;
  const common = {
    id,
    name: field.path,
    "aria-invalid": error ? ("true" as const) : undefined,
    "aria-describedby": describedBy,
    "aria-required": field.required ? ("true" as const) : undefined,
    "data-field": field.path,
  };
  const usesDefault = field.kind === "optional-lines" && values[defaultKey(field.path)] === "1";
  const value = values[field.path] ?? "";
  const onInput = (event: Event) => set(field.path, (event.currentTarget as HTMLInputElement | HTMLTextAreaElement).value);
  return (
    <div class={error ? "field invalid" : "field"}>
      <label for={id}>
        {field.label}
        {field.required && <span aria-hidden="true"> *</span>}
      </label>
      {field.kind === "optional-lines" && (
        <label class="check">
          <input type="checkbox" checked={usesDefault} onChange={(event) => set(defaultKey(field.path), event.currentTarget.checked ? "1" : "")} />
          {field.defaultLabel}
        </label>
      )}
      {field.kind === "textarea" || field.kind === "lines" || field.kind === "optional-lines" || field.kind === "json" ? (
        <textarea
          {...common}
          rows={(field.kind === "textarea" && field.path === "system_prompt") || field.kind === "json" ? 8 : 3}
          class={field.kind === "json" ? "code" : undefined}
          spellcheck={field.kind !== "json"}
          value={value}
          disabled={usesDefault}
          onInput={onInput}
        />
      ) : field.kind === "number" ? (
        <input {...common} type="number" inputMode="decimal" min={field.min} max={field.max} step={field.step} value={value} onInput={onInput} />
      ) : (
        <input {...common} type="text" value={value} readOnly={field.createOnly && !creating} spellcheck={false} onInput={onInput} />
      )}
      {field.hint && (
        <p id={hintId} class="hint">
          {field.hint}
        </p>
      )}
      {error && (
        <p id={errorId} class="field-error">
          {error}
        </p>
      )}
    </div>
  );
}

export function AgentEditor({ api, id }: { api: Api; id: string | null }) {
  const creating = id === null;
  const [base, setBase] = useState<Agent | null>(null);
  const [values, setValues] = useState<FormValues | null>(creating ? formOf(null) : null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [formError, setFormError] = useState<ApiError | null>(null);
  const [saving, setSaving] = useState(false);
  const [saved, setSaved] = useState(() => {
    const message = flash;
    flash = "";
    return message;
  });
  const formRef = useRef<HTMLFormElement>(null);

  useEffect(() => {
    if (creating) return;
    api.call<Agent>("GET", agentPath(id)).then(
      (agent) => {
        setBase(agent);
        setValues(formOf(agent, agent.id));
      },
      (caught: unknown) => setFormError(asApiError(caught)),
    );
  }, [api, id]);

  /** Moves focus to the first field with an error, so keyboard and screen-reader users land on it. */
  const focusFirstError = () =>
    requestAnimationFrame(() => formRef.current?.querySelector<HTMLElement>("[aria-invalid='true']")?.focus());

  const save = async (event: Event) => {
    event.preventDefault();
    if (!values) return;
    setSaved("");
    setFormError(null);
    const agentId = creating ? values[ID_FIELD]?.trim() ?? "" : id;
    const { spec, errors: local } = specOf(values, base);
    if (!isAgentId(agentId)) local[ID_FIELD] = "The id must be 1 to 64 letters, digits, '-' or '_'.";
    setErrors(local);
    if (Object.keys(local).length) return focusFirstError();
    setSaving(true);
    try {
      if (creating) {
        // PUT creates or replaces: a new agent must not silently replace an existing one.
        const taken = await api.call<Agent>("GET", agentPath(agentId)).then(
          () => true,
          (caught: unknown) => {
            if (caught instanceof ApiError && caught.status === 404) return false;
            throw caught;
          },
        );
        if (taken) {
          setErrors({ [ID_FIELD]: `An agent with the id ${agentId} exists already; choose another id or edit it.` });
          return focusFirstError();
        }
      }
      const agent = await api.call<Agent>("PUT", agentPath(agentId), spec);
      setErrors({});
      setBase(agent);
      setValues(formOf(agent, agent.id));
      setSaved(`Saved ${agent.id}, version ${agent.version}.`);
      if (creating) {
        flash = `Saved ${agent.id}, version ${agent.version}.`;
        location.hash = href.agent(agent.id);
      }
    } catch (caught) {
      const error = asApiError(caught);
      const field = fieldOfError(error);
      if (field) {
        setErrors({ [field]: error.message });
        focusFirstError();
      } else {
        setFormError(error);
      }
    } finally {
      setSaving(false);
    }
  };

  const set = (key: string, value: string) => setValues((old) => (old ? { ...old, [key]: value } : old));

  return (
    <section>
      <div class="title-row">
        <h1>{creating ? "New agent" : `Agent ${id}`}</h1>
        {!creating && (
          <a class="button secondary" href={href.playground(id)}>
            Talk to it
          </a>
        )}
      </div>
      <p>
        <a href={href.agents()}>← All agents</a>
        {base && (
          <span class="muted">
            {" "}
            · version {base.version}, updated {when(base.updated_at_ms)}
          </span>
        )}
      </p>
      {formError && <ErrorNote error={formError} />}
      <p class="saved" role="status">
        {saved}
      </p>
      {values && (
        <form ref={formRef} onSubmit={save} noValidate>
          {SECTIONS.map((section) => (
            <fieldset key={section.id} id={`section-${section.id}`}>
              <legend>{section.title}</legend>
              {section.fields
                .filter((field) => creating || field.path !== ID_FIELD)
                .map((field) => (
                  <Field key={field.path} field={field} values={values} error={errors[field.path]} creating={creating} set={set} />
                ))}
            </fieldset>
          ))}
          <div class="form-actions">
            <button type="submit" disabled={saving}>
              {saving ? "Saving…" : creating ? "Create agent" : "Save changes"}
            </button>
            <a class="button secondary" href={href.agents()}>
              Cancel
            </a>
          </div>
        </form>
      )}
    </section>
  );
}
