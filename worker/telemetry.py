"""Traces, opt-in through the standard OpenTelemetry environment (README "Monitoring").

Nothing happens, and nothing beyond the standard library is imported, unless
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and neither
OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none says otherwise). Then
`configure_tracing` gives the process a TracerProvider that batches spans to that endpoint
over OTLP/HTTP (protobuf); the SDK reads the rest of OTEL_* itself (OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES).

Each process configures its own, after any fork (the batch processor is a thread): a
worker's pool process at `worker_process_init`, the API in `create_app` (one per uvicorn
process); each calls `flush` as it stops, so the last spans are sent. The maintained
instrumentations do the work: Celery (the trace context travels in the task headers, so a
send enqueued by anyone continues its caller's trace), SQLAlchemy, Redis, FastAPI.

An email is delivered later, by a drain that serves many sends: its outbox row keeps the
W3C `traceparent` of the send that queued it (`current_traceparent`), and its delivery
span (`span`) continues that trace.

What spans carry: ids and codes, never a body, subject, password, CRA code, token or email
address. SQL statements are recorded without their parameters (the engines also hide
them), Redis commands as `LPUSH ? ?`, HTTP requests without their query string (the
ServiceStack conventions accept any request field there, a password included) and without
headers unless OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* asks, and then the session and
password headers redacted.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

TRACER_NAME = "securesend"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Header values the HTTP instrumentation redacts, should an operator ask it to capture
# headers (regular expressions, case-insensitive).
SECRET_HEADERS = ["x-sm-session-token", "x-sm-password", "authorization", "cookie", "set-cookie"]
# The longest traceparent an outbox row keeps: version 00's is 55 characters; room for a
# later version's.
TRACEPARENT_MAX = 128
# Attribute values: what `span` accepts.
AttributeValue = str | bool | int | float

_provider: TracerProvider | None = None


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and the SDK not turned
    off (OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def enabled() -> bool:
    """Whether this process records traces (`configure_tracing` set them up)."""
    return _provider is not None


def configure_tracing(service_name_default: str) -> bool:
    """Set up this process's traces when the environment asks for them: the provider,
    its OTLP/HTTP exporter, and the Celery and Redis instrumentations (both used by the
    API and the workers). `service_name_default` names the service unless
    OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) does. Idempotent;
    returns whether tracing is on. Raises nothing for an unreachable collector: the
    exporter drops what it cannot send."""
    global _provider
    if _provider is not None:
        return True
    if not tracing_requested():
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol and protocol != "http/protobuf":
        logger.warning("OTLP protocol %s is not installed; exporting over http/protobuf", protocol)
    from_environment = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    resource = Resource.create({SERVICE_NAME: str(from_environment or service_name_default)})
    # No sampler argument: the SDK reads OTEL_TRACES_SAMPLER(_ARG), parent-based by default.
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    # Commands are recorded as `LPUSH ? ?` (the instrumentation drops their arguments).
    RedisInstrumentor().instrument(tracer_provider=provider)
    logger.info("traces on: exported over OTLP/HTTP as %s", resource.attributes[SERVICE_NAME])
    return True


def instrument_engines(*engines: Engine) -> None:
    """Trace the statements of `engines` (a runtime's database): the SQL text, never its
    parameters. Each engine once; nothing when tracing is off."""
    if _provider is None:
        return
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    # The instrumentation's own tracer on the runtime's engines, as
    # `SQLAlchemyInstrumentor().instrument(engine=…)` does, without the instrumentor: its
    # releases declare SQLAlchemy < 2.1 (and then instrument nothing), and it wraps
    # `create_async_engine`, whose import needs greenlet, which SQLAlchemy 2.1 no longer
    # installs. The engine events it listens to are the same in 2.1.
    scope = "opentelemetry.instrumentation.sqlalchemy"
    tracer = trace.get_tracer(scope, __version__, _provider)
    usage = metrics.get_meter(scope, __version__).create_up_down_counter(
        "db.client.connections.usage", unit="connections"
    )
    for engine in engines:
        if engine not in _traced_engines:
            EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]
            _traced_engines.add(engine)


_traced_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def instrument_fastapi(app: FastAPI) -> None:
    """One server span per request (named by its route), continuing a caller's W3C
    `traceparent`; without the query string, and without the ASGI send/receive spans.
    Nothing when tracing is off."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        server_request_hook=_without_query,
        http_capture_headers_sanitize_fields=SECRET_HEADERS,
        exclude_spans=["receive", "send"],
    )


# The request attributes that hold the query string (old and stable HTTP conventions).
_QUERY_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.query")


def _without_query(span: Any, scope: dict[str, Any]) -> None:
    """Any field of a request may arrive in its query string (a login's password too):
    overwrite the attributes that quote it."""
    if not scope.get("query_string") or not span.is_recording():
        return
    recorded = getattr(span, "attributes", None) or {}
    for key in _QUERY_ATTRIBUTES:
        value = recorded.get(key)
        if isinstance(value, str):
            span.set_attribute(key, "" if key == "url.query" else value.split("?", 1)[0])


FLUSH_TIMEOUT_MILLIS = 5000


def flush() -> None:
    """Send the spans still batched, waiting at most `FLUSH_TIMEOUT_MILLIS` (a process
    that stops: a pool process exits without running `atexit`, where the SDK would shut
    its provider down). Tracing stays on. Nothing when tracing is off."""
    if _provider is not None:
        _provider.force_flush(FLUSH_TIMEOUT_MILLIS)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to continue its trace later (an
    outbox row keeps it for its delivery); None when tracing is off or no span is
    current."""
    if _provider is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    traceparent = carrier.get("traceparent")
    return traceparent if traceparent and len(traceparent) <= TRACEPARENT_MAX else None


def annotate_current_span(attributes: Mapping[str, AttributeValue]) -> None:
    """Add ids and codes to the current span (a task's, say). Nothing when tracing is off."""
    if _provider is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(dict(attributes))


class SpanHandle(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> Any: ...


class _Unrecorded:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None


_UNRECORDED = _Unrecorded()


@contextmanager
def span(
    name: str, *, traceparent: str | None, attributes: Mapping[str, AttributeValue]
) -> Iterator[SpanHandle]:
    """A span around a piece of work done on behalf of the trace `traceparent` names
    (its parent; the current trace when None), linked to the current span (the task that
    does the work). Attributes are ids and codes only. When tracing is off: nothing, at
    the cost of a function call."""
    if _provider is None:
        yield _UNRECORDED
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    current = trace.get_current_span().get_span_context()
    parent = (
        TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        if traceparent
        else None
    )
    links = [trace.Link(current)] if traceparent and current.is_valid else None
    tracer = trace.get_tracer(TRACER_NAME, tracer_provider=_provider)
    with tracer.start_as_current_span(
        name, context=parent, links=links, kind=trace.SpanKind.CLIENT, attributes=attributes
    ) as recording:
        yield recording
