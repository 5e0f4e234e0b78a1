//! Request tracing: the span helpers the proxy and the node share, W3C trace
//! context (`traceparent`) continued from a client and passed on to the
//! backends in gRPC metadata, and the optional OpenTelemetry (OTLP) export.
//!
//! The spans exist in every build, so the log subscriber (JSON logs) carries
//! them. With the cargo feature `otel`, [`otel::layer_from_env`] adds a
//! `tracing-opentelemetry` layer exporting them over OTLP, configured by the
//! standard `OTEL_*` variables, and the trace context crosses process
//! boundaries; without it, [`continue_remote`] and [`InjectTraceContext`]
//! do nothing.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};
use tracing::Instrument;

/// The gRPC method of a request path: "/milvus.grpc.MilvusService/Search" -> "Search".
pub fn rpc_method(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Makes `span` a child of the trace context the caller sent in
/// `traceparent` (W3C), if any. Without the `otel` feature: nothing.
pub fn continue_remote(span: &tracing::Span, headers: &http::HeaderMap) {
    #[cfg(feature = "otel")]
    otel::set_remote_parent(span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

/// A tonic interceptor for the clients to the backends: writes the current
/// span's trace context into the request metadata (`traceparent`), so a
/// backend that traces continues the same trace. Without the `otel` feature
/// it passes requests through unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectTraceContext;

impl tonic::service::Interceptor for InjectTraceContext {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        #[cfg(feature = "otel")]
        let request = {
            let mut request = request;
            otel::inject_current(request.metadata_mut());
            request
        };
        Ok(request)
    }
}

/// One server span per RPC around a gRPC service (the node's), named by
/// its method and continuing the caller's trace. The proxy makes its own
/// richer root span in `proxy::rpc_metrics`.
#[derive(Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S> ServerSpan<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, R> Service<http::Request<B>> for ServerSpan<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = rpc_method(request.uri().path()).to_string();
        let span = tracing::info_span!(
            "node_rpc",
            otel.name = %format!("node/{method}"),
            otel.kind = "server",
            method = %method,
        );
        continue_remote(&span, request.headers());
        let call = span.in_scope(|| self.inner.call(request));
        Box::pin(call.instrument(span))
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ServerSpan<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(feature = "otel")]
pub mod otel {
    //! The OpenTelemetry side (feature `otel`): OTLP export from the `OTEL_*`
    //! variables, and W3C trace-context extraction and injection.

    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
    use opentelemetry_sdk::Resource;
    use tonic::codegen::http;
    use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
    use tracing::Subscriber;
    use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
    use tracing_subscriber::registry::LookupSpan;

    /// The service name when `OTEL_SERVICE_NAME` is not set.
    pub const DEFAULT_SERVICE_NAME: &str = "mishards";

    /// Whether the `OTEL_*` variables (read through `var`) ask for OTLP
    /// export: an endpoint is set or `OTEL_TRACES_EXPORTER=otlp`, and neither
    /// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.
    pub fn export_wanted(var: impl Fn(&str) -> Option<String>) -> bool {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return false;
        }
        match var("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "none" => false,
            Some(v) if v == "otlp" => true,
            _ => set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        }
    }

    /// The tracer provider exporting to the OTLP/gRPC endpoint of the
    /// `OTEL_*` variables (batching, in the background), or `None` when
    /// [`export_wanted`] says no. Shut it down at exit to flush.
    pub fn provider_from_env() -> anyhow::Result<Option<SdkTracerProvider>> {
        if !export_wanted(|name| std::env::var(name).ok()) {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Some(provider))
    }

    /// The `tracing` layer sending spans to `provider`.
    pub fn layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("mishards"))
    }

    /// Makes `span` a child of the W3C `traceparent` in `headers`, if valid.
    pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }

    /// Writes the current span's trace context (`traceparent`) into `metadata`.
    pub fn inject_current(metadata: &mut MetadataMap) {
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
    }

    struct HeaderExtractor<'a>(&'a http::HeaderMap);

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    struct MetadataInjector<'a>(&'a mut MetadataMap);

    impl Injector for MetadataInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            // The propagator writes only "traceparent"/"tracestate", valid
            // ASCII keys; a value that is not valid metadata is dropped.
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(key.as_bytes()),
                MetadataValue::try_from(value.as_str()),
            ) {
                self.0.insert(key, value);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            }
        }

        #[test]
        fn export_follows_the_standard_variables() {
            assert!(!export_wanted(vars(&[])));
            assert!(export_wanted(vars(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector:4317"
            )])));
            assert!(export_wanted(vars(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4317"
            )])));
            assert!(export_wanted(vars(&[("OTEL_TRACES_EXPORTER", "otlp")])));
            assert!(!export_wanted(vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])));
            assert!(!export_wanted(vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ])));
            assert!(!export_wanted(vars(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                " "
            )])));
        }

        #[test]
        fn a_valid_traceparent_is_read_and_a_broken_one_ignored() {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .unwrap(),
            );
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
            let span = parent.span();
            let sc = span.span_context();
            assert!(sc.is_valid() && sc.is_remote());
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            headers.insert("traceparent", "00-garbage".parse().unwrap());
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
            assert!(!parent.span().span_context().is_valid());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_is_the_last_path_segment() {
        assert_eq!(rpc_method("/milvus.grpc.MilvusService/Search"), "Search");
        assert_eq!(rpc_method("Search"), "Search");
    }

    #[test]
    fn without_a_span_context_the_interceptor_adds_no_traceparent() {
        use tonic::service::Interceptor;
        let request = InjectTraceContext.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("traceparent").is_none());
    }
}
