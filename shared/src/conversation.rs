//! What the model sees of a call: the stored turns turned into an alternating user/assistant
//! conversation, as Bedrock's Converse API requires (it starts with the user and alternates).

use crate::turn::TurnRole;

/// Most messages sent to the model; older ones are dropped (a voice call rarely gets here).
pub const MAX_CONTEXT_MESSAGES: usize = 100;

/// Who says a message to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The caller (speech and key presses).
    User,
    /// The agent.
    Assistant,
}

/// One message of the model's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who.
    pub speaker: Speaker,
    /// What.
    pub text: String,
}

/// The model's view of a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// What the agent said before the caller spoke (its greeting), for the system prompt: the
    /// conversation itself must start with the user.
    pub opening: Option<String>,
    /// Alternating messages, first and last from the user when there is a prompt to answer.
    pub messages: Vec<Message>,
}

impl Context {
    /// The text for a system block after the agent's own prompt, when there is an opening.
    pub fn opening_note(&self) -> Option<String> {
        self.opening
            .as_ref()
            .map(|opening| format!("The call began with you saying: \"{opening}\""))
    }

    /// The per-call system text: the opening, then the caller's language when the carrier
    /// reported one, so a caller who switches language is answered in it.
    pub fn system_note(&self, caller_lang: Option<&str>) -> Option<String> {
        let notes: Vec<String> = self
            .opening_note()
            .into_iter()
            .chain(caller_lang.map(language_note))
            .collect();
        (!notes.is_empty()).then(|| notes.join("\n"))
    }
}

/// How the caller's language reads to the model (`lang` as the carrier reported it).
pub fn language_note(lang: &str) -> String {
    format!(
        "The caller is speaking the language with the BCP 47 tag {lang}. Answer in that language."
    )
}

/// Longest part of a past tool result repeated to the model in later turns.
pub const MAX_TOOL_NOTE_CHARS: usize = 1_000;

