//! What an agent can do besides talk: the tenant's own tools — an HTTPS endpoint each, called
//! by the origin with a signed POST when the model asks — and the built-in tools the origin
//! performs itself (end the call, transfer it to a person, press keys, switch language).
//!
//! Checked at `PUT /v1/agents/{id}`, each problem naming its field (`tools[2].url`):
//! - names: 1–64 of `[A-Za-z0-9_-]`, Bedrock's rule for a tool's name
//!   (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ToolSpecification.html>:
//!   "Pattern: `[a-zA-Z0-9_-]+`", length 1–64), unique, and none of the built-ins' names;
//! - descriptions: 1–[`MAX_DESCRIPTION_CHARS`] characters (Bedrock asks for at least one);
//! - `input_schema`: a JSON Schema whose root is `{"type":"object",…}`, checked for structure,
//!   not against the whole meta-schema: every keyword Claude's tool use reads (`type`,
//!   `properties`, `required`, `items`, `enum`, `const`, `additionalProperties`, `anyOf`/`oneOf`/
//!   `allOf`/`not`, `$defs`, the string, number, array and object bounds, `description`,
//!   `pattern`, `format`) must have the right JSON shape, `required` must name properties that
//!   exist, nesting is at most [`MAX_SCHEMA_DEPTH`] schemas deep, and the whole at most
//!   [`MAX_SCHEMA_BYTES`]; other keywords pass untouched (`pattern` is not compiled);
//! - `url`: see `crate::outbound_url` (https; http only to loopback on a development origin);
//! - `timeout_ms`: [`MIN_TIMEOUT_MS`]–[`MAX_TIMEOUT_MS`], default [`DEFAULT_TIMEOUT_MS`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::handoff::TransferTo;
use crate::language::MULTI;
use crate::outbound_url::{OutboundPolicy, OutboundUrl};

use super::VoiceSettings;

/// Most tools of an agent (its own; built-ins come on top).
pub const MAX_TOOLS: usize = 32;
/// Longest tool description.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// Longest tool name (Bedrock's limit).
pub const MAX_NAME_CHARS: usize = 64;
/// Deadline of a tool call when the agent sets none.
pub const DEFAULT_TIMEOUT_MS: u32 = 3_000;
/// Longest deadline of a tool call: a caller waits through it.
pub const MAX_TIMEOUT_MS: u32 = 10_000;
/// Shortest deadline of a tool call.
pub const MIN_TIMEOUT_MS: u32 = 100;
/// Largest `input_schema`, serialised.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// Deepest nesting of schemas inside an `input_schema`.
pub const MAX_SCHEMA_DEPTH: usize = 12;
/// Most transfer targets.
pub const MAX_TRANSFER_TARGETS: usize = 10;
/// Longest line the built-ins speak (goodbye, transfer announcement).
pub const MAX_LINE_CHARS: usize = 500;

/// `end_call`.
pub const END_CALL: &str = "end_call";
/// `transfer_call`.
pub const TRANSFER_CALL: &str = "transfer_call";
/// `send_digits`.
pub const SEND_DIGITS: &str = "send_digits";
/// `switch_language`.
pub const SWITCH_LANGUAGE: &str = "switch_language";
/// Every built-in's name: reserved, whether the agent enables it or not.
pub const BUILTIN_NAMES: [&str; 4] = [END_CALL, TRANSFER_CALL, SEND_DIGITS, SWITCH_LANGUAGE];

/// Said before the agent hangs up when the model said nothing itself.
pub const DEFAULT_GOODBYE: &str = "Thank you for calling. Goodbye.";
/// Said before a transfer when the model said nothing itself.
pub const DEFAULT_TRANSFER_ANNOUNCEMENT: &str = "Please hold while I transfer your call.";

/// One of the tenant's tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// What the model calls it: 1–64 of `[A-Za-z0-9_-]`.
    pub name: String,
    /// What it does and when to use it (the model reads this).
    pub description: String,
    /// JSON Schema of its input, an object.
    pub input_schema: Value,
    /// Where the origin POSTs the call (signed with `X-Aybiza-Signature`).
    pub url: String,
    /// How long the call may take before the model is told it timed out.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}

/// The built-in tools an agent enables: each present key is one the model may call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinTools {
    /// End the call after a goodbye.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_call: Option<EndCallTool>,
    /// Hand the caller to a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_call: Option<TransferCallTool>,
    /// Press keys on the line (an IVR on the other end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_digits: Option<Empty>,
    /// Switch the session's language among the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_language: Option<Empty>,
}

