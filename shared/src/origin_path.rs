//! The origin's API paths, declared once: the origin's router mounts the patterns (axum's
//! `{param}` syntax), and voice-router builds the same paths for one call, agent or number with
//! the functions beside them, so the two sides cannot drift apart.

use crate::public_route::path_segment;

/// `POST`: starts a call; `GET`: a page of calls (`crate::call_list`).
pub const CALLS: &str = "/v1/calls";
/// `GET`: one call.
pub const CALL: &str = "/v1/calls/{id}";
/// `POST`: ends a call.
pub const CALL_END: &str = "/v1/calls/{id}/end";
/// `POST`: one turn in, the reply out as Server-Sent Events; `GET`: the turns so far.
pub const CALL_TURNS: &str = "/v1/calls/{id}/turns";
/// `GET`: the call's events, its history then live (Server-Sent Events,
/// `crate::call_event::stream`).
pub const CALL_EVENTS: &str = "/v1/calls/{id}/events";
/// `GET`: every live event of the tenant's calls (Server-Sent Events).
pub const EVENTS: &str = "/v1/events";
/// `POST`: what answering-machine detection found (from the edge's `CallSession`).
pub const CALL_ANSWERED_BY: &str = "/v1/calls/{id}/answered-by";
/// `GET` (WebSocket): the call's ConversationRelay socket.
pub const CALL_RELAY: &str = "/v1/calls/{id}/relay";
/// `GET`: a page of agents.
pub const AGENTS: &str = "/v1/agents";
/// `PUT`, `GET`, `DELETE`: one agent.
pub const AGENT: &str = "/v1/agents/{id}";
/// `GET`: the agent answering calls to a phone number.
pub const PHONE_NUMBER_AGENT: &str = "/v1/phone-numbers/{number}/agent";
/// `GET`: usage between two dates.
pub const USAGE: &str = "/v1/usage";
/// `GET`: the tenant's signing secret for tool calls and webhooks.
pub const SIGNING_SECRET: &str = "/v1/signing-secret";
/// `POST`: replaces the tenant's signing secret.
pub const SIGNING_SECRET_ROTATE: &str = "/v1/signing-secret/rotate";

/// `POST`: a new webhook endpoint; `GET`: the tenant's endpoints.
pub const WEBHOOKS: &str = "/v1/webhooks";
/// `GET`, `PATCH`, `DELETE`: one endpoint.
pub const WEBHOOK: &str = "/v1/webhooks/{id}";
/// `GET`: an endpoint's delivery log.
pub const WEBHOOK_DELIVERIES: &str = "/v1/webhooks/{id}/deliveries";
/// `POST`: one delivery due again.
pub const WEBHOOK_DELIVERY_RETRY: &str = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry";

/// [`CALL`] for `id` (an [`is_resource_id`](crate::identifier::is_resource_id)).
pub fn call(id: &str) -> String {
    fill(CALL, id)
}

/// [`CALL_END`] for `id`.
pub fn call_end(id: &str) -> String {
    fill(CALL_END, id)
}

/// [`CALL_TURNS`] for `id`.
pub fn call_turns(id: &str) -> String {
    fill(CALL_TURNS, id)
}

/// [`CALL_EVENTS`] for `id`.
pub fn call_events(id: &str) -> String {
    fill(CALL_EVENTS, id)
}

/// [`CALL_ANSWERED_BY`] for `id`.
pub fn call_answered_by(id: &str) -> String {
    fill(CALL_ANSWERED_BY, id)
}

/// [`CALL_RELAY`] for `id`.
pub fn call_relay(id: &str) -> String {
    fill(CALL_RELAY, id)
}

/// [`AGENT`] for `id`.
pub fn agent(id: &str) -> String {
    fill(AGENT, id)
}

/// [`PHONE_NUMBER_AGENT`] for an E.164 `number` (its `+` percent-encoded).
pub fn phone_number_agent(number: &str) -> String {
    fill(PHONE_NUMBER_AGENT, &path_segment(number))
}

/// `pattern` with its one `{param}` replaced by `value`.
fn fill(pattern: &str, value: &str) -> String {
    match pattern.split_once('{').zip(pattern.split_once('}')) {
        Some(((before, _), (_, after))) => format!("{before}{value}{after}"),
        None => pattern.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_their_pattern() {
        assert_eq!(call("c1"), "/v1/calls/c1");
        assert_eq!(call_end("c1"), "/v1/calls/c1/end");
        assert_eq!(call_turns("c1"), "/v1/calls/c1/turns");
        assert_eq!(call_events("c1"), "/v1/calls/c1/events");
        assert_eq!(call_relay("CA01"), "/v1/calls/CA01/relay");
        assert_eq!(call_answered_by("c1"), "/v1/calls/c1/answered-by");
        assert_eq!(agent("front_desk"), "/v1/agents/front_desk");
        assert_eq!(
            phone_number_agent("+14155550100"),
            "/v1/phone-numbers/%2B14155550100/agent"
        );
    }

    #[test]
    fn every_pattern_has_at_most_one_parameter_under_its_collection() {
        for pattern in [
            CALL,
            CALL_END,
            CALL_TURNS,
            CALL_EVENTS,
            CALL_RELAY,
            CALL_ANSWERED_BY,
        ] {
            assert!(pattern.starts_with(CALLS), "{pattern}");
        }
        assert!(AGENT.starts_with(AGENTS));
        for pattern in [
            CALLS,
            CALL,
            CALL_END,
            CALL_TURNS,
            CALL_EVENTS,
            CALL_RELAY,
            CALL_ANSWERED_BY,
            AGENTS,
            AGENT,
            PHONE_NUMBER_AGENT,
            USAGE,
            EVENTS,
        ] {
            assert!(pattern.matches('{').count() <= 1, "{pattern}");
            assert!(!fill(pattern, "x").contains(['{', '}']), "{pattern}");
        }
    }
}
