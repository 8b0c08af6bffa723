//! How the carrier speaks and listens for an agent: every attribute of TwiML's
//! `<ConversationRelay>` and its `<Language>` children, checked before it is stored, so a
//! setting the carrier would refuse (or silently ignore) is refused at `PUT /v1/agents/{id}`
//! with a message naming the field.
//!
//! Attribute names, values and defaults are Twilio's:
//! <https://www.twilio.com/docs/voice/twiml/connect/conversationrelay> (attribute list as in
//! Twilio's own helper library, `twilio-node` `src/twiml/VoiceResponse.ts`,
//! `ConversationRelayAttributes` and `LanguageAttributes`). `multi` (automatic language
//! detection) needs Deepgram for transcription and ElevenLabs for text-to-speech:
//! <https://www.twilio.com/en-us/changelog/conversationrelay-now-supports-a-configuration-for-automatic-lan>.
//!
//! Providers and voices are checked for shape, not against a list: carriers add them faster
//! than this code changes, and ConversationRelay-compatible carriers name them differently
//! (Telnyx: `telnyx`, `deepgram`). The contradiction checks compare provider names without
//! regard to case.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::language::{MULTI, is_language_tag};
use crate::relay::TextOptions;

/// Most `<Language>` elements.
pub const MAX_LANGUAGES: usize = 20;
/// Most speech-recognition hints.
pub const MAX_HINTS: usize = 100;
/// Longest hint.
pub const MAX_HINT_CHARS: usize = 100;
/// Longest voice name (ElevenLabs ids with model and tuning suffixes are about 60).
pub const MAX_VOICE_CHARS: usize = 128;

/// Which caller input may do something: interrupt speech (`interruptible`,
/// `welcomeGreetingInterruptible`) or be reported while the agent speaks
/// (`reportInputDuringAgentSpeech`). Booleans are accepted as Twilio accepts them: `true` is
/// `any`, `false` is `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerInput {
    /// Nothing.
    None,
    /// Key presses only.
    Dtmf,
    /// Speech only.
    Speech,
    /// Speech and key presses.
    Any,
}

impl CallerInput {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Dtmf => "dtmf",
            Self::Speech => "speech",
            Self::Any => "any",
        }
    }

    /// Whether speech is included.
    pub fn includes_speech(self) -> bool {
        matches!(self, Self::Speech | Self::Any)
    }
}

impl Serialize for CallerInput {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallerInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(true) => Ok(Self::Any),
            serde_json::Value::Bool(false) => Ok(Self::None),
            serde_json::Value::String(text) => match text.as_str() {
                "none" | "false" => Ok(Self::None),
                "dtmf" => Ok(Self::Dtmf),
                "speech" => Ok(Self::Speech),
                "any" | "true" => Ok(Self::Any),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?} is not one of none, dtmf, speech, any (or a boolean)"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "{other} is not one of none, dtmf, speech, any (or a boolean)"
            ))),
        }
    }
}

/// `interruptSensitivity`: how readily caller speech cuts the agent off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Only clear speech interrupts.
    Low,
    /// Between.
    Medium,
    /// The slightest speech interrupts.
    High,
}

impl Sensitivity {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// `elevenlabsTextNormalization`: whether ElevenLabs spells out numbers, dates and the like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextNormalization {
    /// Normalise (adds latency).
    On,
    /// Send text as is.
    Off,
    /// ElevenLabs decides (behaves like `off` on ConversationRelay).
    Auto,
}

impl TextNormalization {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Auto => "auto",
        }
    }
}

/// One `debug` option: which diagnostics the carrier sends as `info` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DebugOption {
    /// General debugging information.
    Debugging,
    /// When the agent starts and stops speaking.
    SpeakerEvents,
    /// Which tokens were played before an interruption.
    TokensPlayed,
}

impl DebugOption {
    /// The value inside the space-separated attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debugging => "debugging",
            Self::SpeakerEvents => "speaker-events",
            Self::TokensPlayed => "tokens-played",
        }
    }
}

