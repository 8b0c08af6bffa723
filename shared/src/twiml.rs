//! TwiML the edge answers the carrier's incoming-call webhook with.

use std::fmt::Write;

/// `<Connect><ConversationRelay …>`: hands the call's audio to ConversationRelay, which opens
/// the relay WebSocket to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationRelay {
    /// `wss://<public host>/voice/relay/<CallSid>`.
    pub url: String,
    /// Spoken when the relay session starts.
    pub welcome_greeting: Option<String>,
    /// TTS voice, e.g. `en-US-Journey-O`.
    pub voice: Option<String>,
    /// BCP 47 language for TTS and transcription, e.g. `en-US`.
    pub language: Option<String>,
    /// TTS provider, e.g. `Google`, `ElevenLabs`, `Amazon`.
    pub tts_provider: Option<String>,
    /// Speech-to-text provider, e.g. `Deepgram`, `Google`.
    pub transcription_provider: Option<String>,
    /// Whether the caller's DTMF digits are reported.
    pub dtmf_detection: bool,
    /// `<Parameter name value>` children, delivered in the relay's `setup` message.
    pub parameters: Vec<(String, String)>,
}

/// Renders the TwiML document.
pub fn connect_relay(relay: &ConversationRelay) -> String {
    let mut attributes = vec![("url", relay.url.as_str())];
    let optional = [
        ("welcomeGreeting", &relay.welcome_greeting),
        ("voice", &relay.voice),
        ("language", &relay.language),
        ("ttsProvider", &relay.tts_provider),
        ("transcriptionProvider", &relay.transcription_provider),
    ];
    attributes.extend(
        optional
            .iter()
            .filter_map(|(name, value)| value.as_deref().map(|v| (*name, v))),
    );
    if relay.dtmf_detection {
        attributes.push(("dtmfDetection", "true"));
    }

    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay"#,
    );
    for (name, value) in attributes {
        let _ = write!(xml, r#" {name}="{}""#, escape(value));
    }
    if relay.parameters.is_empty() {
        xml.push_str("/>");
    } else {
        xml.push('>');
        for (name, value) in &relay.parameters {
            let _ = write!(
                xml,
                r#"<Parameter name="{}" value="{}"/>"#,
                escape(name),
                escape(value)
            );
        }
        xml.push_str("</ConversationRelay>");
    }
    xml.push_str("</Connect></Response>");
    xml
}

/// `<Say>` then `<Hangup/>`: how to turn a caller away politely (e.g. the tenant is at its
/// concurrent-call limit) instead of an HTTP error the carrier would read out.
pub fn say_and_hang_up(message: &str, language: Option<&str>) -> String {
    let language = language
        .map(|l| format!(r#" language="{}""#, escape(l)))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say{language}>{}</Say><Hangup/></Response>"#,
        escape(message)
    )
}

/// Escapes text for XML attribute values and element content.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Characters XML 1.0 forbids outright are dropped rather than sent to the carrier.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_relay() {
        let xml = connect_relay(&ConversationRelay {
            url: "wss://edge.example.com/voice/relay/CA123".into(),
            ..Default::default()
        });
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay url="wss://edge.example.com/voice/relay/CA123"/></Connect></Response>"#
        );
    }

    #[test]
    fn full_relay_with_escaped_greeting_and_parameters() {
        let xml = connect_relay(&ConversationRelay {
            url: "wss://e.example/voice/relay/CA1?token=a&b".into(),
            welcome_greeting: Some(r#"Hi, I'm "Ava" <your agent> & friend"#.into()),
            voice: Some("en-US-Journey-O".into()),
            language: Some("en-US".into()),
            tts_provider: None,
            transcription_provider: Some("Deepgram".into()),
            dtmf_detection: true,
            parameters: vec![("agent_id".into(), "a<1>".into())],
        });
        assert_eq!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay"#,
                r#" url="wss://e.example/voice/relay/CA1?token=a&amp;b""#,
                r#" welcomeGreeting="Hi, I&apos;m &quot;Ava&quot; &lt;your agent&gt; &amp; friend""#,
                r#" voice="en-US-Journey-O" language="en-US" transcriptionProvider="Deepgram""#,
                r#" dtmfDetection="true"><Parameter name="agent_id" value="a&lt;1&gt;"/>"#,
                r#"</ConversationRelay></Connect></Response>"#
            )
        );
    }

    #[test]
    fn polite_refusal() {
        assert_eq!(
            say_and_hang_up("All lines are busy & please call back.", Some("en-US")),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="en-US">All lines are busy &amp; please call back.</Say><Hangup/></Response>"#
        );
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(escape("a\u{0}b\u{1b}c\td"), "abc\td");
    }
}
