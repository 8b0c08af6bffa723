//! Which language a call speaks, and what to tell the carrier when the caller changes it.
//!
//! The carrier reports the language of every transcript (`prompt.lang`). The rule, applied
//! before each reply:
//! - The session's text-to-speech language starts as the agent's (`tts_language`, else
//!   `language`); an agent that sets none adopts the caller's first language silently (the
//!   carrier's default was in use, so nothing needs switching).
//! - A caller who keeps to the session's language changes nothing. Languages match when equal,
//!   or when one is a bare primary tag (`es`, which is all `multi` detection reports) and the
//!   other carries the same primary tag (`es-ES`).
//! - A caller who switches to a language the agent configured as a `<Language>` (or back to
//!   the agent's own language) gets a `language` message: text-to-speech (and transcription,
//!   unless it is `multi`, which keeps detecting) switch to it for the rest of the call.
//! - A caller who switches to a language the agent did not configure gets replies whose `text`
//!   carries `lang`, so that text is spoken in the caller's language while the session stays.
//! - With text-to-speech in `multi` (ElevenLabs detects the language of each text), nothing is
//!   sent at all.
//!
//! Messages: <https://www.twilio.com/docs/voice/conversationrelay/websocket-messages>.

use crate::agent::VoiceSettings;

/// Automatic language detection (Deepgram for transcription, ElevenLabs for speech).
pub const MULTI: &str = "multi";

