//! Carrier accounts: which tenant each Twilio or Telnyx account belongs to, read by auth-validator
//! (to verify the carrier's signatures) and by voice-router (to place outbound calls) from the
//! same vars, so an account is described once:
//!
//! - `TWILIO_ACCOUNTS` = `{"AC…": {"tenant_id": "t1", "plan": "pro", "numbers": ["+1…"]}}`, with
//!   secret `TWILIO_AUTH_TOKEN_<AccountSid>` (auth-validator verifies signatures with it;
//!   voice-router authenticates the REST API with it, HTTP Basic).
//! - `TELNYX_ACCOUNTS` = `{"<account id>": {"tenant_id": "t1", "public_key": "<base64>",
//!   "application_sid": "<TeXML application id>", "numbers": [...]}}`, with secret
//!   `TELNYX_API_KEY_<account id>` for voice-router (Bearer), the public key for auth-validator.
//!
//! `numbers` (optional) lists the caller ids an account places calls from; an account without
//! the list places calls from any of its tenant's numbers. Secrets are read by the one secret
//! rule of `crate::config` and never appear in a problem.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::CarrierKind;
use crate::agent::is_e164;
use crate::config::{ConfigIssue, Reader};
use crate::secret::Secret;

/// Var: Twilio accounts (see the module's documentation).
pub const TWILIO_ACCOUNTS: &str = "TWILIO_ACCOUNTS";
/// Secret name prefix: `TWILIO_AUTH_TOKEN_<AccountSid>`.
pub const TWILIO_AUTH_TOKEN_PREFIX: &str = "TWILIO_AUTH_TOKEN_";
/// Var: Telnyx accounts (see the module's documentation).
pub const TELNYX_ACCOUNTS: &str = "TELNYX_ACCOUNTS";
/// Secret name prefix: `TELNYX_API_KEY_<account id>`.
pub const TELNYX_API_KEY_PREFIX: &str = "TELNYX_API_KEY_";
/// Var (voice-router): base URL of Twilio's REST API (tests point it at the emulator).
pub const TWILIO_API_BASE: &str = "TWILIO_API_BASE";
/// Var (voice-router): base URL of Telnyx's REST API.
pub const TELNYX_API_BASE: &str = "TELNYX_API_BASE";
/// Twilio's REST API (<https://www.twilio.com/docs/voice/api/call-resource>).
pub const DEFAULT_TWILIO_API: &str = "https://api.twilio.com";
/// Telnyx's REST API (<https://developers.telnyx.com/api-reference/texml-rest-commands/initiate-an-outbound-call>).
pub const DEFAULT_TELNYX_API: &str = "https://api.telnyx.com";

impl CarrierKind {
    /// The var listing this carrier's accounts.
    pub fn accounts_var(self) -> &'static str {
        match self {
            CarrierKind::Twilio => TWILIO_ACCOUNTS,
            CarrierKind::Telnyx => TELNYX_ACCOUNTS,
        }
    }

    /// The secret holding an account's REST credential (Twilio: the auth token, which also
    /// signs its webhooks; Telnyx: an API key).
    pub fn credential_secret(self, account_id: &str) -> String {
        match self {
            CarrierKind::Twilio => format!("{TWILIO_AUTH_TOKEN_PREFIX}{account_id}"),
            CarrierKind::Telnyx => format!("{TELNYX_API_KEY_PREFIX}{account_id}"),
        }
    }

    /// Whether `id` has the form of this carrier's account ids: Twilio `AC` + 32 hex digits;
    /// Telnyx account ids are UUIDs (`AccountSid` in its TeXML callbacks), taken here as 1 to 64
    /// letters, digits and `-`.
    pub fn is_account_id(self, id: &str) -> bool {
        match self {
            CarrierKind::Twilio => {
                id.len() == 34
                    && id.starts_with("AC")
                    && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
            }
            CarrierKind::Telnyx => {
                !id.is_empty()
                    && id.len() <= 64
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
        }
    }
}

/// One entry of `TWILIO_ACCOUNTS` / `TELNYX_ACCOUNTS`. Each program takes what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountEntry {
    /// The tenant the account's calls belong to.
    pub tenant_id: String,
    /// The tenant's plan (rate-limit policies); `free` when absent.
    #[serde(default)]
    pub plan: Option<String>,
    /// Scopes of a principal this account's signature authenticates.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Caller ids this account places calls from (empty: any of the tenant's numbers).
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Telnyx: the account's webhook public key (base64 Ed25519, from Mission Control).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Telnyx: the TeXML application outbound calls are placed through (`ApplicationSid`).
    #[serde(default)]
    pub application_sid: Option<String>,
}

