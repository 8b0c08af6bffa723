//! Which Claude model answers, where, and what to do when one fails: the origin's Bedrock
//! policy, free of the SDK so it can be tested and shared.

/// The seed's fallback chain (Claude 3.7 Sonnet, 3.5 Sonnet v2, 3.5 Haiku, 3 Haiku), as
/// foundation-model ids; [`default_chain`] turns them into the region's inference profiles.
pub const SEED_MODELS: [&str; 4] = [
    "anthropic.claude-3-7-sonnet-20250219-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-haiku-20240307-v1:0",
];

/// Bedrock region used when the compute region is unknown.
pub const DEFAULT_BEDROCK_REGION: &str = "us-east-1";

/// The Bedrock region for a compute (ECS) region: the Americas → `us-east-1`, Europe and
/// nearby → `eu-west-1`, Asia Pacific → the same region; anything else → `us-east-1`.
pub fn bedrock_region_for(compute_region: &str) -> &str {
    let region = compute_region.trim();
    let prefix = region.split('-').next().unwrap_or("");
    match prefix {
        "us" | "ca" | "sa" | "mx" => "us-east-1",
        "eu" | "il" | "me" | "af" => "eu-west-1",
        "ap" => region,
        _ => DEFAULT_BEDROCK_REGION,
    }
}

/// The cross-region inference profile prefix for a Bedrock region (`us.`, `eu.`, `apac.`).
pub fn inference_profile_prefix(bedrock_region: &str) -> &'static str {
    match bedrock_region.split('-').next().unwrap_or("") {
        "eu" => "eu.",
        "ap" => "apac.",
        _ => "us.",
    }
}

/// The seed chain as inference profiles of `bedrock_region` (Claude 3.7 Sonnet and 3.5 Haiku
/// are only served through profiles).
pub fn default_chain(bedrock_region: &str) -> Vec<String> {
    let prefix = inference_profile_prefix(bedrock_region);
    SEED_MODELS
        .iter()
        .map(|model| format!("{prefix}{model}"))
        .collect()
}

/// Whether Bedrock prompt caching (`cachePoint`) is available for the model. Claude 3.7
/// Sonnet, 3.5 Haiku and the Claude 4 family; others reject or ignore cache points.
pub fn supports_prompt_caching(model_id: &str) -> bool {
    const CACHING: [&str; 5] = [
        "claude-3-7-sonnet",
        "claude-3-5-haiku",
        "claude-sonnet-4",
        "claude-opus-4",
        "claude-haiku-4",
    ];
    CACHING.iter().any(|family| model_id.contains(family))
}

/// How a model call failed, SDK-independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFailure {
    /// `ThrottlingException` / `ServiceQuotaExceededException` / HTTP 429.
    Throttled,
    /// `ModelNotReadyException`.
    NotReady,
    /// `ModelTimeoutException`, or no first token within the origin's own deadline.
    Timeout,
    /// `InternalServerException`, `ModelErrorException` or another 5xx.
    ServerError,
    /// `ServiceUnavailableException` (503).
    Unavailable,
    /// The request never got an answer: connection refused or reset, DNS, TLS.
    Connection,
    /// `ResourceNotFoundException` / `AccessDeniedException`: this model is not enabled here.
    ModelUnavailable,
    /// `ValidationException` and other 4xx: the request itself is wrong.
    Invalid,
    /// An exception inside the event stream (`modelStreamErrorException` and friends).
    StreamError,
    /// The stream went quiet for longer than the stall deadline after it started.
    Stalled,
}

impl ModelFailure {
    /// Stable name for logs, metrics and [`crate::turn::Fallback::reason`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::NotReady => "model_not_ready",
            Self::Timeout => "timeout",
            Self::ServerError => "server_error",
            Self::Unavailable => "unavailable",
            Self::Connection => "connection",
            Self::ModelUnavailable => "model_unavailable",
            Self::Invalid => "invalid_request",
            Self::StreamError => "stream_error",
            Self::Stalled => "stalled",
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Try the next model of the chain.
    NextModel,
    /// Try the same model once more (a connection blip, not the model's fault).
    SameModelAgain,
    /// Stop: report the failure to the caller.
    GiveUp,
}

/// The fallback rule. Once a token reached the caller the reply cannot switch models
/// mid-sentence, so only failures before the first token recover.
pub fn recovery(failure: ModelFailure, token_sent: bool, retried_same_model: bool) -> Recovery {
    if token_sent {
        return Recovery::GiveUp;
    }
    match failure {
        ModelFailure::Connection if !retried_same_model => Recovery::SameModelAgain,
        ModelFailure::Throttled
        | ModelFailure::NotReady
        | ModelFailure::Timeout
        | ModelFailure::ServerError
        | ModelFailure::Unavailable
        | ModelFailure::Connection
        | ModelFailure::ModelUnavailable
        | ModelFailure::StreamError
        | ModelFailure::Stalled => Recovery::NextModel,
        ModelFailure::Invalid => Recovery::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_follows_the_compute_region() {
        let cases = [
            ("us-east-1", "us-east-1"),
            ("us-west-2", "us-east-1"),
            ("ca-central-1", "us-east-1"),
            ("eu-west-2", "eu-west-1"),
            ("eu-central-1", "eu-west-1"),
            ("ap-northeast-1", "ap-northeast-1"),
            ("", "us-east-1"),
            ("local", "us-east-1"),
        ];
        for (compute, bedrock) in cases {
            assert_eq!(bedrock_region_for(compute), bedrock, "{compute}");
        }
    }

    #[test]
    fn the_default_chain_uses_the_regions_inference_profiles() {
        let us = default_chain("us-east-1");
        assert_eq!(us.len(), 4);
        assert_eq!(us[0], "us.anthropic.claude-3-7-sonnet-20250219-v1:0");
        assert_eq!(us[3], "us.anthropic.claude-3-haiku-20240307-v1:0");
        assert!(default_chain("eu-west-1")[0].starts_with("eu.anthropic."));
        assert!(default_chain("ap-southeast-2")[0].starts_with("apac.anthropic."));
    }

    #[test]
    fn prompt_caching_by_family() {
        assert!(supports_prompt_caching(
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
        ));
        assert!(supports_prompt_caching(
            "anthropic.claude-3-5-haiku-20241022-v1:0"
        ));
        assert!(!supports_prompt_caching(
            "anthropic.claude-3-haiku-20240307-v1:0"
        ));
        assert!(!supports_prompt_caching(
            "anthropic.claude-3-5-sonnet-20241022-v2:0"
        ));
    }

    #[test]
    fn only_failures_before_the_first_token_fall_back() {
        use ModelFailure::*;
        for failure in [
            Throttled,
            NotReady,
            Timeout,
            ServerError,
            Unavailable,
            ModelUnavailable,
            StreamError,
            Stalled,
        ] {
            assert_eq!(
                recovery(failure, false, false),
                Recovery::NextModel,
                "{failure:?}"
            );
            assert_eq!(
                recovery(failure, true, false),
                Recovery::GiveUp,
                "{failure:?}"
            );
        }
        assert_eq!(recovery(Connection, false, false), Recovery::SameModelAgain);
        assert_eq!(recovery(Connection, false, true), Recovery::NextModel);
        assert_eq!(recovery(Invalid, false, false), Recovery::GiveUp);
    }
}