impl BuiltinTools {
    /// Whether any built-in is enabled.
    pub fn any(&self) -> bool {
        self.end_call.is_some()
            || self.transfer_call.is_some()
            || self.send_digits.is_some()
            || self.switch_language.is_some()
    }
}

/// A built-in without settings: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `end_call`'s settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndCallTool {
    /// Said before hanging up, unless the model already said something in that reply.
    #[serde(default = "default_goodbye")]
    pub goodbye: String,
}

fn default_goodbye() -> String {
    DEFAULT_GOODBYE.to_owned()
}

/// `transfer_call`'s settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferCallTool {
    /// Who the model may transfer to.
    pub targets: Vec<TransferTarget>,
    /// The caller id the target sees (E.164, a number of the carrier account); absent means the
    /// carrier's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// Said before the transfer, unless the model already said something in that reply.
    #[serde(default = "default_announcement")]
    pub announcement: String,
    /// Whether the model's summary is said to the person answering before the caller joins.
    #[serde(default)]
    pub whisper: bool,
}

fn default_announcement() -> String {
    DEFAULT_TRANSFER_ANNOUNCEMENT.to_owned()
}

/// A person (or queue) a call may be transferred to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferTarget {
    /// What the model names it: 1–64 of `[a-z0-9_-]`.
    pub name: String,
    /// E.164 number or `sip:` URI.
    pub to: String,
    /// When to choose it (the model reads this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A tool setting refused; the message reads after the field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {why}")]
pub struct ToolError {
    /// JSON path of the field, e.g. `tools[2].url`.
    pub field: String,
    /// What is wrong.
    pub why: String,
}

fn refuse(field: impl Into<String>, why: impl Into<String>) -> ToolError {
    ToolError {
        field: field.into(),
        why: why.into(),
    }
}

