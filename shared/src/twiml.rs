//! TwiML (and Telnyx's TwiML-compatible TeXML) the edge answers the carrier's webhooks with,
//! and runs an outbound call with.
//!
//! [`connect_agent`] renders an agent's whole ConversationRelay configuration; attributes and
//! elements as in <https://www.twilio.com/docs/voice/twiml/connect/conversationrelay>.
//! [`connect_agent_in`] renders it for a [`Dialect`]: TeXML's `<ConversationRelay>` documents
//! fewer attributes
//! (<https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/conversationrelay>),
//! so only those are rendered for Telnyx. Twilio's `<Connect action>` is where the carrier posts
//! once the relay session ends; that callback is answered with [`dial`] (a transfer to a person,
//! TwiML `<Dial>` with a `<Number>` or `<Sip>` noun whose `url` whispers to the person answering:
//! <https://www.twilio.com/docs/voice/twiml/dial>, <https://www.twilio.com/docs/voice/twiml/number>)
//! or [`hang_up`]. Every value is XML-escaped.

use std::fmt::Write;

use crate::agent::AgentSpec;
use crate::handoff::{DialPlan, TransferTo};

const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// `<Connect><ConversationRelay …>` for `agent`: its greeting as `welcomeGreeting`, every
/// ConversationRelay setting of its `voice`, its `<Language>` elements, then `parameters` as
/// `<Parameter>` children. `url` is `wss://<public host>/voice/relay/<CallSid>` (with its
/// token); `action` is `https://<public host>/voice/twilio/action` (the carrier's callback once
/// the relay session ends: a transfer is dialled there). The attributes the edge rendered before
/// this function existed come first, in the same order and form (`url`, `welcomeGreeting`,
/// `voice`, `language`, `ttsProvider`, `transcriptionProvider`, `dtmfDetection`), so existing
/// answers are unchanged byte for byte.
pub fn connect_agent(
    agent: &AgentSpec,
    url: &str,
    action: Option<&str>,
    parameters: &[(String, String)],
) -> String {
    connect_agent_in(Dialect::Twilio, agent, url, action, parameters)
}

/// The carrier whose markup is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// TwiML: every ConversationRelay attribute.
    Twilio,
    /// TeXML: the attributes Telnyx documents for `<ConversationRelay>` (`url`,
    /// `welcomeGreeting`, `voice`, `language`, `transcriptionProvider`, `interruptible`,
    /// `welcomeGreetingInterruptible`, `dtmfDetection`); its `<Language>` takes `code`,
    /// `ttsProvider`, `voice`, `transcriptionProvider`, `speechModel`, and `<Parameter>`s pass
    /// custom parameters.
    Telnyx,
}

/// Top-level `<ConversationRelay>` attributes TeXML documents.
const TEXML_ATTRIBUTES: [&str; 8] = [
    "url",
    "welcomeGreeting",
    "voice",
    "language",
    "transcriptionProvider",
    "interruptible",
    "welcomeGreetingInterruptible",
    "dtmfDetection",
];

impl Dialect {
    fn renders(self, attribute: &str) -> bool {
        match self {
            Dialect::Twilio => true,
            Dialect::Telnyx => TEXML_ATTRIBUTES.contains(&attribute),
        }
    }
}

