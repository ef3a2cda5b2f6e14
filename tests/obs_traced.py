"""The observability workflows (``obs_workflows``) in a process that traces them: importing this
module (``loom worker -m obs_traced``) sets the global OpenTelemetry tracer provider, as
``opentelemetry-instrument`` would, with every span written to ``$OBS_SPANS`` (one JSON object
per line) the moment it ends, so the spans of a worker that is then killed are on disk."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from obs_workflows import *  # noqa: F403  (the definitions this worker runs)


class LineExporter(SpanExporter):
    """Each span as a JSON line, appended (and closed, so on disk) as it ends."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                assert span.context is not None
                parent = span.parent
                line = {
                    "name": span.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent_id": None if parent is None else f"{parent.span_id:016x}",
                    "attributes": dict(span.attributes or {}),
                }
                out.write(json.dumps(line) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(LineExporter(os.environ["OBS_SPANS"])))
trace.set_tracer_provider(_provider)