/// A BCP 47 tag as carriers use them (`en`, `en-US`, `zh-Hans-CN`, `cmn-Hans-CN`), or
/// [`MULTI`]: a 2–3 letter primary tag, then subtags of 1–8 letters or digits; at most 35
/// characters.
pub fn is_language_tag(tag: &str) -> bool {
    if tag.eq_ignore_ascii_case(MULTI) {
        return true;
    }
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or("");
    tag.len() <= 35
        && (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|part| {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Whether two tags name the same language for speaking purposes (see the module rule).
pub fn same_language(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let (a_primary, a_rest) = a.split_once('-').unwrap_or((a, ""));
    let (b_primary, b_rest) = b.split_once('-').unwrap_or((b, ""));
    a_primary.eq_ignore_ascii_case(b_primary) && (a_rest.is_empty() || b_rest.is_empty())
}

/// The call's current languages, as the carrier was last told them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanguageSession {
    tts: Option<String>,
    transcription: Option<String>,
}

/// What to do about language before a reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanguagePlan {
    /// Send a `language` message first: (`ttsLanguage`, `transcriptionLanguage` when it changes).
    pub switch: Option<(String, Option<String>)>,
    /// The `lang` of the reply's `text` messages.
    pub text_lang: Option<String>,
}

impl LanguageSession {
    /// The session as the agent's TwiML starts it.
    pub fn new(voice: &VoiceSettings) -> Self {
        Self {
            tts: voice.tts_language().map(str::to_owned),
            transcription: voice.transcription_language().map(str::to_owned),
        }
    }

    /// The text-to-speech language now in effect, when known.
    pub fn tts(&self) -> Option<&str> {
        self.tts.as_deref()
    }

    /// The `lang` of a line the agent wrote in its own language (greeting, reprompt,
    /// goodbye, apology) while the session speaks another: that line is spoken in the agent's.
    pub fn line_lang(&self, voice: &VoiceSettings) -> Option<String> {
        let own = voice
            .tts_language()
            .filter(|l| !l.eq_ignore_ascii_case(MULTI))?;
        match self.tts.as_deref() {
            Some(now) if !now.eq_ignore_ascii_case(MULTI) && !same_language(now, own) => {
                Some(own.to_owned())
            }
            _ => None,
        }
    }

    /// Switches to `code` (one of the agent's languages: the caller changed language, or the
    /// agent's `switch_language` tool was called) and records it; returns the `language`
    /// message's (`ttsLanguage`, `transcriptionLanguage` when it changes: not while transcription
    /// is `multi`, which keeps detecting).
    pub fn switch_to(&mut self, code: &str) -> (String, Option<String>) {
        let code = code.to_owned();
        let transcription = match self.transcription.as_deref() {
            Some(stt) if stt.eq_ignore_ascii_case(MULTI) => None,
            Some(stt) if stt.eq_ignore_ascii_case(&code) => None,
            _ => Some(code.clone()),
        };
        if transcription.is_some() {
            self.transcription.clone_from(&transcription);
        }
        self.tts = Some(code.clone());
        (code, transcription)
    }

    /// Decides (and records) what a reply to a prompt in `caller_lang` needs.
    pub fn plan(&mut self, voice: &VoiceSettings, caller_lang: Option<&str>) -> LanguagePlan {
        let Some(lang) =
            caller_lang.filter(|l| is_language_tag(l) && !l.eq_ignore_ascii_case(MULTI))
        else {
            return LanguagePlan::default();
        };
        let Some(current) = self.tts.as_deref() else {
            self.tts = Some(lang.to_owned());
            return LanguagePlan::default();
        };
        if current.eq_ignore_ascii_case(MULTI) || same_language(current, lang) {
            return LanguagePlan::default();
        }
        // A configured `<Language>`, or the agent's own language to come back to.
        let target = voice
            .languages
            .iter()
            .map(|configured| configured.code.as_str())
            .chain(voice.tts_language())
            .find(|code| !code.eq_ignore_ascii_case(MULTI) && same_language(code, lang));
        match target {
            Some(code) => LanguagePlan {
                switch: Some(self.switch_to(code)),
                text_lang: None,
            },
            None => LanguagePlan {
                switch: None,
                text_lang: Some(lang.to_owned()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::voice::LanguageSettings;

    #[test]
    fn tags() {
        for ok in [
            "en",
            "en-US",
            "es-419",
            "zh-Hans-CN",
            "cmn-Hans-CN",
            "multi",
            "MULTI",
        ] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in [
            "",
            "e",
            "english",
            "en_US",
            "en-",
            "en-toolongsubtag",
            "1n-US",
        ] {
            assert!(!is_language_tag(bad), "{bad}");
        }
        assert!(same_language("en-US", "en-us"));
        assert!(same_language("es", "es-ES"));
        assert!(same_language("es-ES", "es"));
        assert!(!same_language("en-US", "en-GB"));
        assert!(!same_language("es", "en"));
    }

    fn voice(tts: Option<&str>, stt: Option<&str>, languages: &[&str]) -> VoiceSettings {
        VoiceSettings {
            tts_language: tts.map(str::to_owned),
            transcription_language: stt.map(str::to_owned),
            languages: languages
                .iter()
                .map(|code| LanguageSettings {
                    code: (*code).to_owned(),
                    tts_provider: None,
                    voice: Some(format!("{code}-voice")),
                    transcription_provider: None,
                    speech_model: None,
                })
                .collect(),
            ..VoiceSettings::default()
        }
    }

    fn switch(tts: &str, stt: Option<&str>) -> LanguagePlan {
        LanguagePlan {
            switch: Some((tts.to_owned(), stt.map(str::to_owned))),
            text_lang: None,
        }
    }

    fn text(lang: &str) -> LanguagePlan {
        LanguagePlan {
            switch: None,
            text_lang: Some(lang.to_owned()),
        }
    }

    #[test]
    fn the_agents_own_lines_keep_its_language() {
        let voice = voice(Some("en-US"), None, &["es-ES"]);
        let mut session = LanguageSession::new(&voice);
        assert_eq!(session.line_lang(&voice), None);
        session.plan(&voice, Some("es-ES"));
        assert_eq!(session.line_lang(&voice).as_deref(), Some("en-US"));
        let no_language = VoiceSettings::default();
        assert_eq!(
            LanguageSession::new(&no_language).line_lang(&no_language),
            None
        );
    }

    #[test]
    fn an_explicit_switch_is_recorded_like_a_callers() {
        let voice = voice(Some("en-US"), Some("en-US"), &["es-ES"]);
        let mut session = LanguageSession::new(&voice);
        assert_eq!(
            session.switch_to("es-ES"),
            ("es-ES".to_owned(), Some("es-ES".to_owned()))
        );
        assert_eq!(session.tts(), Some("es-ES"));
        assert_eq!(
            session.plan(&voice, Some("es-ES")),
            LanguagePlan::default(),
            "a caller then speaking it changes nothing"
        );
        let multi = voice_with_multi();
        let mut session = LanguageSession::new(&multi);
        assert_eq!(session.switch_to("de-DE"), ("de-DE".to_owned(), None));
    }

    fn voice_with_multi() -> VoiceSettings {
        voice(Some("en-US"), Some("multi"), &["de-DE"])
    }

    #[test]
    fn the_plan_before_each_reply() {
        let none = LanguagePlan::default();
        // (agent tts, agent stt, configured languages, caller's languages in order, plans)
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            &'static [&'static str],
            &'static [Option<&'static str>],
            Vec<LanguagePlan>,
        );
        let cases: Vec<Case> = vec![
            // Same language, or no language reported: nothing.
            (
                Some("en-US"),
                None,
                &[],
                &[Some("en-US"), None, Some("en")],
                vec![none.clone(), none.clone(), none.clone()],
            ),
            // No agent language: the first one heard is adopted silently.
            (
                None,
                None,
                &["es-ES"],
                &[Some("en-US"), Some("es-ES")],
                vec![none.clone(), switch("es-ES", Some("es-ES"))],
            ),
            // A configured language switches text-to-speech and transcription, once.
            (
                Some("en-US"),
                Some("en-US"),
                &["es-ES", "fr-FR"],
                &[Some("es-ES"), Some("es-ES"), Some("fr"), Some("en-US")],
                vec![
                    switch("es-ES", Some("es-ES")),
                    none.clone(),
                    switch("fr-FR", Some("fr-FR")),
                    switch("en-US", Some("en-US")),
                ],
            ),
            // Transcription in multi keeps detecting; only text-to-speech switches.
            (
                Some("en-US"),
                Some("multi"),
                &["de-DE"],
                &[Some("de")],
                vec![switch("de-DE", None)],
            ),
            // An unconfigured language: the text says which language it is in.
            (
                Some("en-US"),
                None,
                &[],
                &[Some("pt-BR"), Some("en-US")],
                vec![text("pt-BR"), none.clone()],
            ),
            (
                Some("en-US"),
                None,
                &["es-ES"],
                &[Some("it-IT")],
                vec![text("it-IT")],
            ),
            // Text-to-speech in multi: the provider detects it.
            (
                Some("multi"),
                Some("multi"),
                &[],
                &[Some("ja")],
                vec![none.clone()],
            ),
            // Garbage from the carrier changes nothing.
            (
                Some("en-US"),
                None,
                &["es-ES"],
                &[Some("??"), Some("multi")],
                vec![none.clone(), none],
            ),
        ];
        for (tts, stt, languages, heard, plans) in cases {
            let voice = voice(tts, stt, languages);
            let mut session = LanguageSession::new(&voice);
            let got: Vec<LanguagePlan> = heard
                .iter()
                .map(|lang| session.plan(&voice, *lang))
                .collect();
            assert_eq!(
                got, plans,
                "{tts:?}/{stt:?} {languages:?} hearing {heard:?}"
            );
        }
    }
}
