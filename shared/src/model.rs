//! Which Claude model answers, where, and what to do when one fails: the origin's Bedrock
//! policy, free of the SDK so it can be tested and shared.
//!
//! The catalogue below comes from the documentation, checked November 2026:
//! - Anthropic, "Claude on Amazon Bedrock" (the InvokeModel/Converse integration this origin
//!   uses, with each model's Bedrock id and which `global`/`us`/`eu`/`jp`/`apac` cross-region
//!   profiles exist): <https://platform.claude.com/docs/en/build-with-claude/claude-on-amazon-bedrock-legacy>
//! - AWS, model cards (ids, Converse support, lifecycle):
//!   <https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-haiku-4-5.html>,
//!   and "Supported Regions and models for inference profiles":
//!   <https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html>
//! - Anthropic, "Model IDs and versions" (dateless ids from the 4.6 generation):
//!   <https://platform.claude.com/docs/en/about-claude/models/model-ids-and-versions>
//!
//! Newer models (Claude Opus 4.7 and later, Haiku 5.5) are left out of the default chain: Opus
//! 4.7 has no ARN-versioned id for Converse, and Haiku 5.5 runs adaptive thinking by default
//! and refuses `temperature`/`top_p`, which this origin's Converse request sends
//! (<https://platform.claude.com/docs/en/models/haiku-5-5/migration-guide>). A deployment can
//! still name any of them in `BEDROCK_DEFAULT_MODELS` or an agent's `model`.

/// A geography with its own cross-region inference profiles: the id prefix routes the request
/// to any region of that geography (`Global`: any commercial region).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Geography {
    /// `global.`: any commercial region.
    Global,
    /// `us.`: US regions.
    Us,
    /// `eu.`: EU regions.
    Eu,
    /// `jp.`: Tokyo and Osaka.
    Jp,
    /// `apac.`: Asia Pacific regions.
    Apac,
}

impl Geography {
    /// The inference-profile id prefix, dot included.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Global => "global.",
            Self::Us => "us.",
            Self::Eu => "eu.",
            Self::Jp => "jp.",
            Self::Apac => "apac.",
        }
    }

    /// The geography a Bedrock region belongs to; `None` for regions without a geographic
    /// profile of their own (Canada, South America, the Middle East, Africa, GovCloud), which
    /// use the global profile.
    pub fn of_region(bedrock_region: &str) -> Option<Self> {
        let region = bedrock_region.trim();
        if region.starts_with("us-gov-") {
            return None;
        }
        match region.split('-').next().unwrap_or("") {
            "us" => Some(Self::Us),
            "eu" => Some(Self::Eu),
            "ap" if matches!(region, "ap-northeast-1" | "ap-northeast-3") => Some(Self::Jp),
            "ap" => Some(Self::Apac),
            _ => None,
        }
    }
}

/// A model of the catalogue: its Bedrock id and the cross-region profiles it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogModel {
    /// Human name.
    pub name: &'static str,
    /// The foundation-model id.
    pub id: &'static str,
    /// Geographies with a cross-region profile for it.
    pub profiles: &'static [Geography],
}

use Geography::{Apac, Eu, Global, Jp, Us};

/// Claude Sonnet 4.6: the best balance of speed and intelligence (no `apac.` profile).
pub const CLAUDE_SONNET_4_6: CatalogModel = CatalogModel {
    name: "Claude Sonnet 4.6",
    id: "anthropic.claude-sonnet-4-6",
    profiles: &[Global, Us, Eu, Jp],
};
/// Claude Haiku 4.5: the fastest current Claude on Converse.
pub const CLAUDE_HAIKU_4_5: CatalogModel = CatalogModel {
    name: "Claude Haiku 4.5",
    id: "anthropic.claude-haiku-4-5-20251001-v1:0",
    profiles: &[Global, Us, Eu, Jp],
};
/// Claude Sonnet 4.5 (no `apac.` profile).
pub const CLAUDE_SONNET_4_5: CatalogModel = CatalogModel {
    name: "Claude Sonnet 4.5",
    id: "anthropic.claude-sonnet-4-5-20250929-v1:0",
    profiles: &[Global, Us, Eu, Jp],
};

/// The default chain, best first: Sonnet 4.6 answers; on throttling or unavailability before
/// its first token Haiku 4.5 (another capacity pool, and the fastest), then Sonnet 4.5.
pub const DEFAULT_MODELS: [CatalogModel; 3] =
    [CLAUDE_SONNET_4_6, CLAUDE_HAIKU_4_5, CLAUDE_SONNET_4_5];