/// How a past reply's tool calls read to the model in later turns: one bracketed line per call
/// (tool, input, then its result or error), put before what the agent said. The calls of the
/// turn under way travel as real `toolUse`/`toolResult` blocks; a past turn's are only context,
/// and as text they need no tool configuration (the agent's tools may have changed since).
pub fn describe_tool_calls(calls: &[crate::turn::ToolCall]) -> String {
    let cut = |text: String| -> String {
        if text.chars().count() > MAX_TOOL_NOTE_CHARS {
            let mut cut: String = text.chars().take(MAX_TOOL_NOTE_CHARS).collect();
            cut.push('…');
            cut
        } else {
            text
        }
    };
    calls
        .iter()
        .map(|call| {
            let outcome = match (&call.result, &call.error) {
                (Some(result), _) => format!("it returned {}", cut(result.to_string())),
                (None, Some(error)) => format!("it failed: {}", cut(error.clone())),
                (None, None) => format!("it ended {}", call.outcome.as_str()),
            };
            format!(
                "[You called the tool {} with {}; {outcome}.]",
                call.name,
                cut(call.input.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a key press reads to the model.
pub fn describe_dtmf(digit: &str) -> String {
    format!("[The caller pressed the {digit} key.]")
}

/// Builds the context from the stored turns, oldest first. Key presses become user messages,
/// empty texts (a reply interrupted before a word was heard) are skipped, neighbours from the
/// same speaker are joined, and only the last `max_messages` messages are kept.
pub fn build_context<'a>(
    history: impl IntoIterator<Item = (TurnRole, &'a str)>,
    max_messages: usize,
) -> Context {
    let mut messages: Vec<Message> = Vec::new();
    for (role, text) in history {
        let (speaker, text) = match role {
            TurnRole::User => (Speaker::User, text.trim().to_owned()),
            TurnRole::Assistant => (Speaker::Assistant, text.trim().to_owned()),
            TurnRole::Dtmf => (Speaker::User, describe_dtmf(text.trim())),
        };
        if text.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.speaker == speaker => {
                last.text.push('\n');
                last.text.push_str(&text);
            }
            _ => messages.push(Message { speaker, text }),
        }
    }
    let opening = match messages.first() {
        Some(first) if first.speaker == Speaker::Assistant => Some(messages.remove(0).text),
        _ => None,
    };
    if messages.len() > max_messages {
        messages.drain(..messages.len() - max_messages);
        if messages
            .first()
            .is_some_and(|m| m.speaker == Speaker::Assistant)
        {
            messages.remove(0);
        }
    }
    Context { opening, messages }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn greeting_moves_to_the_opening_and_turns_alternate() {
        let context = build_context(
            [
                (TurnRole::Assistant, "Hello, this is Ada."),
                (TurnRole::User, "Hi"),
                (TurnRole::Dtmf, "5"),
                (TurnRole::Assistant, "You pressed five."),
                (TurnRole::User, "Thanks"),
            ],
            MAX_CONTEXT_MESSAGES,
        );
        assert_eq!(context.opening.as_deref(), Some("Hello, this is Ada."));
        assert_eq!(
            context.opening_note().as_deref(),
            Some("The call began with you saying: \"Hello, this is Ada.\"")
        );
        assert_eq!(
            context.messages,
            vec![
                Message {
                    speaker: Speaker::User,
                    text: "Hi\n[The caller pressed the 5 key.]".into()
                },
                Message {
                    speaker: Speaker::Assistant,
                    text: "You pressed five.".into()
                },
                Message {
                    speaker: Speaker::User,
                    text: "Thanks".into()
                },
            ]
        );
    }

    #[test]
    fn the_system_note_carries_the_opening_and_the_callers_language() {
        let greeted = build_context(
            [(TurnRole::Assistant, "Hola."), (TurnRole::User, "Hi")],
            MAX_CONTEXT_MESSAGES,
        );
        assert_eq!(
            greeted.system_note(Some("es-ES")).as_deref(),
            Some(
                "The call began with you saying: \"Hola.\"\nThe caller is speaking the language with the BCP 47 tag es-ES. Answer in that language."
            )
        );
        assert_eq!(
            greeted.system_note(None),
            greeted.opening_note(),
            "no language, no note about it"
        );
        let plain = build_context([(TurnRole::User, "Hi")], MAX_CONTEXT_MESSAGES);
        assert_eq!(plain.system_note(None), None);
        assert_eq!(plain.system_note(Some("fr")), Some(language_note("fr")));
    }

    #[test]
    fn past_tool_calls_read_as_notes() {
        use crate::turn::{ToolCall, ToolOutcome};
        let calls = [
            ToolCall {
                name: "lookup_order".into(),
                input: serde_json::json!({"id": "42"}),
                outcome: ToolOutcome::Ok,
                result: Some(serde_json::json!({"status": "shipped"})),
                error: None,
                duration_ms: 10,
            },
            ToolCall {
                name: "refund".into(),
                input: serde_json::json!({"note": "x".repeat(2_000)}),
                outcome: ToolOutcome::Timeout,
                result: None,
                error: Some("no answer within 300 ms".into()),
                duration_ms: 300,
            },
        ];
        let note = describe_tool_calls(&calls);
        let lines: Vec<&str> = note.lines().collect();
        assert_eq!(
            lines[0],
            r#"[You called the tool lookup_order with {"id":"42"}; it returned {"status":"shipped"}.]"#
        );
        assert!(lines[1].starts_with("[You called the tool refund with {\"note\":\"xxx"));
        assert!(
            lines[1].ends_with("…; it failed: no answer within 300 ms.]"),
            "{}",
            lines[1]
        );
        assert!(lines[1].chars().count() < MAX_TOOL_NOTE_CHARS + 100);
        assert_eq!(describe_tool_calls(&[]), "");
    }

    #[test]
    fn a_reply_interrupted_before_any_word_disappears() {
        let context = build_context(
            [
                (TurnRole::User, "Book a table"),
                (TurnRole::Assistant, ""),
                (TurnRole::User, "for two"),
            ],
            MAX_CONTEXT_MESSAGES,
        );
        assert_eq!(context.messages.len(), 1);
        assert_eq!(context.messages[0].text, "Book a table\nfor two");
    }

    #[test]
    fn old_messages_are_dropped_and_the_rest_starts_with_the_user() {
        // m0 (user), m1 (assistant), …, m8 (user).
        let history: Vec<(TurnRole, String)> = (0..9)
            .map(|i| {
                let role = if i % 2 == 0 {
                    TurnRole::User
                } else {
                    TurnRole::Assistant
                };
                (role, format!("m{i}"))
            })
            .collect();
        let context = build_context(history.iter().map(|(r, t)| (*r, t.as_str())), 4);
        let texts: Vec<&str> = context.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, vec!["m6", "m7", "m8"], "m5 (assistant) would lead");
        assert_eq!(context.messages[0].speaker, Speaker::User);
    }

    fn role() -> impl Strategy<Value = TurnRole> {
        prop_oneof![
            Just(TurnRole::User),
            Just(TurnRole::Assistant),
            Just(TurnRole::Dtmf)
        ]
    }

    proptest! {
        #[test]
        fn messages_always_alternate_and_start_with_the_user(
            history in proptest::collection::vec((role(), "[a-z ]{0,8}"), 0..40),
            max in 1_usize..20,
        ) {
            let context = build_context(history.iter().map(|(r, t)| (*r, t.as_str())), max);
            prop_assert!(context.messages.len() <= max);
            if let Some(first) = context.messages.first() {
                prop_assert_eq!(first.speaker, Speaker::User);
            }
            for pair in context.messages.windows(2) {
                prop_assert_ne!(pair[0].speaker, pair[1].speaker);
            }
            prop_assert!(context.messages.iter().all(|m| !m.text.trim().is_empty()));
        }
    }
}
