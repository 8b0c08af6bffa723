//! One trace per call: the origin's `tracing` spans exported over OTLP/HTTP when an endpoint is
//! configured (`config::TracesConfig`), parented on the edge's W3C `traceparent`.
//!
//! Spans (names are stable; docs/operations.md lists them): `request` (every HTTP request and
//! the relay's WebSocket upgrade, parent = the incoming `traceparent`), `turn`,
//! `model_attempt` (attributes `model`, `attempt`, `outcome`, `fallback_reason` when the chain
//! moved on), the event `first_token` on the attempt that answered, `tool_call`, and `db.write`.
//! Only the origin's own spans are exported (target `origin`): the SDKs' internals stay out, and
//! so do health checks and scrapes (logged, not traced).

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use shared::trace_context::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;

use crate::config::{OtlpProtocol, TracesConfig};

/// The instrumentation scope and the only target whose spans are exported.
const SCOPE: &str = "origin";

/// The target of a request span that is logged but not exported (outside [`SCOPE`]): a health
/// check or a scrape.
pub const PROBE_TARGET: &str = "probe";

/// Paths of the load balancer's, the container's and Prometheus's requests.
const PROBE_PATHS: [&str; 3] = [
    shared::health::HEALTH_PATH,
    crate::READY_PATH,
    crate::METRICS_PATH,
];

/// Whether a request to `path` is a probe (see [`PROBE_TARGET`]).
pub fn is_probe(path: &str) -> bool {
    PROBE_PATHS.contains(&path)
}

/// A running exporter; [`Exporter::shutdown`] flushes what is still queued.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Builds the OTLP exporter and its batch processor (its own thread).
    pub fn start(config: &TracesConfig) -> Result<Self, String> {
        let protocol = match config.protocol {
            OtlpProtocol::Protobuf => Protocol::HttpBinary,
            OtlpProtocol::Json => Protocol::HttpJson,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(&config.endpoint)
            .build()
            .map_err(|error| format!("OTLP exporter: {error}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Self::with_provider(provider))
    }

    fn with_provider(provider: SdkTracerProvider) -> Self {
        Self { provider }
    }

    /// The `tracing` layer feeding this exporter, limited to the origin's own spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use tracing_subscriber::Layer as _;
        // Targets only: a `filter_fn` combined into this per-layer filter made the log layer
        // lose events (seen with tracing-subscriber 0.3.23).
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SCOPE))
            .with_filter(Targets::new().with_target(SCOPE, tracing::Level::INFO))
    }

    /// Flushes queued spans and stops the exporter (blocking: call off the async threads).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "traces not flushed at shutdown");
        }
    }
}

/// Makes `span` a child of the remote span named by `traceparent` (when valid), and returns the
/// trace id to log: the incoming one, else the one the exporter gave `span`, else none (traces
/// off and no parent).
pub fn adopt_parent(span: &tracing::Span, traceparent: Option<&str>) -> Option<String> {
    let parent = traceparent.and_then(|value| TraceParent::parse(value.trim()).ok());
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // Fails only when no OpenTelemetry layer is installed; the id is still logged.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        return Some(parent.trace_id_hex());
    }
    let id = span.context().span().span_context().trace_id();
    (id != TraceId::INVALID).then(|| id.to_string())
}

/// The current span's context as a `traceparent` to send on (a tool call to a tenant's URL),
/// when traces are on.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        TraceParent {
            trace_id: span_context.trace_id().to_bytes(),
            parent_id: span_context.span_id().to_bytes(),
            flags: span_context.trace_flags().to_u8(),
        }
        .to_string()
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    // W3C Trace Context's example.
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `body` under the exporter's layer; returns the spans it finished.
    fn traced(body: impl FnOnce()) -> Vec<SpanData> {
        let memory = InMemorySpanExporter::default();
        let exporter = Exporter::with_provider(
            SdkTracerProvider::builder()
                .with_simple_exporter(memory.clone())
                .build(),
        );
        let subscriber = tracing_subscriber::registry().with(exporter.layer());
        tracing::subscriber::with_default(subscriber, body);
        memory.get_finished_spans().expect("spans")
    }

    #[test]
    fn a_request_span_is_the_child_of_the_edge_span() {
        let mut logged = None;
        let mut sent_on = None;
        let spans = traced(|| {
            let span = tracing::info_span!("request", otel.kind = "server");
            logged = adopt_parent(&span, Some(PARENT));
            let child = span.in_scope(|| tracing::info_span!("turn"));
            sent_on = child.in_scope(current_traceparent);
        });
        assert_eq!(logged.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let request = spans.iter().find(|s| s.name == "request").expect("request");
        let turn = spans.iter().find(|s| s.name == "turn").expect("turn");
        assert_eq!(
            request.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(request.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(request.span_kind, SpanKind::Server);
        assert_eq!(turn.parent_span_id, request.span_context.span_id());
        assert_eq!(
            turn.span_context.trace_id(),
            request.span_context.trace_id()
        );
        // What a tenant's tool is sent: the same trace, the turn as the parent.
        let sent_on = TraceParent::parse(&sent_on.expect("traces are on")).expect("valid");
        assert_eq!(sent_on.trace_id, request.span_context.trace_id().to_bytes());
        assert_eq!(sent_on.parent_id, turn.span_context.span_id().to_bytes());
    }

    #[test]
    fn without_a_valid_traceparent_the_request_starts_a_trace() {
        let mut logged = None;
        let invalid = PARENT.to_uppercase();
        let spans = traced(|| {
            let span = tracing::info_span!("request");
            logged = adopt_parent(&span, Some(&invalid));
        });
        let [request] = spans.as_slice() else {
            panic!("one span: {spans:?}");
        };
        assert_eq!(request.parent_span_id, SpanId::INVALID, "a root");
        assert_ne!(request.span_context.trace_id(), TraceId::INVALID);
        assert_eq!(
            logged,
            Some(request.span_context.trace_id().to_string()),
            "the log shows the trace the exporter started"
        );
    }

    #[test]
    fn only_the_origins_own_spans_are_exported() {
        let spans = traced(|| {
            let _sdk = tracing::info_span!(target: "aws_smithy_runtime", "invoke");
            let _debug = tracing::debug_span!("detail");
            let _ours = tracing::info_span!("turn");
            let _probe = tracing::info_span!(target: PROBE_TARGET, "request", path = "/health");
        });
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["turn"]);
    }

    #[test]
    fn with_traces_off_the_log_still_names_the_edge_trace() {
        let span = tracing::info_span!("request");
        assert_eq!(
            adopt_parent(&span, Some(PARENT)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(adopt_parent(&span, None), None);
        assert_eq!(adopt_parent(&span, Some("00-zz")), None);
        assert_eq!(current_traceparent(), None);
    }
}
