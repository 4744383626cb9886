//! The outermost layer of every call: the request id, the span that puts it on every log line
//! of the call, and the per-RPC metrics.
//!
//! The request id is the client's `x-request-id` when usable, else a new UUID. It is written
//! back into the request (so the handler's audit events carry it) and onto the reply. The call's
//! status is read where gRPC puts it: the headers of a trailers-only reply, else the trailers
//! at the end of the body; a body dropped before its end (the client went away) counts as
//! CANCELLED.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rustc_hash::FxHashMap;
use tonic::Status;
use tonic::body::Body;
use tracing::Instrument as _;

use crate::metrics::Metrics;

/// The request id's header, on requests and replies.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// [`REQUEST_ID_HEADER`], parsed once: a name given as `&str` is parsed on every look-up.
pub static REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Largest request metadata (the header list, counted as HTTP/2 does: name, value and 32 bytes
/// per entry) a call may carry. Larger lists, up to the transport's limit
/// ([`TRANSPORT_MAX_HEADER_LIST_BYTES`]), are refused for that call alone with
/// RESOURCE_EXHAUSTED; the connection and its other calls go on.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The HTTP/2 limit on a header list: past it the transport itself refuses (HTTP 431, or for
/// much larger lists the connection ends).
pub const TRANSPORT_MAX_HEADER_LIST_BYTES: u32 = 256 * 1024;

fn metadata_size(h: &http::HeaderMap) -> usize {
    h.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum()
}

/// Whether a client's request id is usable: 1 to 128 letters, digits, `-`, `_`, `.` or `:`.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// Method names for the metrics' `method` label: the served methods, so that a client sending
/// made-up paths cannot grow the label set. Looked up on every call: FxHash, as a path is no
/// key an attacker can use to flood a fixed table.
fn method_labels() -> FxHashMap<String, &'static str> {
    let mut out = FxHashMap::default();
    for set in [
        fluxgate_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        for (path, _) in fluxgate_proto::methods(set) {
            // Leaked once at start: a fixed set of names lives as long as the process.
            let label: &'static str = Box::leak(path.clone().into_boxed_str());
            out.insert(path, label);
        }
    }
    out
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

#[derive(Clone)]
pub struct TelemetryLayer {
    metrics: Arc<Metrics>,
    methods: Arc<FxHashMap<String, &'static str>>,
}

impl TelemetryLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            methods: Arc::new(method_labels()),
        }
    }
}

impl<S> tower::Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    layer: TelemetryLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Telemetry<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let client_id = req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| v.to_str().is_ok_and(valid_request_id))
            .cloned();
        let id = client_id.unwrap_or_else(|| {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            http::HeaderValue::from_str(text)
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"))
        });
        req.headers_mut().insert(REQUEST_ID.clone(), id.clone());
        let path = req.uri().path();
        let method = self.layer.methods.get(path).copied().unwrap_or("other");
        // Displayed, not debugged: the fields are formatted when the span opens, on every call.
        let span = tracing::info_span!(
            "rpc",
            method = %path,
            request_id = %id.to_str().unwrap_or_default()
        );
        let size = metadata_size(req.headers());
        let fut: BoxFuture<Self::Response, Self::Error> = if size > MAX_METADATA_BYTES {
            let status = Status::resource_exhausted(format!(
                "request metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}"
            ));
            Box::pin(std::future::ready(Ok(status.into_http())))
        } else {
            Box::pin(self.inner.call(req).instrument(span.clone()))
        };
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            let response = fut.await?;
            let (mut parts, body) = response.into_parts();
            // Never indexed by HPACK: every reply's id is new, so indexing it would only churn
            // the connection's header table (each insert searched a chain of earlier ids).
            let mut id = id;
            id.set_sensitive(true);
            parts.headers.insert(REQUEST_ID.clone(), id);
            let mut done = Finish {
                metrics,
                method,
                started,
                span,
                finished: false,
            };
            let body = match status_in(&parts.headers) {
                // Trailers-only: the status is already known.
                Some(code) => {
                    done.finish(code);
                    body
                }
                None => Body::new(Observed { inner: body, done }),
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// Records a call once its status is known.
struct Finish {
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
    span: tracing::Span,
    finished: bool,
}

impl Finish {
    fn finish(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let code = code_name(code);
        self.metrics.rpc(self.method, code, elapsed.as_secs_f64());
        tracing::debug!(
            parent: &self.span,
            code,
            elapsed_us = elapsed.as_micros() as u64,
            "call finished"
        );
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// A reply body that records the call when its trailers (or its end) go by.
struct Observed {
    inner: Body,
    done: Finish,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    self.done.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.done.finish(status.code()),
            Poll::Ready(None) => self.done.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Fields as the default text format prints them (`name=value`, the message bare, a bridged
/// `log` record's own `log.*` fields left out), without its styling of every name: every
/// call's span formats its two fields when it opens, and the default formatter's styling
/// cost as much as the rest of the span.
pub struct TextFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = TextVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct TextVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    empty: bool,
    result: std::fmt::Result,
}

impl TextVisitor<'_> {
    fn write(&mut self, name: &str, value: &dyn std::fmt::Debug) -> std::fmt::Result {
        if !std::mem::replace(&mut self.empty, false) {
            self.writer.write_char(' ')?;
        }
        if name == "message" {
            return write!(self.writer, "{value:?}");
        }
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')?;
        write!(self.writer, "{value:?}")
    }
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.result.is_ok() && !name.starts_with("log.") {
            self.result = self.write(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What one event inside an `rpc` span prints, with `fields` or with the default.
    fn line(ours: bool) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || out.clone());
        let emit = || {
            let span = tracing::info_span!("rpc", method = %"/a.B/C", request_id = %"r-1");
            let _in = span.enter();
            let e = std::io::Error::other("disk full");
            tracing::warn!(
                user = "ann",
                r#type = 3,
                error = &e as &(dyn std::error::Error + 'static),
                "could not {}",
                "write"
            );
        };
        if ours {
            tracing::subscriber::with_default(builder.fmt_fields(TextFields).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_fields_print_as_the_default_does() {
        let ours = line(true);
        assert_eq!(ours, line(false));
        assert!(
            ours.contains(r#"rpc{method=/a.B/C request_id=r-1}: "#),
            "{ours}"
        );
        assert!(
            ours.contains(r#"could not write user="ann" type=3 error=disk full"#),
            "{ours}"
        );
    }
}