/// What can be wrong with an account entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountIssue {
    /// A Twilio account SID that is not `AC` followed by 32 hex digits.
    #[error("account SID `{0}` is not AC followed by 32 hex digits")]
    InvalidAccountSid(String),
    /// A Telnyx account id that is not 1 to 64 letters, digits and `-`.
    #[error("account id `{0}` is not 1 to 64 letters, digits and '-'")]
    InvalidAccountId(String),
    /// An account whose `tenant_id` is blank.
    #[error("account {0} has no tenant_id")]
    NoTenant(String),
    /// A `numbers` entry that is not E.164.
    #[error("account {account}: {number:?} is not E.164")]
    BadNumber {
        /// The account.
        account: String,
        /// The entry.
        number: String,
    },
    /// A Telnyx account without a usable `public_key` (32 bytes, base64).
    #[error("account {0} has no public_key of 32 bytes in base64")]
    BadPublicKey(String),
    /// A Telnyx account that places calls without an `application_sid`.
    #[error("account {0} places calls, so it needs application_sid (its TeXML application)")]
    NoApplication(String),
}

/// The valid entries of `carrier`'s accounts var, by account id; every refused entry is a problem
/// of its own and left out.
pub fn entries<D: From<AccountIssue>>(
    reader: &mut Reader<'_, D>,
    carrier: CarrierKind,
) -> Vec<(String, AccountEntry)> {
    let name = carrier.accounts_var();
    let Some(entries) = reader.json::<BTreeMap<String, AccountEntry>>(name) else {
        return Vec::new();
    };
    if entries.is_empty() {
        reader.problem(name, ConfigIssue::Empty);
    }
    let mut valid = Vec::new();
    for (id, entry) in entries {
        let issue = if !carrier.is_account_id(&id) {
            Some(match carrier {
                CarrierKind::Twilio => AccountIssue::InvalidAccountSid(id.clone()),
                CarrierKind::Telnyx => AccountIssue::InvalidAccountId(id.clone()),
            })
        } else if entry.tenant_id.trim().is_empty() {
            Some(AccountIssue::NoTenant(id.clone()))
        } else {
            entry
                .numbers
                .iter()
                .find(|number| !is_e164(number))
                .map(|number| AccountIssue::BadNumber {
                    account: id.clone(),
                    number: number.clone(),
                })
        };
        match issue {
            Some(issue) => reader.problem(name, ConfigIssue::Invalid(D::from(issue))),
            None => valid.push((id, entry)),
        }
    }
    valid
}

/// An account voice-router places outbound calls through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundAccount {
    /// Twilio or Telnyx.
    pub carrier: CarrierKind,
    /// The account id (Twilio `AccountSid`, Telnyx account id).
    pub account_id: String,
    /// The tenant allowed to place calls through it.
    pub tenant_id: String,
    /// Caller ids it places calls from (empty: any of the tenant's numbers).
    pub numbers: Vec<String>,
    /// Telnyx's TeXML application id.
    pub application_id: Option<String>,
    /// The REST credential (Twilio auth token, Telnyx API key).
    pub credential: Secret,
    /// The REST API's base URL, without a trailing slash.
    pub api_base: String,
}

impl OutboundAccount {
    /// The rate-limit key pacing this account's calls per second.
    pub fn pacing_key(&self) -> String {
        format!("{}:{}", self.carrier.as_str(), self.account_id)
    }
}

/// Every account that can place calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundAccounts {
    accounts: Vec<OutboundAccount>,
}

impl OutboundAccounts {
    /// Reads both carriers' accounts; an account places calls when its credential secret is
    /// set (an account listed only for signatures needs none).
    pub fn read<D: From<AccountIssue>>(reader: &mut Reader<'_, D>) -> Self {
        let twilio_api = reader
            .https_url(TWILIO_API_BASE)
            .unwrap_or_else(|| DEFAULT_TWILIO_API.to_owned());
        let telnyx_api = reader
            .https_url(TELNYX_API_BASE)
            .unwrap_or_else(|| DEFAULT_TELNYX_API.to_owned());
        let mut accounts = Vec::new();
        for carrier in CarrierKind::ALL {
            let api_base = match carrier {
                CarrierKind::Twilio => &twilio_api,
                CarrierKind::Telnyx => &telnyx_api,
            };
            for (id, entry) in entries(reader, carrier) {
                let Some(credential) = reader.secret(&carrier.credential_secret(&id), 1) else {
                    continue;
                };
                if carrier == CarrierKind::Telnyx && entry.application_sid.is_none() {
                    reader.problem(
                        carrier.accounts_var(),
                        ConfigIssue::Invalid(D::from(AccountIssue::NoApplication(id))),
                    );
                    continue;
                }
                accounts.push(OutboundAccount {
                    carrier,
                    account_id: id,
                    tenant_id: entry.tenant_id,
                    numbers: entry.numbers,
                    application_id: entry.application_sid,
                    credential,
                    api_base: api_base.trim_end_matches('/').to_owned(),
                });
            }
        }
        Self { accounts }
    }

