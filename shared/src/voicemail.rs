//! Answering machines: what the agent does when answering-machine detection reports on an
//! outbound call, and how long its voicemail message takes to say.
//!
//! - A person (or a detection that could not tell) talks to the agent: nothing changes.
//! - A machine whose greeting has ended (`detect_message_end`: `machine_end_*`) gets the agent's
//!   `voicemail_message`, then the call ends (`voicemail_left`).
//! - Any other machine — detected as its greeting started (`detect`), a fax, or an agent with no
//!   voicemail message — is hung up on (`machine_answered`): a message said over a greeting is
//!   not recorded whole.
//!
//! ConversationRelay does not say when the carrier finished speaking a `text`, so the relay is
//! ended once the message has had time to be said ([`speaking_ms`]).

use crate::carrier::AnsweredBy;

/// `end_reason` (and `handoffData.reason`) of a call the agent left a voicemail on.
pub const VOICEMAIL_LEFT: &str = "voicemail_left";
/// `end_reason` (and `handoffData.reason`) of a call hung up on a machine.
pub const MACHINE_ANSWERED: &str = "machine_answered";

/// Time a text-to-speech voice takes per word (150 words a minute).
pub const MS_PER_WORD: u64 = 400;
/// Time before the first word is heard.
pub const LEAD_MS: u64 = 1_000;
/// Longest wait for a message to be said.
pub const MAX_SPEAKING_MS: u64 = 120_000;

/// What to do about a detection result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnAnswer {
    /// Go on with the conversation.
    Converse,
    /// Say this message, then end the call.
    LeaveMessage(String),
    /// End the call now.
    HangUp,
}

/// The rule of the module's documentation.
pub fn on_answer(answered_by: AnsweredBy, voicemail_message: Option<&str>) -> OnAnswer {
    if !answered_by.is_machine() {
        return OnAnswer::Converse;
    }
    match voicemail_message {
        Some(message) if answered_by.greeting_ended() => OnAnswer::LeaveMessage(message.to_owned()),
        _ => OnAnswer::HangUp,
    }
}

/// How long `text` takes to say, with the lead before the first word; at most
/// [`MAX_SPEAKING_MS`].
pub fn speaking_ms(text: &str) -> u64 {
    let words = u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX);
    LEAD_MS
        .saturating_add(words.saturating_mul(MS_PER_WORD))
        .min(MAX_SPEAKING_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_finding_leads_to() {
        let message = Some("Hi, this is Ava. Please call us back.");
        let leave = OnAnswer::LeaveMessage("Hi, this is Ava. Please call us back.".into());
        let cases = [
            (AnsweredBy::Human, message, OnAnswer::Converse),
            (AnsweredBy::Unknown, message, OnAnswer::Converse),
            (AnsweredBy::MachineEndBeep, message, leave.clone()),
            (AnsweredBy::MachineEndSilence, message, leave.clone()),
            (AnsweredBy::MachineEndOther, message, leave),
            (AnsweredBy::MachineEndBeep, None, OnAnswer::HangUp),
            (AnsweredBy::MachineStart, message, OnAnswer::HangUp),
            (AnsweredBy::Fax, message, OnAnswer::HangUp),
        ];
        for (answered_by, message, expected) in cases {
            assert_eq!(on_answer(answered_by, message), expected, "{answered_by:?}");
        }
    }

    #[test]
    fn speaking_time_grows_with_the_words_and_is_bounded() {
        assert_eq!(speaking_ms(""), LEAD_MS);
        assert_eq!(
            speaking_ms("Please call us back."),
            LEAD_MS + 4 * MS_PER_WORD
        );
        assert_eq!(speaking_ms(&"word ".repeat(10_000)), MAX_SPEAKING_MS);
    }
}