/// Checks an agent's tools and built-ins (its voice settings give `switch_language` its
/// languages) under `policy` (whether tool URLs may be loopback).
pub fn validate(
    tools: &[ToolSpec],
    builtins: &BuiltinTools,
    voice: &VoiceSettings,
    policy: OutboundPolicy,
) -> Result<(), ToolError> {
    if tools.len() > MAX_TOOLS {
        return Err(refuse("tools", format!("holds at most {MAX_TOOLS} tools")));
    }
    for (index, tool) in tools.iter().enumerate() {
        let field = |name: &str| format!("tools[{index}].{name}");
        if !is_tool_name(&tool.name) {
            return Err(refuse(
                field("name"),
                "must be 1 to 64 letters, digits, '_' or '-' (Bedrock's rule for tool names)",
            ));
        }
        if BUILTIN_NAMES.contains(&tool.name.as_str()) {
            return Err(refuse(
                field("name"),
                format!(
                    "{:?} is a built-in tool's name; enable it under builtin_tools",
                    tool.name
                ),
            ));
        }
        if tools[..index].iter().any(|other| other.name == tool.name) {
            return Err(refuse(
                field("name"),
                format!("{:?} is used by another tool", tool.name),
            ));
        }
        let description = tool.description.trim().chars().count();
        if description == 0 || description > MAX_DESCRIPTION_CHARS {
            return Err(refuse(
                field("description"),
                format!("must be 1 to {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        check_schema(&tool.input_schema)
            .map_err(|(path, why)| refuse(format!("{}{path}", field("input_schema")), why))?;
        OutboundUrl::parse(&tool.url, policy)
            .map_err(|error| refuse(field("url"), error.to_string()))?;
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&tool.timeout_ms) {
            return Err(refuse(
                field("timeout_ms"),
                format!("must be {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}"),
            ));
        }
    }
    if let Some(end) = &builtins.end_call {
        check_line("builtin_tools.end_call.goodbye", &end.goodbye)?;
    }
    if let Some(transfer) = &builtins.transfer_call {
        let base = "builtin_tools.transfer_call";
        if transfer.targets.is_empty() || transfer.targets.len() > MAX_TRANSFER_TARGETS {
            return Err(refuse(
                format!("{base}.targets"),
                format!("must hold 1 to {MAX_TRANSFER_TARGETS} targets"),
            ));
        }
        for (index, target) in transfer.targets.iter().enumerate() {
            let field = |name: &str| format!("{base}.targets[{index}].{name}");
            let valid_name = !target.name.is_empty()
                && target.name.len() <= MAX_NAME_CHARS
                && target.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid_name {
                return Err(refuse(
                    field("name"),
                    "must be 1 to 64 of a-z, 0-9, '_' and '-'",
                ));
            }
            if transfer.targets[..index]
                .iter()
                .any(|t| t.name == target.name)
            {
                return Err(refuse(field("name"), "is used by another target"));
            }
            if TransferTo::parse(&target.to).is_none() {
                return Err(refuse(
                    field("to"),
                    "must be an E.164 number (+14155550100) or a sip: URI (sip:desk@pbx.example.com)",
                ));
            }
            if target
                .description
                .as_ref()
                .is_some_and(|d| d.trim().is_empty() || d.chars().count() > MAX_LINE_CHARS)
            {
                return Err(refuse(
                    field("description"),
                    format!("must be 1 to {MAX_LINE_CHARS} characters when present"),
                ));
            }
        }
        if transfer
            .caller_id
            .as_deref()
            .is_some_and(|id| !super::is_e164(id))
        {
            return Err(refuse(
                format!("{base}.caller_id"),
                "must be E.164, e.g. +14155550100",
            ));
        }
        check_line(&format!("{base}.announcement"), &transfer.announcement)?;
    }
    if builtins.switch_language.is_some() && switch_languages(voice).len() < 2 {
        return Err(refuse(
            "builtin_tools.switch_language",
            "needs the agent to speak at least two languages: voice.language (or \
             voice.tts_language) and voice.languages",
        ));
    }
    Ok(())
}

fn check_line(field: &str, line: &str) -> Result<(), ToolError> {
    if line.trim().is_empty() || line.chars().count() > MAX_LINE_CHARS {
        return Err(refuse(
            field,
            format!("must be 1 to {MAX_LINE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Bedrock's tool-name rule: 1–64 of `[A-Za-z0-9_-]`.
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The languages `switch_language` offers: the agent's own text-to-speech language, then its
/// `<Language>`s, each once, `multi` left out.
pub fn switch_languages(voice: &VoiceSettings) -> Vec<String> {
    let mut languages: Vec<String> = Vec::new();
    for code in voice
        .tts_language()
        .into_iter()
        .chain(voice.languages.iter().map(|l| l.code.as_str()))
    {
        if !code.eq_ignore_ascii_case(MULTI)
            && !languages.iter().any(|l| l.eq_ignore_ascii_case(code))
        {
            languages.push(code.to_owned());
        }
    }
    languages
}

/// Checks an `input_schema` (see the module's rule); the error is (path under the schema, why).
pub fn check_schema(schema: &Value) -> Result<(), (String, String)> {
    let size = schema.to_string().len();
    if size > MAX_SCHEMA_BYTES {
        return Err((
            String::new(),
            format!("is {size} bytes; at most {MAX_SCHEMA_BYTES}"),
        ));
    }
    match schema.get("type") {
        Some(Value::String(kind)) if kind == "object" => {}
        _ => {
            return Err((
                String::new(),
                "must be a JSON Schema object whose type is \"object\" (a tool's input is an object)".into(),
            ));
        }
    }
    check_subschema(schema, "", 1)
}

const JSON_TYPES: [&str; 7] = [
    "object", "array", "string", "number", "integer", "boolean", "null",
];

fn check_subschema(schema: &Value, path: &str, depth: usize) -> Result<(), (String, String)> {
    let bad = |key: &str, why: &str| Err((format!("{path}.{key}"), why.to_owned()));
    if depth > MAX_SCHEMA_DEPTH {
        return Err((
            path.to_owned(),
            format!("nests schemas deeper than {MAX_SCHEMA_DEPTH}"),
        ));
    }
    let Value::Object(map) = schema else {
        // `true` and `false` are schemas too.
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err((path.to_owned(), "must be a JSON Schema (an object)".into())),
        };
    };
    for (key, value) in map {
        let child = format!("{path}.{key}");
        if let Some((fits, why)) = simple_keyword(key) {
            if !fits(value) {
                return bad(key, why);
            }
            continue;
        }
        match key.as_str() {
            "type" => {
                let valid = match value {
                    Value::String(kind) => JSON_TYPES.contains(&kind.as_str()),
                    Value::Array(kinds) => {
                        !kinds.is_empty()
                            && kinds
                                .iter()
                                .all(|k| k.as_str().is_some_and(|k| JSON_TYPES.contains(&k)))
                    }
                    _ => false,
                };
                if !valid {
                    return bad(
                        key,
                        "must be one of object, array, string, number, integer, boolean, null (or a list of them)",
                    );
                }
            }
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                let Value::Object(properties) = value else {
                    return bad(key, "must be an object of schemas");
                };
                for (name, property) in properties {
                    check_subschema(property, &format!("{child}.{name}"), depth + 1)?;
                }
            }
            "required" => {
                let Value::Array(names) = value else {
                    return bad(key, "must be a list of property names");
                };
                let mut seen: Vec<&str> = Vec::new();
                for name in names {
                    let Some(name) = name.as_str() else {
                        return bad(key, "must be a list of property names");
                    };
                    if seen.contains(&name) {
                        return bad(key, "names a property twice");
                    }
                    seen.push(name);
                    if let Some(Value::Object(properties)) = map.get("properties")
                        && !properties.contains_key(name)
                    {
                        return Err((child, format!("names {name:?}, which is not in properties")));
                    }
                }
            }
            "items"
            | "additionalProperties"
            | "not"
            | "contains"
            | "propertyNames"
            | "additionalItems" => match value {
                Value::Array(schemas) if key == "items" => {
                    for (index, item) in schemas.iter().enumerate() {
                        check_subschema(item, &format!("{child}[{index}]"), depth + 1)?;
                    }
                }
                _ => check_subschema(value, &child, depth + 1)?,
            },
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                let Value::Array(schemas) = value else {
                    return bad(key, "must be a non-empty list of schemas");
                };
                if schemas.is_empty() {
                    return bad(key, "must be a non-empty list of schemas");
                }
                for (index, item) in schemas.iter().enumerate() {
                    check_subschema(item, &format!("{child}[{index}]"), depth + 1)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A check of a keyword's value, and what the value must be when it fails.
type KindCheck = (fn(&Value) -> bool, &'static str);

/// A keyword whose value is checked for its JSON kind alone.
fn simple_keyword(key: &str) -> Option<KindCheck> {
    fn non_empty_list(value: &Value) -> bool {
        value.as_array().is_some_and(|values| !values.is_empty())
    }
    Some(match key {
        "enum" => (non_empty_list, "must be a non-empty list"),
        "description" | "title" | "pattern" | "format" | "$ref" | "$schema" | "$id" => {
            (Value::is_string, "must be a string")
        }
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => {
            (Value::is_number, "must be a number")
        }
        "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties" | "maxProperties" => {
            (Value::is_u64, "must be a whole number, 0 or more")
        }
        "uniqueItems" => (Value::is_boolean, "must be true or false"),
        _ => return None,
    })
}

/// A tool as the model is offered it (Bedrock's `toolSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDefinition {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `inputSchema.json`.
    pub input_schema: Value,
}

/// The tools offered to the model on a call: the tenant's, then the enabled built-ins when the
/// call has a carrier session to act on (`on_relay`; an API client's SSE turn has none).
pub fn definitions(
    tools: &[ToolSpec],
    builtins: &BuiltinTools,
    voice: &VoiceSettings,
    on_relay: bool,
) -> Vec<ToolDefinition> {
    let mut offered: Vec<ToolDefinition> = tools
        .iter()
        .map(|tool| ToolDefinition {
            name: tool.name.clone(),
            description: tool.description.clone(),
            input_schema: tool.input_schema.clone(),
        })
        .collect();
    if !on_relay {
        return offered;
    }
    if builtins.end_call.is_some() {
        offered.push(ToolDefinition {
            name: END_CALL.into(),
            description: "End the phone call. Use it once the conversation is complete and the \
                          caller has nothing more to ask; the caller hears a goodbye first."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "Why the call ends, in a few words."}
                },
            }),
        });
    }
    if let Some(transfer) = &builtins.transfer_call {
        let names: Vec<&str> = transfer.targets.iter().map(|t| t.name.as_str()).collect();
        let choices: Vec<String> = transfer
            .targets
            .iter()
            .map(|t| match &t.description {
                Some(description) => format!("{}: {description}", t.name),
                None => t.name.clone(),
            })
            .collect();
        offered.push(ToolDefinition {
            name: TRANSFER_CALL.into(),
            description: format!(
                "Transfer the caller to a person. Use it when the caller asks for a human or \
                 needs something you cannot do. Targets: {}.",
                choices.join("; ")
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "target": {"type": "string", "enum": names, "description": "Who to transfer the caller to."},
                    "summary": {"type": "string", "description": "One or two sentences for the person taking the call: who is calling and what they need."}
                },
                "required": ["target"],
            }),
        });
    }
    if builtins.send_digits.is_some() {
        offered.push(ToolDefinition {
            name: SEND_DIGITS.into(),
            description: "Press keys on the phone line, e.g. to choose an option in an automated \
                          phone menu. Digits 0-9, * and #, A-D; w waits half a second."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "digits": {"type": "string", "pattern": "^[0-9*#A-Dw]{1,64}$", "description": "The keys to press, in order."}
                },
                "required": ["digits"],
            }),
        });
    }
    if builtins.switch_language.is_some() {
        let languages = switch_languages(voice);
        offered.push(ToolDefinition {
            name: SWITCH_LANGUAGE.into(),
            description: format!(
                "Switch the language the call is spoken and understood in, when the caller \
                 prefers another one. Available: {}.",
                languages.join(", ")
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "enum": languages, "description": "BCP 47 tag of the language to speak."}
                },
                "required": ["language"],
            }),
        });
    }
    offered
}