/// A `<Language>` element: the voice and providers used while the session speaks `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageSettings {
    /// BCP 47 tag, e.g. `es-ES`, or `multi` for automatic detection.
    pub code: String,
    /// Text-to-speech provider for this language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_provider: Option<String>,
    /// Voice for this language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Speech-recognition provider for this language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_provider: Option<String>,
    /// Speech-recognition model for this language, e.g. `nova-3-general`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech_model: Option<String>,
}

/// How the carrier speaks and listens for this agent: the `<ConversationRelay>` attributes
/// (the greeting is the agent's own `greeting`). Absent settings are left to the carrier's
/// defaults, except `dtmf_detection`, which this platform turns on (key presses are turns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSettings {
    /// `voice`: TTS voice, e.g. `en-US-Journey-O`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// `language`: BCP 47 language for TTS and transcription, e.g. `en-US`, or `multi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `ttsProvider`, e.g. `ElevenLabs`, `Google`, `Amazon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_provider: Option<String>,
    /// `transcriptionProvider`, e.g. `Deepgram`, `Google`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_provider: Option<String>,
    /// `ttsLanguage`: overrides `language` for text-to-speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_language: Option<String>,
    /// `transcriptionLanguage`: overrides `language` for transcription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_language: Option<String>,
    /// `speechModel`, e.g. `nova-3-general`, `telephony`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech_model: Option<String>,
    /// `welcomeGreetingInterruptible` (carrier default `any`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome_greeting_interruptible: Option<CallerInput>,
    /// `interruptible` (carrier default `any`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruptible: Option<CallerInput>,
    /// `preemptible`: whether the next talk cycle's text may cut the current one off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptible: Option<bool>,
    /// `interruptSensitivity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_sensitivity: Option<Sensitivity>,
    /// `dtmfDetection`; absent means on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf_detection: Option<bool>,
    /// `hints`: words and phrases that help recognition (rendered comma-separated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// `partialPrompts`: report partial transcripts while the caller speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_prompts: Option<bool>,
    /// `profanityFilter` (carrier default on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profanity_filter: Option<bool>,
    /// `reportInputDuringAgentSpeech`: which input is reported while the agent speaks and
    /// cannot be interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_input_during_agent_speech: Option<CallerInput>,
    /// `elevenlabsTextNormalization` (ElevenLabs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_text_normalization: Option<TextNormalization>,
    /// `intelligenceService`: a Conversational Intelligence service sid (`GA…`) or unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intelligence_service: Option<String>,
    /// `debug`: diagnostics sent as `info` messages (rendered space-separated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debug: Vec<DebugOption>,
    /// `<Language>` children: per-language voice and providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<LanguageSettings>,
}

/// Why a voice setting was refused; every message starts with the field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceError {
    /// A value of the wrong shape.
    #[error("{field} must be {expected}")]
    BadValue {
        /// Path of the field, e.g. `voice.languages[1].code`.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Two settings that cannot both hold.
    #[error("{field} contradicts {other}: {why}")]
    Contradiction {
        /// The field refused.
        field: String,
        /// The field it contradicts.
        other: String,
        /// Why.
        why: &'static str,
    },
}

fn bad(field: impl Into<String>, expected: &'static str) -> VoiceError {
    VoiceError::BadValue {
        field: field.into(),
        expected,
    }
}

fn contradiction(
    field: impl Into<String>,
    other: impl Into<String>,
    why: &'static str,
) -> VoiceError {
    VoiceError::Contradiction {
        field: field.into(),
        other: other.into(),
        why,
    }
}