/// [`connect_agent`] in `dialect`.
pub fn connect_agent_in(
    dialect: Dialect,
    agent: &AgentSpec,
    url: &str,
    action: Option<&str>,
    parameters: &[(String, String)],
) -> String {
    let voice = &agent.voice;
    let mut attributes: Vec<(&str, String)> = vec![("url", url.to_owned())];
    let mut text = |name, value: &Option<String>| {
        if let Some(value) = value {
            attributes.push((name, value.clone()));
        }
    };
    text("welcomeGreeting", &agent.greeting);
    text("voice", &voice.voice);
    text("language", &voice.language);
    text("ttsProvider", &voice.tts_provider);
    text("transcriptionProvider", &voice.transcription_provider);
    attributes.push(("dtmfDetection", voice.detects_dtmf().to_string()));
    let named = [
        (
            "welcomeGreetingInterruptible",
            voice.welcome_greeting_interruptible.map(|i| i.as_str()),
        ),
        ("interruptible", voice.interruptible.map(|i| i.as_str())),
        ("preemptible", voice.preemptible.map(flag)),
        (
            "interruptSensitivity",
            voice.interrupt_sensitivity.map(|s| s.as_str()),
        ),
    ];
    attributes.extend(
        named
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v.to_owned()))),
    );
    let more_text = [
        ("ttsLanguage", &voice.tts_language),
        ("transcriptionLanguage", &voice.transcription_language),
        ("speechModel", &voice.speech_model),
    ];
    attributes.extend(
        more_text
            .into_iter()
            .filter_map(|(name, value)| value.clone().map(|v| (name, v))),
    );
    if !voice.hints.is_empty() {
        attributes.push(("hints", voice.hints.join(",")));
    }
    let switches = [
        ("partialPrompts", voice.partial_prompts.map(flag)),
        ("profanityFilter", voice.profanity_filter.map(flag)),
        (
            "reportInputDuringAgentSpeech",
            voice.report_input_during_agent_speech.map(|i| i.as_str()),
        ),
        (
            "elevenlabsTextNormalization",
            voice.elevenlabs_text_normalization.map(|n| n.as_str()),
        ),
    ];
    attributes.extend(
        switches
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v.to_owned()))),
    );
    if let Some(service) = &voice.intelligence_service {
        attributes.push(("intelligenceService", service.clone()));
    }
    if !voice.debug.is_empty() {
        let options: Vec<&str> = voice.debug.iter().map(|d| d.as_str()).collect();
        attributes.push(("debug", options.join(" ")));
    }
    let languages: Vec<Vec<(&str, String)>> = voice
        .languages
        .iter()
        .map(|language| {
            let mut element = vec![("code", language.code.clone())];
            let optional = [
                ("ttsProvider", &language.tts_provider),
                ("voice", &language.voice),
                ("transcriptionProvider", &language.transcription_provider),
                ("speechModel", &language.speech_model),
            ];
            element.extend(
                optional
                    .into_iter()
                    .filter_map(|(name, value)| value.clone().map(|v| (name, v))),
            );
            element
        })
        .collect();
    attributes.retain(|(name, _)| dialect.renders(name));
    render(action, &attributes, &languages, parameters)
}