/// A built-in the model called, its input read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuiltinCall {
    /// End the call.
    EndCall {
        /// The model's reason, when it gave one.
        reason: Option<String>,
    },
    /// Transfer the call.
    Transfer {
        /// The chosen target.
        target: TransferTarget,
        /// The model's summary for the person.
        summary: Option<String>,
    },
    /// Press keys.
    SendDigits {
        /// The keys.
        digits: String,
    },
    /// Switch language.
    SwitchLanguage {
        /// The BCP 47 tag, one of the agent's.
        language: String,
    },
}

impl BuiltinCall {
    /// Whether the call ends the relay session (no more model rounds follow).
    pub fn ends_session(&self) -> bool {
        matches!(self, Self::EndCall { .. } | Self::Transfer { .. })
    }
}

/// Reads a call of `name` with `input` as a built-in of this agent: `None` when `name` is no
/// enabled built-in; `Some(Err(why))` when the input is unusable (told to the model).
pub fn builtin_call(
    name: &str,
    input: &Value,
    builtins: &BuiltinTools,
    voice: &VoiceSettings,
) -> Option<Result<BuiltinCall, String>> {
    let text = |key: &str| {
        input
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    match name {
        END_CALL if builtins.end_call.is_some() => Some(Ok(BuiltinCall::EndCall {
            reason: text("reason").map(|r| r.chars().take(MAX_LINE_CHARS).collect()),
        })),
        TRANSFER_CALL => {
            let transfer = builtins.transfer_call.as_ref()?;
            let wanted = text("target").unwrap_or_default();
            Some(match transfer.targets.iter().find(|t| t.name == wanted) {
                Some(target) => Ok(BuiltinCall::Transfer {
                    target: target.clone(),
                    summary: text("summary")
                        .map(|s| s.chars().take(crate::handoff::MAX_SUMMARY_CHARS).collect()),
                }),
                None => {
                    let names: Vec<&str> =
                        transfer.targets.iter().map(|t| t.name.as_str()).collect();
                    Err(format!(
                        "unknown target {wanted:?}; choose one of: {}",
                        names.join(", ")
                    ))
                }
            })
        }
        SEND_DIGITS if builtins.send_digits.is_some() => {
            let digits = text("digits").unwrap_or_default();
            Some(match crate::relay::Outbound::send_digits(&digits) {
                Ok(_) => Ok(BuiltinCall::SendDigits { digits }),
                Err(error) => Err(format!(
                    "{error}; digits are 0-9, *, #, A-D and w (a half-second wait), at most {}",
                    crate::relay::MAX_SEND_DIGITS
                )),
            })
        }
        SWITCH_LANGUAGE if builtins.switch_language.is_some() => {
            let wanted = text("language").unwrap_or_default();
            let languages = switch_languages(voice);
            Some(
                match languages.iter().find(|l| l.eq_ignore_ascii_case(&wanted)) {
                    Some(language) => Ok(BuiltinCall::SwitchLanguage {
                        language: language.clone(),
                    }),
                    None => Err(format!(
                        "{wanted:?} is not one of this agent's languages: {}",
                        languages.join(", ")
                    )),
                },
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::voice::LanguageSettings;

    fn tool(json: Value) -> ToolSpec {
        let mut base = json!({
            "name": "lookup_order",
            "description": "Finds an order by its number.",
            "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
            "url": "https://tools.example.com/orders",
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("a tool parses")
    }

    fn voice(language: Option<&str>, languages: &[&str]) -> VoiceSettings {
        VoiceSettings {
            language: language.map(str::to_owned),
            languages: languages
                .iter()
                .map(|code| LanguageSettings {
                    code: (*code).to_owned(),
                    tts_provider: None,
                    voice: None,
                    transcription_provider: None,
                    speech_model: None,
                })
                .collect(),
            ..VoiceSettings::default()
        }
    }

    fn builtins(json: Value) -> BuiltinTools {
        serde_json::from_value(json).expect("built-ins parse")
    }

    #[test]
    fn defaults_and_a_valid_set() {
        let tool = tool(json!({}));
        assert_eq!(tool.timeout_ms, DEFAULT_TIMEOUT_MS);
        let all = builtins(json!({
            "end_call": {}, "send_digits": {}, "switch_language": {},
            "transfer_call": {"targets": [{"name": "sales", "to": "+14155550123"}, {"name": "desk", "to": "sip:desk@pbx.example.com", "description": "Front desk"}]},
        }));
        assert_eq!(
            all.end_call.as_ref().map(|e| e.goodbye.as_str()),
            Some(DEFAULT_GOODBYE)
        );
        let transfer = all.transfer_call.as_ref().expect("transfer");
        assert_eq!(transfer.announcement, DEFAULT_TRANSFER_ANNOUNCEMENT);
        assert!(!transfer.whisper);
        assert!(all.any() && !BuiltinTools::default().any());
        assert_eq!(
            validate(
                &[tool],
                &all,
                &voice(Some("en-US"), &["es-ES"]),
                OutboundPolicy::PublicOnly
            ),
            Ok(())
        );
        assert!(
            serde_json::from_value::<BuiltinTools>(json!({"hang_up": {}})).is_err(),
            "unknown built-ins are refused"
        );
        assert!(serde_json::from_value::<BuiltinTools>(json!({"send_digits": {"x": 1}})).is_err());
    }

    #[test]
    fn each_problem_names_its_field() {
        let ok_voice = voice(Some("en-US"), &["es-ES"]);
        let none = BuiltinTools::default();
        let cases: Vec<(Vec<ToolSpec>, BuiltinTools, VoiceSettings, &str, &str)> = vec![
            (
                vec![tool(json!({"name": "look up"}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].name",
                "letters, digits",
            ),
            (
                vec![tool(json!({"name": "x".repeat(65)}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].name",
                "1 to 64",
            ),
            (
                vec![tool(json!({"name": "end_call"}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].name",
                "built-in",
            ),
            (
                vec![tool(json!({})), tool(json!({}))],
                none.clone(),
                ok_voice.clone(),
                "tools[1].name",
                "another tool",
            ),
            (
                vec![tool(json!({"description": " "}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].description",
                "1 to 2000",
            ),
            (
                vec![tool(json!({"input_schema": {"type": "string"}}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].input_schema",
                "\"object\"",
            ),
            (
                vec![tool(json!({"input_schema": [1]}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].input_schema",
                "\"object\"",
            ),
            (
                vec![tool(json!({"url": "http://tools.example.com/x"}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].url",
                "https",
            ),
            (
                vec![tool(json!({"url": "https://169.254.169.254/x"}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].url",
                "internal",
            ),
            (
                vec![tool(json!({"timeout_ms": 10_001}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].timeout_ms",
                "100 to 10000",
            ),
            (
                vec![tool(json!({"timeout_ms": 50}))],
                none.clone(),
                ok_voice.clone(),
                "tools[0].timeout_ms",
                "100 to 10000",
            ),
            (
                vec![],
                builtins(json!({"end_call": {"goodbye": ""}})),
                ok_voice.clone(),
                "builtin_tools.end_call.goodbye",
                "1 to 500",
            ),
            (
                vec![],
                builtins(json!({"transfer_call": {"targets": []}})),
                ok_voice.clone(),
                "builtin_tools.transfer_call.targets",
                "1 to 10",
            ),
            (
                vec![],
                builtins(
                    json!({"transfer_call": {"targets": [{"name": "Sales", "to": "+14155550123"}]}}),
                ),
                ok_voice.clone(),
                "builtin_tools.transfer_call.targets[0].name",
                "a-z",
            ),
            (
                vec![],
                builtins(json!({"transfer_call": {"targets": [{"name": "s", "to": "+1"}]}})),
                ok_voice.clone(),
                "builtin_tools.transfer_call.targets[0].to",
                "E.164",
            ),
            (
                vec![],
                builtins(
                    json!({"transfer_call": {"targets": [{"name": "s", "to": "+14155550123"}, {"name": "s", "to": "+14155550124"}]}}),
                ),
                ok_voice.clone(),
                "builtin_tools.transfer_call.targets[1].name",
                "another target",
            ),
            (
                vec![],
                builtins(
                    json!({"transfer_call": {"targets": [{"name": "s", "to": "+14155550123"}], "caller_id": "Acme"}}),
                ),
                ok_voice.clone(),
                "builtin_tools.transfer_call.caller_id",
                "E.164",
            ),
            (
                vec![],
                builtins(json!({"switch_language": {}})),
                voice(Some("en-US"), &[]),
                "builtin_tools.switch_language",
                "two languages",
            ),
            (
                vec![],
                builtins(json!({"switch_language": {}})),
                voice(Some("multi"), &["multi"]),
                "builtin_tools.switch_language",
                "two languages",
            ),
        ];
        for (tools, builtins, voice, field, why) in cases {
            let error =
                validate(&tools, &builtins, &voice, OutboundPolicy::PublicOnly).expect_err(field);
            assert_eq!(error.field, field, "{error}");
            assert!(error.to_string().contains(why), "{error}");
        }
        let many: Vec<ToolSpec> = (0..=MAX_TOOLS)
            .map(|i| tool(json!({"name": format!("t{i}")})))
            .collect();
        assert_eq!(
            validate(&many, &none, &ok_voice, OutboundPolicy::PublicOnly).map_err(|e| e.field),
            Err("tools".to_owned())
        );
        // A development origin takes http to loopback.
        let local = tool(json!({"url": "http://127.0.0.1:9000/tool"}));
        assert_eq!(
            validate(
                std::slice::from_ref(&local),
                &none,
                &ok_voice,
                OutboundPolicy::LoopbackToo
            ),
            Ok(())
        );
        assert!(validate(&[local], &none, &ok_voice, OutboundPolicy::PublicOnly).is_err());
    }

    #[test]
    fn schemas_are_checked_for_structure() {
        let ok = [
            json!({"type": "object"}),
            json!({"type": "object", "properties": {"when": {"type": ["string", "null"], "format": "date-time"},
                   "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}}}, "minItems": 1},
                   "kind": {"enum": ["a", "b"]}, "any": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}},
                   "required": ["when"], "additionalProperties": false, "$defs": {"x": {"type": "string"}}, "x-vendor": 1}),
        ];
        for schema in ok {
            assert_eq!(check_schema(&schema), Ok(()), "{schema}");
        }
        let bad = [
            (
                json!({"type": "object", "properties": {"a": {"type": "strng"}}}),
                ".properties.a.type",
            ),
            (json!({"type": "object", "properties": []}), ".properties"),
            (
                json!({"type": "object", "properties": {"a": 5}}),
                ".properties.a",
            ),
            (
                json!({"type": "object", "properties": {"a": {}}, "required": ["b"]}),
                ".required",
            ),
            (json!({"type": "object", "required": "a"}), ".required"),
            (
                json!({"type": "object", "properties": {"a": {}}, "required": ["a", "a"]}),
                ".required",
            ),
            (
                json!({"type": "object", "properties": {"a": {"enum": []}}}),
                ".properties.a.enum",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": -1}}}),
                ".properties.a.maxLength",
            ),
            (
                json!({"type": "object", "properties": {"a": {"anyOf": []}}}),
                ".properties.a.anyOf",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "items": "x"}}}),
                ".properties.a.items",
            ),
            (json!({"type": "object", "description": 3}), ".description"),
        ];
        for (schema, path) in bad {
            let (at, _) = check_schema(&schema).expect_err("refused");
            assert_eq!(at, path, "{schema}");
        }
        let mut deep = json!({"type": "string"});
        for _ in 0..MAX_SCHEMA_DEPTH {
            deep = json!({"type": "object", "properties": {"a": deep}});
        }
        let (_, why) = check_schema(&deep).expect_err("too deep");
        assert!(why.contains("deeper"), "{why}");
        let big = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)});
        let (_, why) = check_schema(&big).expect_err("too big");
        assert!(why.contains("bytes"), "{why}");
    }

    #[test]
    fn the_model_is_offered_the_tenants_tools_then_the_enabled_builtins_on_a_relay() {
        let all = builtins(json!({
            "end_call": {}, "send_digits": {}, "switch_language": {},
            "transfer_call": {"targets": [{"name": "sales", "to": "+14155550123", "description": "New orders"}]},
        }));
        let voice = voice(Some("en-US"), &["es-ES", "multi"]);
        let offered = definitions(&[tool(json!({}))], &all, &voice, true);
        let names: Vec<&str> = offered.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "lookup_order",
                END_CALL,
                TRANSFER_CALL,
                SEND_DIGITS,
                SWITCH_LANGUAGE
            ]
        );
        for definition in &offered {
            assert_eq!(
                check_schema(&definition.input_schema),
                Ok(()),
                "{}",
                definition.name
            );
            assert!(is_tool_name(&definition.name));
        }
        assert_eq!(
            offered[2].input_schema["properties"]["target"]["enum"],
            json!(["sales"])
        );
        assert!(offered[2].description.contains("sales: New orders"));
        assert_eq!(
            offered[4].input_schema["properties"]["language"]["enum"],
            json!(["en-US", "es-ES"])
        );
        let api = definitions(&[tool(json!({}))], &all, &voice, false);
        assert_eq!(api.len(), 1, "an SSE turn has no carrier to act on");
    }

    #[test]
    fn builtin_calls_are_read_and_checked() {
        let all = builtins(json!({
            "end_call": {}, "send_digits": {}, "switch_language": {},
            "transfer_call": {"targets": [{"name": "sales", "to": "+14155550123"}]},
        }));
        let voice = voice(Some("en-US"), &["es-ES"]);
        let call = |name: &str, input: Value| builtin_call(name, &input, &all, &voice);
        assert_eq!(
            call(END_CALL, json!({})),
            Some(Ok(BuiltinCall::EndCall { reason: None }))
        );
        assert_eq!(
            call(END_CALL, json!({"reason": " done "})),
            Some(Ok(BuiltinCall::EndCall {
                reason: Some("done".into())
            }))
        );
        assert_eq!(
            call(
                TRANSFER_CALL,
                json!({"target": "sales", "summary": "Wants to buy."})
            ),
            Some(Ok(BuiltinCall::Transfer {
                target: all.transfer_call.as_ref().expect("t").targets[0].clone(),
                summary: Some("Wants to buy.".into()),
            }))
        );
        let Some(Err(why)) = call(TRANSFER_CALL, json!({"target": "ceo"})) else {
            panic!("an unknown target is an error for the model");
        };
        assert!(why.contains("sales"), "{why}");
        assert_eq!(
            call(SEND_DIGITS, json!({"digits": "1w2#"})),
            Some(Ok(BuiltinCall::SendDigits {
                digits: "1w2#".into()
            }))
        );
        assert!(matches!(
            call(SEND_DIGITS, json!({"digits": "12x"})),
            Some(Err(_))
        ));
        assert!(matches!(call(SEND_DIGITS, json!({})), Some(Err(_))));
        assert_eq!(
            call(SWITCH_LANGUAGE, json!({"language": "es-es"})),
            Some(Ok(BuiltinCall::SwitchLanguage {
                language: "es-ES".into()
            }))
        );
        assert!(matches!(
            call(SWITCH_LANGUAGE, json!({"language": "fr-FR"})),
            Some(Err(_))
        ));
        assert_eq!(call("lookup_order", json!({})), None, "a tenant tool");
        let none = BuiltinTools::default();
        assert_eq!(
            builtin_call(END_CALL, &json!({}), &none, &voice),
            None,
            "not enabled"
        );
        assert!(BuiltinCall::EndCall { reason: None }.ends_session());
        assert!(!BuiltinCall::SendDigits { digits: "1".into() }.ends_session());
    }
}