/// 1 to `max` characters of letters, digits and `extra`.
fn is_token(value: &str, max: usize, extra: &[char]) -> bool {
    !value.is_empty()
        && value.chars().count() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

fn check_provider(field: String, value: Option<&String>) -> Result<(), VoiceError> {
    match value {
        Some(provider) if !is_token(provider, 32, &['-', '_', '.']) => Err(bad(
            field,
            "a provider name: 1 to 32 letters, digits, '-', '_' or '.'",
        )),
        _ => Ok(()),
    }
}

fn check_voice(field: String, value: Option<&String>) -> Result<(), VoiceError> {
    match value {
        Some(voice)
            if voice.trim().is_empty()
                || voice.chars().count() > MAX_VOICE_CHARS
                || voice.chars().any(char::is_control) =>
        {
            Err(bad(field, "a voice name of 1 to 128 characters"))
        }
        _ => Ok(()),
    }
}

fn check_speech_model(field: String, value: Option<&String>) -> Result<(), VoiceError> {
    match value {
        Some(model) if !is_token(model, 64, &['-', '_', '.', ':']) => Err(bad(
            field,
            "a speech model name: 1 to 64 letters, digits, '-', '_', '.' or ':'",
        )),
        _ => Ok(()),
    }
}

fn check_language(field: String, value: Option<&String>) -> Result<(), VoiceError> {
    match value {
        Some(tag) if !is_language_tag(tag) => {
            Err(bad(field, "a BCP 47 language tag such as en-US, or multi"))
        }
        _ => Ok(()),
    }
}

fn is_multi(tag: Option<&String>) -> bool {
    tag.is_some_and(|t| t.eq_ignore_ascii_case(MULTI))
}

fn names(provider: Option<&String>, expected: &str) -> bool {
    provider.is_none_or(|p| p.eq_ignore_ascii_case(expected))
}

impl VoiceSettings {
    /// Checks every setting; `greeting` is the agent's (for `welcome_greeting_interruptible`).
    pub fn validate(&self, greeting: Option<&str>) -> Result<(), VoiceError> {
        check_voice("voice.voice".into(), self.voice.as_ref())?;
        check_provider("voice.tts_provider".into(), self.tts_provider.as_ref())?;
        check_provider(
            "voice.transcription_provider".into(),
            self.transcription_provider.as_ref(),
        )?;
        check_speech_model("voice.speech_model".into(), self.speech_model.as_ref())?;
        for (field, value) in [
            ("voice.language", &self.language),
            ("voice.tts_language", &self.tts_language),
            ("voice.transcription_language", &self.transcription_language),
        ] {
            check_language(field.into(), value.as_ref())?;
        }
        if let Some(service) = &self.intelligence_service
            && !is_token(service, 64, &['-', '_'])
        {
            return Err(bad(
                "voice.intelligence_service",
                "a service sid (GA…) or unique name: 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if self.hints.len() > MAX_HINTS
            || self.hints.iter().any(|hint| {
                hint.trim().is_empty()
                    || hint.chars().count() > MAX_HINT_CHARS
                    || hint.contains(',')
                    || hint.chars().any(char::is_control)
            })
        {
            return Err(bad(
                "voice.hints",
                "at most 100 hints of 1 to 100 characters, without commas",
            ));
        }
        let mut debug = self.debug.clone();
        debug.sort_by_key(|option| option.as_str());
        debug.dedup();
        if debug.len() != self.debug.len() {
            return Err(bad("voice.debug", "a list of distinct debug options"));
        }
        self.check_languages()?;
        self.check_contradictions(greeting)
    }

    fn check_languages(&self) -> Result<(), VoiceError> {
        if self.languages.len() > MAX_LANGUAGES {
            return Err(bad("voice.languages", "at most 20 <Language> elements"));
        }
        for (index, language) in self.languages.iter().enumerate() {
            let at = |name: &str| format!("voice.languages[{index}].{name}");
            check_language(at("code"), Some(&language.code))?;
            check_voice(at("voice"), language.voice.as_ref())?;
            check_provider(at("tts_provider"), language.tts_provider.as_ref())?;
            check_provider(
                at("transcription_provider"),
                language.transcription_provider.as_ref(),
            )?;
            check_speech_model(at("speech_model"), language.speech_model.as_ref())?;
            if language.voice.is_none()
                && language.tts_provider.is_none()
                && language.transcription_provider.is_none()
                && language.speech_model.is_none()
            {
                return Err(bad(
                    format!("voice.languages[{index}]"),
                    "a <Language> with a voice, a provider or a speech model",
                ));
            }
            if self.languages[..index]
                .iter()
                .any(|earlier| earlier.code.eq_ignore_ascii_case(&language.code))
            {
                return Err(bad(at("code"), "a language not already configured"));
            }
            if is_multi(Some(&language.code)) {
                if !names(language.transcription_provider.as_ref(), "Deepgram") {
                    return Err(contradiction(
                        at("transcription_provider"),
                        at("code"),
                        "automatic language detection (multi) needs Deepgram",
                    ));
                }
                if !names(language.tts_provider.as_ref(), "ElevenLabs") {
                    return Err(contradiction(
                        at("tts_provider"),
                        at("code"),
                        "text-to-speech in multi needs ElevenLabs",
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_contradictions(&self, greeting: Option<&str>) -> Result<(), VoiceError> {
        let (stt_field, stt) = match &self.transcription_language {
            Some(tag) => ("voice.transcription_language", Some(tag)),
            None => ("voice.language", self.language.as_ref()),
        };
        if is_multi(stt) && !names(self.transcription_provider.as_ref(), "Deepgram") {
            return Err(contradiction(
                "voice.transcription_provider",
                stt_field,
                "automatic language detection (multi) needs Deepgram",
            ));
        }
        let (tts_field, tts) = match &self.tts_language {
            Some(tag) => ("voice.tts_language", Some(tag)),
            None => ("voice.language", self.language.as_ref()),
        };
        if is_multi(tts) && !names(self.tts_provider.as_ref(), "ElevenLabs") {
            return Err(contradiction(
                "voice.tts_provider",
                tts_field,
                "text-to-speech in multi needs ElevenLabs",
            ));
        }
        if self.elevenlabs_text_normalization.is_some()
            && !names(self.tts_provider.as_ref(), "ElevenLabs")
        {
            return Err(contradiction(
                "voice.elevenlabs_text_normalization",
                "voice.tts_provider",
                "text normalization is an ElevenLabs setting",
            ));
        }
        if self.interrupt_sensitivity.is_some()
            && self
                .interruptible
                .is_some_and(|input| !input.includes_speech())
        {
            return Err(contradiction(
                "voice.interrupt_sensitivity",
                "voice.interruptible",
                "speech cannot interrupt, so its sensitivity means nothing",
            ));
        }
        if self.welcome_greeting_interruptible.is_some() && greeting.is_none() {
            return Err(contradiction(
                "voice.welcome_greeting_interruptible",
                "greeting",
                "the agent has no greeting",
            ));
        }
        Ok(())
    }

    /// The language text-to-speech starts in (`tts_language`, else `language`).
    pub fn tts_language(&self) -> Option<&str> {
        self.tts_language.as_deref().or(self.language.as_deref())
    }

    /// The language transcription starts in (`transcription_language`, else `language`).
    pub fn transcription_language(&self) -> Option<&str> {
        self.transcription_language
            .as_deref()
            .or(self.language.as_deref())
    }

    /// Whether `dtmfDetection` is on (this platform's default: on).
    pub fn detects_dtmf(&self) -> bool {
        self.dtmf_detection.unwrap_or(true)
    }

    /// The `text` fields the agent's settings give every reply: `interruptible` (whether speech
    /// may cut it off) and `preemptible`, each only when the agent set it, and `lang`.
    pub fn text_options(&self, lang: Option<String>) -> TextOptions {
        TextOptions {
            lang,
            interruptible: self.interruptible.map(CallerInput::includes_speech),
            preemptible: self.preemptible,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(json: serde_json::Value) -> VoiceSettings {
        serde_json::from_value(json).expect("voice settings parse")
    }

    #[test]
    fn every_documented_value_parses_and_booleans_read_as_twilio_reads_them() {
        let settings = voice(serde_json::json!({
            "voice": "en-US-Journey-O", "language": "en-US", "tts_provider": "Google",
            "transcription_provider": "Deepgram", "tts_language": "en-US", "transcription_language": "en-US",
            "speech_model": "nova-3-general", "welcome_greeting_interruptible": false,
            "interruptible": true, "preemptible": true, "interrupt_sensitivity": "high",
            "dtmf_detection": false, "hints": ["AYBIZA", "Ava"], "partial_prompts": true,
            "profanity_filter": false, "report_input_during_agent_speech": "dtmf",
            "intelligence_service": "GA0123456789abcdef0123456789abcdef",
            "debug": ["debugging", "speaker-events", "tokens-played"],
            "languages": [{"code": "es-ES", "voice": "es-ES-Neural2-B", "tts_provider": "Google",
                           "transcription_provider": "Google", "speech_model": "telephony"}],
        }));
        assert_eq!(
            settings.welcome_greeting_interruptible,
            Some(CallerInput::None)
        );
        assert_eq!(settings.interruptible, Some(CallerInput::Any));
        assert_eq!(
            settings.report_input_during_agent_speech,
            Some(CallerInput::Dtmf)
        );
        assert_eq!(settings.validate(Some("Hello.")), Ok(()));
        assert!(!settings.detects_dtmf());
        // Round trip: booleans come back as the named values.
        let json = serde_json::to_value(&settings).expect("serialises");
        assert_eq!(json["interruptible"], "any");
        assert_eq!(json["welcome_greeting_interruptible"], "none");
        assert_eq!(voice(json), settings);
        for (value, expected) in [
            ("none", CallerInput::None),
            ("dtmf", CallerInput::Dtmf),
            ("speech", CallerInput::Speech),
            ("any", CallerInput::Any),
            ("true", CallerInput::Any),
            ("false", CallerInput::None),
        ] {
            assert_eq!(
                voice(serde_json::json!({ "interruptible": value })).interruptible,
                Some(expected)
            );
        }
    }

    #[test]
    fn unknown_settings_and_values_are_refused_by_name() {
        for (json, needle) in [
            (serde_json::json!({"interuptible": "any"}), "interuptible"),
            (
                serde_json::json!({"interruptible": "sometimes"}),
                "sometimes",
            ),
            (
                serde_json::json!({"interrupt_sensitivity": "extreme"}),
                "extreme",
            ),
            (
                serde_json::json!({"elevenlabs_text_normalization": "maybe"}),
                "maybe",
            ),
            (serde_json::json!({"debug": ["verbose"]}), "verbose"),
            (
                serde_json::json!({"languages": [{"code": "es", "pitch": 2}]}),
                "pitch",
            ),
        ] {
            let error = serde_json::from_value::<VoiceSettings>(json.clone())
                .expect_err("refused")
                .to_string();
            assert!(error.contains(needle), "{json}: {error}");
        }
    }

    #[test]
    fn bad_and_contradictory_settings_name_their_field() {
        type Case = (serde_json::Value, Option<&'static str>, &'static str);
        let cases: Vec<Case> = vec![
            (
                serde_json::json!({"language": "english"}),
                None,
                "voice.language must be",
            ),
            (
                serde_json::json!({"tts_language": "e"}),
                None,
                "voice.tts_language must be",
            ),
            (
                serde_json::json!({"voice": " "}),
                None,
                "voice.voice must be",
            ),
            (
                serde_json::json!({"tts_provider": "Eleven Labs"}),
                None,
                "voice.tts_provider must be",
            ),
            (
                serde_json::json!({"speech_model": "nova 3"}),
                None,
                "voice.speech_model must be",
            ),
            (
                serde_json::json!({"intelligence_service": "GA/1"}),
                None,
                "voice.intelligence_service must be",
            ),
            (
                serde_json::json!({"hints": ["a,b"]}),
                None,
                "voice.hints must be",
            ),
            (
                serde_json::json!({"debug": ["debugging", "debugging"]}),
                None,
                "voice.debug must be",
            ),
            (
                serde_json::json!({"languages": [{"code": "es-ES"}]}),
                None,
                "voice.languages[0] must be",
            ),
            (
                serde_json::json!({"languages": [{"code": "es-ES", "voice": "a"}, {"code": "ES-es", "voice": "b"}]}),
                None,
                "voice.languages[1].code must be a language not already configured",
            ),
            (
                serde_json::json!({"languages": [{"code": "fr_FR", "voice": "a"}]}),
                None,
                "voice.languages[0].code must be",
            ),
            (
                serde_json::json!({"language": "multi", "transcription_provider": "Google", "tts_provider": "ElevenLabs"}),
                None,
                "voice.transcription_provider contradicts voice.language",
            ),
            (
                serde_json::json!({"transcription_language": "multi", "transcription_provider": "google"}),
                None,
                "voice.transcription_provider contradicts voice.transcription_language",
            ),
            (
                serde_json::json!({"tts_language": "multi", "tts_provider": "Amazon"}),
                None,
                "voice.tts_provider contradicts voice.tts_language",
            ),
            (
                serde_json::json!({"languages": [{"code": "multi", "transcription_provider": "Google", "voice": "x"}]}),
                None,
                "voice.languages[0].transcription_provider contradicts voice.languages[0].code",
            ),
            (
                serde_json::json!({"languages": [{"code": "multi", "tts_provider": "Google"}]}),
                None,
                "voice.languages[0].tts_provider contradicts voice.languages[0].code",
            ),
            (
                serde_json::json!({"tts_provider": "Google", "elevenlabs_text_normalization": "on"}),
                None,
                "voice.elevenlabs_text_normalization contradicts voice.tts_provider",
            ),
            (
                serde_json::json!({"interruptible": "dtmf", "interrupt_sensitivity": "low"}),
                None,
                "voice.interrupt_sensitivity contradicts voice.interruptible",
            ),
            (
                serde_json::json!({"welcome_greeting_interruptible": "none"}),
                None,
                "voice.welcome_greeting_interruptible contradicts greeting",
            ),
        ];
        for (json, greeting, message) in cases {
            let error = voice(json.clone())
                .validate(greeting)
                .expect_err("refused")
                .to_string();
            assert!(error.starts_with(message), "{json}: {error}");
        }
    }

    #[test]
    fn multi_is_accepted_with_the_providers_that_offer_it() {
        for json in [
            serde_json::json!({"language": "multi", "transcription_provider": "Deepgram", "tts_provider": "ElevenLabs", "speech_model": "nova-3-general"}),
            serde_json::json!({"language": "multi"}),
            serde_json::json!({"transcription_language": "multi", "tts_language": "en-US", "tts_provider": "Google", "transcription_provider": "deepgram"}),
            serde_json::json!({"languages": [{"code": "multi", "tts_provider": "ElevenLabs", "voice": "UgBBYS2sOqTuMpoF3BR0", "transcription_provider": "Deepgram", "speech_model": "nova-3-general"}]}),
            serde_json::json!({"elevenlabs_text_normalization": "auto"}),
            serde_json::json!({"interruptible": "speech", "interrupt_sensitivity": "medium"}),
        ] {
            assert_eq!(voice(json.clone()).validate(None), Ok(()), "{json}");
        }
    }

    #[test]
    fn reply_text_options_follow_the_agent() {
        let settings = voice(serde_json::json!({"interruptible": "dtmf", "preemptible": true}));
        assert_eq!(
            settings.text_options(Some("es".into())),
            TextOptions {
                lang: Some("es".into()),
                interruptible: Some(false),
                preemptible: Some(true),
            }
        );
        assert_eq!(
            VoiceSettings::default().text_options(None),
            TextOptions::default()
        );
    }
}