/// The project's original seed chain, kept as optional entries a deployment may still name in
/// `BEDROCK_DEFAULT_MODELS` or an agent's `model` where its account still has them. All four
/// are legacy on Bedrock: Claude 3.5 Haiku reached end of life on 2026-06-19 and Claude 3
/// Haiku on 2026-09-10 in most regions (AWS model cards), Claude 3.7 Sonnet and 3.5 Sonnet v2
/// are marked deprecated by Anthropic. Not used unless named.
pub const SEED_MODELS: [CatalogModel; 4] = [
    CatalogModel {
        name: "Claude 3.7 Sonnet (legacy)",
        id: "anthropic.claude-3-7-sonnet-20250219-v1:0",
        profiles: &[Us, Eu, Apac],
    },
    CatalogModel {
        name: "Claude 3.5 Sonnet v2 (legacy)",
        id: "anthropic.claude-3-5-sonnet-20241022-v2:0",
        profiles: &[Us, Apac],
    },
    CatalogModel {
        name: "Claude 3.5 Haiku (end of life)",
        id: "anthropic.claude-3-5-haiku-20241022-v1:0",
        profiles: &[Us],
    },
    CatalogModel {
        name: "Claude 3 Haiku (end of life)",
        id: "anthropic.claude-3-haiku-20240307-v1:0",
        profiles: &[Us, Eu, Apac],
    },
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

/// The id to call `model` by from `bedrock_region`: the region's geographic profile when the
/// model has one (a request stays in its geography, which matters for data residency); for
/// Japan, the Asia Pacific profile next; then the global profile; the bare model id when the
/// model has no profile that fits (an in-region call).
pub fn inference_profile(model: &CatalogModel, bedrock_region: &str) -> String {
    let geography = Geography::of_region(bedrock_region);
    let preference = match geography {
        Some(Jp) => [Some(Jp), Some(Apac), Some(Global)],
        Some(other) => [Some(other), Some(Global), None],
        None => [Some(Global), None, None],
    };
    preference
        .into_iter()
        .flatten()
        .find(|wanted| model.profiles.contains(wanted))
        .map_or_else(
            || model.id.to_owned(),
            |found| format!("{}{}", found.prefix(), model.id),
        )
}

/// The default chain as the ids to call from `bedrock_region`.
pub fn default_chain(bedrock_region: &str) -> Vec<String> {
    DEFAULT_MODELS
        .iter()
        .map(|model| inference_profile(model, bedrock_region))
        .collect()
}

/// Whether Bedrock serves `performanceConfig.latency = optimized` for the model. AWS lists
/// Claude 3.5 Haiku, Amazon Nova Pro and Llama 3.1 70B/405B (through their `us.` profiles in
/// us-east-1/us-east-2/us-west-2), and no current Claude model:
/// <https://docs.aws.amazon.com/bedrock/latest/userguide/latency-optimized-inference.html>.
/// Asking for it elsewhere is a `ValidationException`, so the origin sends it only to these
/// models and the standard latency to the rest of a chain.
pub fn supports_latency_optimized(model_id: &str) -> bool {
    const OPTIMIZED: [&str; 4] = [
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "amazon.nova-pro-v1:0",
        "meta.llama3-1-70b-instruct-v1:0",
        "meta.llama3-1-405b-instruct-v1:0",
    ];
    OPTIMIZED.iter().any(|id| model_id.ends_with(id))
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
    /// The model kept calling tools past the turn's bound on tool rounds.
    ToolRounds,
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
            Self::ToolRounds => "tool_rounds_exceeded",
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
        ModelFailure::Invalid | ModelFailure::ToolRounds => Recovery::GiveUp,
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
    fn the_default_chain_is_todays_claude_on_the_regions_profiles() {
        assert_eq!(
            default_chain("us-east-1"),
            vec![
                "us.anthropic.claude-sonnet-4-6",
                "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ]
        );
        assert_eq!(
            default_chain("eu-west-1")[0],
            "eu.anthropic.claude-sonnet-4-6"
        );
        assert_eq!(
            default_chain("ap-northeast-1")[1],
            "jp.anthropic.claude-haiku-4-5-20251001-v1:0"
        );
        // No `apac.` profile for today's models: Sydney and Singapore go global.
        assert_eq!(
            default_chain("ap-southeast-2")[0],
            "global.anthropic.claude-sonnet-4-6"
        );
    }

    #[test]
    fn profile_prefixes_follow_the_region_and_what_the_model_offers() {
        let seed_37 = &SEED_MODELS[0]; // us, eu, apac
        let seed_35_haiku = &SEED_MODELS[2]; // us only
        let only_global = CatalogModel {
            name: "g",
            id: "anthropic.g",
            profiles: &[Global],
        };
        let none = CatalogModel {
            name: "n",
            id: "anthropic.n",
            profiles: &[],
        };
        let cases: [(&CatalogModel, &str, &str); 16] = [
            (&CLAUDE_SONNET_4_6, "us-east-1", "us."),
            (&CLAUDE_SONNET_4_6, "us-west-2", "us."),
            (&CLAUDE_SONNET_4_6, "eu-central-1", "eu."),
            (&CLAUDE_SONNET_4_6, "ap-northeast-1", "jp."),
            (&CLAUDE_SONNET_4_6, "ap-northeast-3", "jp."),
            (&CLAUDE_SONNET_4_6, "ap-south-1", "global."),
            (&CLAUDE_SONNET_4_6, "ca-central-1", "global."),
            (&CLAUDE_SONNET_4_6, "sa-east-1", "global."),
            (&CLAUDE_SONNET_4_6, "us-gov-west-1", "global."),
            (seed_37, "ap-southeast-1", "apac."),
            (seed_37, "ap-northeast-1", "apac."),
            (seed_37, "sa-east-1", ""),
            (seed_35_haiku, "eu-west-1", ""),
            (&only_global, "eu-west-3", "global."),
            (&only_global, "ap-northeast-1", "global."),
            (&none, "us-east-1", ""),
        ];
        for (model, region, prefix) in cases {
            assert_eq!(
                inference_profile(model, region),
                format!("{prefix}{}", model.id),
                "{} from {region}",
                model.name
            );
        }
        assert_eq!(Geography::of_region("local"), None);
    }

    #[test]
    fn latency_optimized_only_where_bedrock_offers_it() {
        assert!(supports_latency_optimized(
            "us.anthropic.claude-3-5-haiku-20241022-v1:0"
        ));
        assert!(supports_latency_optimized("us.amazon.nova-pro-v1:0"));
        for model in DEFAULT_MODELS {
            assert!(!supports_latency_optimized(model.id), "{}", model.name);
        }
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