    /// The account placing `tenant`'s call from `caller_id`: the first of the tenant's accounts
    /// that lists the number, else the first that lists none; `None` when no account may.
    pub fn for_call(&self, tenant: &str, caller_id: &str) -> Option<&OutboundAccount> {
        let tenants = || self.accounts.iter().filter(|a| a.tenant_id == tenant);
        tenants()
            .find(|account| account.numbers.iter().any(|number| number == caller_id))
            .or_else(|| tenants().find(|account| account.numbers.is_empty()))
    }

    /// Whether any account can place calls.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// How many accounts can place calls.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::ConfigError;

    const TWILIO: &str = "AC0123456789abcdef0123456789abcdef";
    const TELNYX: &str = "f5586561-8ff0-4291-a51b-c7dfe4139ff9";

    fn read(pairs: &[(&str, &str)]) -> Result<OutboundAccounts, ConfigError<AccountIssue>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |name: &str| map.get(name).cloned();
        let mut reader: Reader<'_, AccountIssue> = Reader::new(&lookup);
        let accounts = OutboundAccounts::read(&mut reader);
        reader.finish().map(|()| accounts)
    }

    #[test]
    fn accounts_with_their_credentials_place_calls() {
        let twilio = format!(
            r#"{{"{TWILIO}":{{"tenant_id":"t1","numbers":["+14155550100"]}},"AC{}":{{"tenant_id":"t1"}}}}"#,
            "f".repeat(32)
        );
        let telnyx =
            format!(r#"{{"{TELNYX}":{{"tenant_id":"t2","application_sid":"1234567890"}}}}"#);
        let accounts = read(&[
            (TWILIO_ACCOUNTS, &twilio),
            (&format!("TWILIO_AUTH_TOKEN_{TWILIO}"), "token-1\n"),
            (TELNYX_ACCOUNTS, &telnyx),
            (&format!("TELNYX_API_KEY_{TELNYX}"), "KEY0123"),
            (TELNYX_API_BASE, "http://127.0.0.1:9000/"),
        ])
        .expect("valid");
        // The second Twilio account has no token: it verifies signatures only.
        assert_eq!(accounts.len(), 2);
        let placing = accounts.for_call("t1", "+14155550100").expect("listed");
        assert_eq!(placing.account_id, TWILIO);
        assert_eq!(placing.credential.expose(), b"token-1");
        assert_eq!(placing.api_base, DEFAULT_TWILIO_API);
        assert_eq!(placing.pacing_key(), format!("twilio:{TWILIO}"));
        assert_eq!(accounts.for_call("t1", "+14155550199"), None);
        let telnyx = accounts
            .for_call("t2", "+442071838750")
            .expect("any number");
        assert_eq!(
            (telnyx.carrier, telnyx.api_base.as_str()),
            (CarrierKind::Telnyx, "http://127.0.0.1:9000")
        );
        assert_eq!(telnyx.application_id.as_deref(), Some("1234567890"));
        assert_eq!(accounts.for_call("t3", "+14155550100"), None);
    }

    #[test]
    fn every_bad_entry_is_a_problem_and_no_secret_is_shown() {
        let twilio = r#"{"ACnothex":{"tenant_id":"t"},"AC0123456789abcdef0123456789abcdef":{"tenant_id":" "}}"#;
        let telnyx = format!(
            r#"{{"bad id!":{{"tenant_id":"t"}},"{TELNYX}":{{"tenant_id":"t","numbers":["4155550100"]}},"x-1":{{"tenant_id":"t"}}}}"#
        );
        let error = read(&[
            (TWILIO_ACCOUNTS, twilio),
            (TELNYX_ACCOUNTS, &telnyx),
            ("TELNYX_API_KEY_x-1", "super-secret-key"),
        ])
        .expect_err("invalid");
        let issues: Vec<String> = error.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            issues,
            [
                "TWILIO_ACCOUNTS: account AC0123456789abcdef0123456789abcdef has no tenant_id",
                "TWILIO_ACCOUNTS: account SID `ACnothex` is not AC followed by 32 hex digits",
                "TELNYX_ACCOUNTS: account id `bad id!` is not 1 to 64 letters, digits and '-'",
                "TELNYX_ACCOUNTS: account f5586561-8ff0-4291-a51b-c7dfe4139ff9: \"4155550100\" is not E.164",
                "TELNYX_ACCOUNTS: account x-1 places calls, so it needs application_sid (its TeXML application)",
            ]
        );
        assert!(!error.to_string().contains("super-secret-key"));
        let empty = read(&[(TELNYX_ACCOUNTS, "{}")]).expect_err("empty");
        assert_eq!(empty.problems[0].issue, ConfigIssue::Empty);
    }

    #[test]
    fn no_accounts_is_no_outbound() {
        assert!(read(&[]).expect("valid").is_empty());
    }
}
