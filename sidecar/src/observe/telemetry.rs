//! OTLP trace export (see `sidecar/README.md`), configured only by the standard `OTEL_*` environment
//! variables, and W3C trace context: continued from the client, passed on to the upstream.
//!
//! - No `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
//!   `OTEL_SDK_DISABLED=true`: no exporter, no OpenTelemetry layer, nothing extracted or
//!   injected (the client's `traceparent` is forwarded as it came).
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`): `http/protobuf` (default),
//!   `http/json` or `grpc`; anything else is a start-up error naming the variable.
//! - Spans go through the SDK's batch processor: a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`,
//!   2048) drained by its own thread, so a collector that is down or slow drops spans instead
//!   of delaying a request. Shutdown flushes for at most [`FLUSH_TIMEOUT`].
//! - Endpoint, headers, timeout, sampler (`OTEL_TRACES_SAMPLER[_ARG]`) and resource
//!   (`OTEL_SERVICE_NAME`, default `policy-sidecar`; `OTEL_RESOURCE_ATTRIBUTES`) are read by
//!   the OpenTelemetry SDK and exporter themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The `service.name` unless `OTEL_SERVICE_NAME` (or `OTEL_RESOURCE_ATTRIBUTES`) names one.
pub const DEFAULT_SERVICE_NAME: &str = "policy-sidecar";
/// How long shutdown waits for the last spans to be exported.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// Whether spans are exported, and so whether trace context is extracted and injected.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// A telemetry setting the sidecar cannot use.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The protocol is not one of `http/protobuf`, `http/json`, `grpc`.
    #[error(
        "{name}: unsupported protocol `{value}` (expected `http/protobuf`, `http/json` or `grpc`)"
    )]
    Protocol {
        /// The variable that named it.
        name: &'static str,
        /// What it said.
        value: String,
    },
    /// The exporter refused its configuration (a bad endpoint URL, header, ...).
    #[error("OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
            Self::Grpc => "grpc",
        }
    }
}

/// What the environment asks for, when it asks for export at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The endpoint variable's value (for the start-up log).
    pub endpoint: String,
    /// The transport.
    pub protocol: Protocol,
    /// Whether `service.name` is left to the environment.
    pub service_name_from_env: bool,
}

/// Reads the plan from `env` (a lookup, so tests need not touch the process environment).
/// `Ok(None)`: no export.
pub fn plan(env: impl Fn(&str) -> Option<String>) -> Result<Option<Plan>, TelemetryError> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if var(SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let Some(endpoint) = var(TRACES_ENDPOINT).or_else(|| var(ENDPOINT)) else {
        return Ok(None);
    };
    let (name, value) = match var(TRACES_PROTOCOL) {
        Some(value) => (TRACES_PROTOCOL, Some(value)),
        None => (PROTOCOL, var(PROTOCOL)),
    };
    let protocol = match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("http/json") => Protocol::HttpJson,
        Some("grpc") => Protocol::Grpc,
        Some(_) => {
            return Err(TelemetryError::Protocol {
                name,
                value: value.unwrap_or_default(),
            });
        }
    };
    let service_name_from_env = var(SERVICE_NAME).is_some()
        || var(RESOURCE_ATTRIBUTES).is_some_and(|attrs| {
            attrs
                .split(',')
                .any(|kv| kv.split('=').next().map(str::trim) == Some("service.name"))
        });
    Ok(Some(Plan {
        endpoint,
        protocol,
        service_name_from_env,
    }))
}

/// The installed exporter (or none). Keep it until the end of `run` and call
/// [`Telemetry::shutdown`] there.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    plan: Option<Plan>,
}

impl Telemetry {
    /// Builds the exporter the process environment asks for. Must run inside the Tokio
    /// runtime (the gRPC client needs it).
    pub fn from_env() -> Result<Self, TelemetryError> {
        let Some(plan) = plan(|name| std::env::var(name).ok())? else {
            return Ok(Self::default());
        };
        // The protocol is set explicitly: the exporter's own default follows its features.
        let http = |protocol| {
            SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .build()
        };
        let exporter = match plan.protocol {
            Protocol::HttpProtobuf => http(opentelemetry_otlp::Protocol::HttpBinary),
            Protocol::HttpJson => http(opentelemetry_otlp::Protocol::HttpJson),
            Protocol::Grpc => SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .build(),
        }
        .map_err(TelemetryError::Exporter)?;
        let mut resource = Resource::builder();
        if !plan.service_name_from_env {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        // The sampler comes from OTEL_TRACES_SAMPLER(_ARG) (default: parent-based, always on),
        // the batch limits from OTEL_BSP_*.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(Self {
            provider: Some(provider),
            plan: Some(plan),
        })
    }

    /// The layer that turns the policy layer's and the sidecar's `tracing` spans into
    /// OpenTelemetry spans; `None` when nothing is exported.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + use<S>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let provider = self.provider.as_ref()?;
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        // Independent of the log filter: the request and policy spans are INFO.
        let targets = Targets::new()
            .with_target("policy_layer", tracing::Level::INFO)
            .with_target("policy_sidecar", tracing::Level::INFO);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_filter(targets),
        )
    }

    /// Logs where spans go (after the subscriber is installed).
    pub fn log_start(&self) {
        if let Some(plan) = &self.plan {
            tracing::info!(
                endpoint = %plan.endpoint,
                protocol = plan.protocol.as_str(),
                "exporting traces over OTLP"
            );
        }
    }

    /// Exports what is queued, waiting at most [`FLUSH_TIMEOUT`].
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        EXPORTING.store(false, Ordering::Relaxed);
        // Blocking: the batch thread exports, and the gRPC client needs the runtime meanwhile.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("policy-sidecar: flushing traces: {e}"),
            Err(e) => eprintln!("policy-sidecar: flushing traces: {e}"),
        }
    }
}