fn flag(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn write_attributes(xml: &mut String, attributes: &[(&str, String)]) {
    for (name, value) in attributes {
        let _ = write!(xml, r#" {name}="{}""#, escape(value));
    }
}

/// The document: `<Connect>` (with its `action`), `<ConversationRelay>` with `attributes`,
/// `<Language>` elements, `<Parameter>`s.
fn render(
    action: Option<&str>,
    attributes: &[(&str, String)],
    languages: &[Vec<(&str, String)>],
    parameters: &[(String, String)],
) -> String {
    let mut xml = format!("{XML_DECLARATION}<Response><Connect");
    if let Some(action) = action {
        write_attributes(&mut xml, &[("action", action.to_owned())]);
    }
    xml.push_str("><ConversationRelay");
    write_attributes(&mut xml, attributes);
    if languages.is_empty() && parameters.is_empty() {
        xml.push_str("/>");
    } else {
        xml.push('>');
        for language in languages {
            xml.push_str("<Language");
            write_attributes(&mut xml, language);
            xml.push_str("/>");
        }
        for (name, value) in parameters {
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

/// `<Dial>` to a transfer's target: `callerId` when configured, and the `<Number>` or `<Sip>`
/// noun's `url` set to `whisper_url` (TwiML the carrier runs for the person answering, before
/// the caller is connected) when the plan has a whisper.
pub fn dial(plan: &DialPlan, whisper_url: Option<&str>) -> String {
    let mut xml = format!("{XML_DECLARATION}<Response><Dial");
    if let Some(caller_id) = &plan.caller_id {
        write_attributes(&mut xml, &[("callerId", caller_id.clone())]);
    }
    xml.push('>');
    let noun = match plan.to {
        TransferTo::Number(_) => "Number",
        TransferTo::Sip(_) => "Sip",
    };
    let _ = write!(xml, "<{noun}");
    if let (Some(url), Some(_)) = (whisper_url, &plan.whisper) {
        write_attributes(&mut xml, &[("url", url.to_owned())]);
    }
    let _ = write!(
        xml,
        ">{}</{noun}></Dial></Response>",
        escape(plan.to.as_str())
    );
    xml
}

/// `<Hangup/>`: the relay session ended and nothing follows.
pub fn hang_up() -> String {
    format!("{XML_DECLARATION}<Response><Hangup/></Response>")
}

/// `<Say>`: a whisper to the person answering a transfer (the call continues after it).
pub fn say(message: &str) -> String {
    format!(
        "{XML_DECLARATION}<Response><Say>{}</Say></Response>",
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

    fn agent(json: serde_json::Value) -> AgentSpec {
        let mut base = serde_json::json!({"name": "Ava", "system_prompt": "p"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        let spec: AgentSpec = serde_json::from_value(base).expect("agent parses");
        assert_eq!(spec.validate(), Ok(()), "a valid agent");
        spec
    }

    const URL: &str = "wss://e.example/voice/relay/CA1";

    #[test]
    fn the_agent_the_end_to_end_tests_use_renders_as_before() {
        let spec = agent(serde_json::json!({
            "greeting": "Hello, this is Ava.",
            "voice": {"voice": "en-US-Journey-O", "language": "en-US"},
        }));
        let parameters = vec![
            ("agent_id".to_owned(), "ava".to_owned()),
            ("greeting".to_owned(), "carrier".to_owned()),
        ];
        // What the edge answered before agents had ConversationRelay settings of their own.
        let before = concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay"#,
            r#" url="wss://e.example/voice/relay/CA1" welcomeGreeting="Hello, this is Ava.""#,
            r#" voice="en-US-Journey-O" language="en-US" dtmfDetection="true">"#,
            r#"<Parameter name="agent_id" value="ava"/><Parameter name="greeting" value="carrier"/>"#,
            r#"</ConversationRelay></Connect></Response>"#
        );
        let now = connect_agent(&spec, URL, None, &parameters);
        assert_eq!(now, before);
        assert!(now.contains(
            r#"welcomeGreeting="Hello, this is Ava." voice="en-US-Journey-O" language="en-US""#
        ));
    }

    #[test]
    fn every_attribute_renders_escaped_in_a_fixed_order() {
        let spec = agent(serde_json::json!({
            "greeting": "Hi & \"welcome\"",
            "voice": {
                "voice": "en-US-Journey-O", "language": "en-US", "tts_provider": "ElevenLabs",
                "transcription_provider": "Deepgram", "dtmf_detection": false,
                "welcome_greeting_interruptible": "none", "interruptible": true, "preemptible": true,
                "interrupt_sensitivity": "low", "tts_language": "en-GB", "transcription_language": "multi",
                "speech_model": "nova-3-general", "hints": ["AYBIZA", "O'Brien <Ltd>"],
                "partial_prompts": true, "profanity_filter": false, "report_input_during_agent_speech": "speech",
                "elevenlabs_text_normalization": "on", "intelligence_service": "GA0123",
                "debug": ["debugging", "tokens-played"],
            },
        }));
        assert_eq!(
            connect_agent(
                &spec,
                "wss://e.example/voice/relay/CA1?token=a&b",
                None,
                &[]
            ),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay"#,
                r#" url="wss://e.example/voice/relay/CA1?token=a&amp;b""#,
                r#" welcomeGreeting="Hi &amp; &quot;welcome&quot;""#,
                r#" voice="en-US-Journey-O" language="en-US" ttsProvider="ElevenLabs""#,
                r#" transcriptionProvider="Deepgram" dtmfDetection="false""#,
                r#" welcomeGreetingInterruptible="none" interruptible="any" preemptible="true""#,
                r#" interruptSensitivity="low" ttsLanguage="en-GB" transcriptionLanguage="multi""#,
                r#" speechModel="nova-3-general" hints="AYBIZA,O&apos;Brien &lt;Ltd&gt;""#,
                r#" partialPrompts="true" profanityFilter="false" reportInputDuringAgentSpeech="speech""#,
                r#" elevenlabsTextNormalization="on" intelligenceService="GA0123""#,
                r#" debug="debugging tokens-played"/></Connect></Response>"#,
            )
        );
    }

    #[test]
    fn each_attribute_alone() {
        let cases = [
            (
                serde_json::json!({"tts_provider": "Amazon"}),
                r#" ttsProvider="Amazon""#,
            ),
            (
                serde_json::json!({"transcription_provider": "Google"}),
                r#" transcriptionProvider="Google""#,
            ),
            (
                serde_json::json!({"interruptible": "dtmf"}),
                r#" interruptible="dtmf""#,
            ),
            (
                serde_json::json!({"interruptible": false}),
                r#" interruptible="none""#,
            ),
            (
                serde_json::json!({"preemptible": false}),
                r#" preemptible="false""#,
            ),
            (
                serde_json::json!({"interrupt_sensitivity": "medium"}),
                r#" interruptSensitivity="medium""#,
            ),
            (
                serde_json::json!({"tts_language": "fr-FR"}),
                r#" ttsLanguage="fr-FR""#,
            ),
            (
                serde_json::json!({"transcription_language": "fr-FR"}),
                r#" transcriptionLanguage="fr-FR""#,
            ),
            (
                serde_json::json!({"speech_model": "telephony"}),
                r#" speechModel="telephony""#,
            ),
            (serde_json::json!({"hints": ["a"]}), r#" hints="a""#),
            (
                serde_json::json!({"partial_prompts": false}),
                r#" partialPrompts="false""#,
            ),
            (
                serde_json::json!({"profanity_filter": true}),
                r#" profanityFilter="true""#,
            ),
            (
                serde_json::json!({"report_input_during_agent_speech": true}),
                r#" reportInputDuringAgentSpeech="any""#,
            ),
            (
                serde_json::json!({"elevenlabs_text_normalization": "auto"}),
                r#" elevenlabsTextNormalization="auto""#,
            ),
            (
                serde_json::json!({"intelligence_service": "support-insights"}),
                r#" intelligenceService="support-insights""#,
            ),
            (
                serde_json::json!({"debug": ["speaker-events"]}),
                r#" debug="speaker-events""#,
            ),
            (
                serde_json::json!({"dtmf_detection": true}),
                r#" dtmfDetection="true""#,
            ),
        ];
        for (voice, attribute) in cases {
            let xml = connect_agent(
                &agent(serde_json::json!({ "voice": voice })),
                URL,
                None,
                &[],
            );
            // The attributes of the first renderer keep their place before `dtmfDetection`.
            let dtmf = r#" dtmfDetection="true""#;
            let attributes = if attribute.contains("dtmfDetection") {
                attribute.to_owned()
            } else if attribute.contains("Provider=") {
                format!("{attribute}{dtmf}")
            } else {
                format!("{dtmf}{attribute}")
            };
            let expected = format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay url="{URL}"{attributes}/></Connect></Response>"#,
            );
            assert_eq!(xml, expected, "{voice}");
        }
    }

    #[test]
    fn language_elements_including_multi_and_parameters() {
        let spec = agent(serde_json::json!({
            "voice": {
                "language": "multi", "tts_provider": "ElevenLabs", "transcription_provider": "Deepgram",
                "languages": [
                    {"code": "multi", "tts_provider": "ElevenLabs", "voice": "UgBBYS2sOqTuMpoF3BR0", "transcription_provider": "Deepgram", "speech_model": "nova-3-general"},
                    {"code": "es-ES", "voice": "es-ES-Neural2-B\"<x>", "tts_provider": "Google"},
                    {"code": "fr-FR", "speech_model": "telephony"},
                ],
            },
        }));
        let xml = connect_agent(
            &spec,
            URL,
            None,
            &[("agent_id".to_owned(), "a&b".to_owned())],
        );
        assert_eq!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay"#,
                r#" url="wss://e.example/voice/relay/CA1" language="multi" ttsProvider="ElevenLabs""#,
                r#" transcriptionProvider="Deepgram" dtmfDetection="true">"#,
                r#"<Language code="multi" ttsProvider="ElevenLabs" voice="UgBBYS2sOqTuMpoF3BR0" transcriptionProvider="Deepgram" speechModel="nova-3-general"/>"#,
                r#"<Language code="es-ES" ttsProvider="Google" voice="es-ES-Neural2-B&quot;&lt;x&gt;"/>"#,
                r#"<Language code="fr-FR" speechModel="telephony"/>"#,
                r#"<Parameter name="agent_id" value="a&amp;b"/></ConversationRelay></Connect></Response>"#,
            )
        );
    }

    #[test]
    fn connect_carries_the_action_escaped() {
        const ACTION: &str = "https://e.example/voice/twilio/action?x=1&y=2";
        let spec = agent(serde_json::json!({"greeting": "Hi"}));
        let escaped = r#"<Connect action="https://e.example/voice/twilio/action?x=1&amp;y=2"><ConversationRelay url="#;
        let xml = connect_agent(&spec, URL, Some(ACTION), &[]);
        assert!(xml.contains(escaped), "{xml}");
        assert!(
            connect_agent(&spec, URL, None, &[]).contains("<Connect><ConversationRelay"),
            "no action, no attribute"
        );
    }

    #[test]
    fn dial_renders_numbers_sip_caller_ids_and_whispers_escaped() {
        let number = |caller_id: Option<&str>, whisper: Option<&str>| DialPlan {
            to: TransferTo::Number("+14155550123".into()),
            caller_id: caller_id.map(str::to_owned),
            whisper: whisper.map(str::to_owned),
        };
        let whisper_url = "https://e.example/voice/twilio/whisper?text=a%20b&lang=x";
        let cases = [
            (
                dial(&number(None, None), Some(whisper_url)),
                r#"<Response><Dial><Number>+14155550123</Number></Dial></Response>"#,
            ),
            (
                dial(
                    &number(Some("+18005550100"), Some("Refund")),
                    Some(whisper_url),
                ),
                r#"<Response><Dial callerId="+18005550100"><Number url="https://e.example/voice/twilio/whisper?text=a%20b&amp;lang=x">+14155550123</Number></Dial></Response>"#,
            ),
            (
                dial(
                    &DialPlan {
                        to: TransferTo::Sip("sip:desk@pbx.example.com;x=1&y=2".into()),
                        caller_id: None,
                        whisper: Some("Refund".into()),
                    },
                    None,
                ),
                r#"<Response><Dial><Sip>sip:desk@pbx.example.com;x=1&amp;y=2</Sip></Dial></Response>"#,
            ),
            (hang_up(), "<Response><Hangup/></Response>"),
            (
                say("Caller wants a <refund> & more"),
                "<Response><Say>Caller wants a &lt;refund&gt; &amp; more</Say></Response>",
            ),
        ];
        for (xml, body) in cases {
            assert_eq!(xml, format!("{XML_DECLARATION}{body}"));
        }
    }

    /// TeXML renders only what Telnyx documents for `<ConversationRelay>`, in the same order.
    #[test]
    fn texml_renders_the_attributes_telnyx_documents() {
        let spec = agent(serde_json::json!({
            "greeting": "Hi",
            "voice": {
                "voice": "Telnyx.NaturalHD.astra", "language": "en", "tts_provider": "telnyx",
                "transcription_provider": "deepgram", "interruptible": "speech",
                "welcome_greeting_interruptible": "none", "preemptible": true, "hints": ["AYBIZA"],
                "languages": [{"code": "fr", "voice": "Telnyx.NaturalHD.chloe", "speech_model": "nova-3"}],
            },
        }));
        let parameters = vec![("agent_id".to_owned(), "ava".to_owned())];
        assert_eq!(
            connect_agent_in(Dialect::Telnyx, &spec, URL, None, &parameters),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><ConversationRelay"#,
                r#" url="wss://e.example/voice/relay/CA1" welcomeGreeting="Hi""#,
                r#" voice="Telnyx.NaturalHD.astra" language="en" transcriptionProvider="deepgram""#,
                r#" dtmfDetection="true" welcomeGreetingInterruptible="none" interruptible="speech">"#,
                r#"<Language code="fr" voice="Telnyx.NaturalHD.chloe" speechModel="nova-3"/>"#,
                r#"<Parameter name="agent_id" value="ava"/></ConversationRelay></Connect></Response>"#,
            )
        );
        // The same agent in TwiML keeps every attribute.
        let twiml = connect_agent(&spec, URL, None, &parameters);
        assert!(twiml.contains(r#"ttsProvider="telnyx""#) && twiml.contains(r#"hints="AYBIZA""#));
    }
}