/// The client's trace context (W3C `traceparent` / `tracestate`), when spans are exported and
/// the request carries a valid one: the parent of the request span.
pub fn remote_context(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    if !EXPORTING.load(Ordering::Relaxed) || !headers.contains_key("traceparent") {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// Sets `traceparent` (and `tracestate`) on a request to the upstream to the current span, so
/// the tool server's spans join the trace. Without export, the headers stay as they are.
pub fn inject(headers: &mut HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn plan_of(vars: &[(&str, &str)]) -> Result<Option<Plan>, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        plan(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(plan_of(&[]).expect("plan"), None);
        assert_eq!(plan_of(&[(ENDPOINT, " ")]).expect("plan"), None);
        assert_eq!(
            plan_of(&[(PROTOCOL, "grpc"), (SERVICE_NAME, "x")]).expect("plan"),
            None
        );
    }

    #[test]
    fn sdk_disabled_wins_over_an_endpoint() {
        let vars = [(ENDPOINT, "http://127.0.0.1:4318"), (SDK_DISABLED, "TRUE")];
        assert_eq!(plan_of(&vars).expect("plan"), None);
        let vars = [(ENDPOINT, "http://127.0.0.1:4318"), (SDK_DISABLED, "false")];
        assert!(plan_of(&vars).expect("plan").is_some());
    }

    #[test]
    fn defaults_to_http_protobuf_and_the_sidecar_service_name() {
        let plan = plan_of(&[(ENDPOINT, "http://collector:4318")])
            .expect("plan")
            .expect("exports");
        assert_eq!(plan.protocol, Protocol::HttpProtobuf);
        assert_eq!(plan.endpoint, "http://collector:4318");
        assert!(!plan.service_name_from_env);
    }

    #[test]
    fn traces_variables_win_over_the_general_ones() {
        let plan = plan_of(&[
            (ENDPOINT, "http://collector:4318"),
            (TRACES_ENDPOINT, "http://traces:4317"),
            (PROTOCOL, "http/protobuf"),
            (TRACES_PROTOCOL, "grpc"),
        ])
        .expect("plan")
        .expect("exports");
        assert_eq!(plan.endpoint, "http://traces:4317");
        assert_eq!(plan.protocol, Protocol::Grpc);
    }

    #[test]
    fn unsupported_protocol_names_the_variable() {
        let err =
            plan_of(&[(ENDPOINT, "http://c:4318"), (PROTOCOL, "zipkin")]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol `zipkin` \
             (expected `http/protobuf`, `http/json` or `grpc`)"
        );
        let vars = [(ENDPOINT, "http://c:4318"), (PROTOCOL, "HTTP/JSON")];
        let plan = plan_of(&vars).expect("plan").expect("exports");
        assert_eq!(plan.protocol, Protocol::HttpJson);
    }

    #[test]
    fn service_name_from_the_environment_is_kept() {
        let vars = [(ENDPOINT, "http://c:4318"), (SERVICE_NAME, "checkout-mcp")];
        assert!(
            plan_of(&vars)
                .expect("plan")
                .expect("exports")
                .service_name_from_env
        );
        let vars = [
            (ENDPOINT, "http://c:4318"),
            (
                RESOURCE_ATTRIBUTES,
                "deployment.environment=prod, service.name=x",
            ),
        ];
        assert!(
            plan_of(&vars)
                .expect("plan")
                .expect("exports")
                .service_name_from_env
        );
    }

    #[test]
    fn extracts_and_injects_w3c_trace_context() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let span_context = context.span().span_context().clone();
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span_context.is_remote() && span_context.is_sampled());
        let mut out = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut out));
        assert_eq!(out["traceparent"], headers["traceparent"]);
    }
}
