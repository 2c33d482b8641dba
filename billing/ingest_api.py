"""Usage ingestion's API: `POST /api/v1/usage/events`, for the fleet's software only (service tokens)."""

from __future__ import annotations

import gc
import zlib
from contextlib import contextmanager

import orjson
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.metering import MAX_TEXT, TIME_EXAMPLE
from billing.services import usage_ingest
from tenants.errors import ServiceError
from tenants.rest import OperatorAPIView
from tenants.roles import ServiceScope

JSON_CONTENT_TYPES = {"application/json", "application/cloudevents-batch+json"}


class PayloadTooLarge(ServiceError):
    status = 413


class UnsupportedMediaType(ServiceError):
    status = 415


# --- schema ---------------------------------------------------------------------------------------


class UsageEventInput(serializers.Serializer):
    """A CloudEvent 1.0 in structured JSON (docs/metering.md lists the types and their data)."""

    specversion = serializers.ChoiceField(choices=["1.0"])
    id = serializers.CharField(max_length=MAX_TEXT, help_text="Unique per source: a repeat is a duplicate.")
    source = serializers.CharField(max_length=MAX_TEXT,
                                   help_text="Who reports it, e.g. `gateway/eu-north1`. "
                                             "`switchyard/collector/scrape` is the replica scrape's.")
    type = serializers.CharField(help_text="`inference.request`, `accelerator.usage`, or a custom meter's type.")
    subject = serializers.CharField(max_length=MAX_TEXT, help_text="The deployment's id.")
    time = serializers.DateTimeField(help_text=f"RFC 3339 with an offset, e.g. {TIME_EXAMPLE}; at most 5 minutes "
                                               f"ahead, and no older than SWITCHYARD_USAGE_MAX_AGE_DAYS.")
    data = serializers.DictField(help_text="inference.request: input_tokens, output_tokens, requests (default 1), "
                                           "ttft_ms, tpot_ms, e2e_ms. accelerator.usage: tier, "
                                           "accelerator_seconds, accelerators, seconds, replica.")


class UsageBatchInput(serializers.Serializer):
    events = UsageEventInput(many=True, help_text=f"At most {settings.USAGE_MAX_BATCH} events.")


class DuplicateOutput(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position in the batch, from 0.")
    id = serializers.CharField()


class RejectionOutput(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position in the batch, from 0.")
    id = serializers.CharField(allow_null=True, help_text="The event's id, when it had one.")
    reason = serializers.CharField()


class IngestOutput(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events stored now, each counted once.")
    duplicates = serializers.IntegerField(help_text="Events stored before, or earlier in this batch.")
    rejected = serializers.IntegerField()
    duplicate_events = DuplicateOutput(many=True)
    rejections = RejectionOutput(many=True)


EXAMPLE_BATCH = {"events": [{
    "specversion": "1.0", "id": "req-7f3a9c", "source": "gateway/eu-north1", "type": "inference.request",
    "subject": "9b2f6c1e-4a0d-4d1b-9a57-0c8e2f3b7d11", "time": "2026-12-01T10:00:00Z",
    "data": {"input_tokens": 812, "output_tokens": 190, "ttft_ms": 143.2, "e2e_ms": 2210.0},
}]}


# --- the view -------------------------------------------------------------------------------------


class UsageEventIngestView(OperatorAPIView):
    """Ingest a batch of usage events. Kept lean (it is benchmarked): the body is read and decoded
    here (orjson), not by DRF's parsers, and the service does no per-event query."""

    required_scopes = {"POST": ServiceScope.USAGE_WRITE}
    # Not throttled by SWITCHYARD_API_RATE_LIMIT: that limit is sized for tenants' API calls, and
    # the callers here are the operator's own gateways and collectors, whose batches must never be
    # refused for arriving fast (a refused batch is usage billed late).
    throttle_classes = []

    @extend_schema(
        operation_id="usage_events_ingest",
        summary="Report usage events",
        description=(
            f"A batch of at most {settings.USAGE_MAX_BATCH} CloudEvents 1.0 in structured JSON, optionally "
            f"gzip-compressed (`Content-Encoding: gzip`); the body is at most SWITCHYARD_API_MAX_BODY_BYTES "
            f"before and after decompression. Each event is judged on its own: the answer counts the events "
            f"accepted (stored now), duplicates (the same source and id stored before or earlier in the "
            f"batch) and rejected (with each one's index and reason). Needs a service token with "
            f"`usage:write`."
        ),
        request=UsageBatchInput,
        parameters=[OpenApiParameter("Content-Encoding", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                     required=False, enum=["gzip", "identity"])],
        responses={202: IngestOutput},
        examples=[OpenApiExample("One inference request", value=EXAMPLE_BATCH, request_only=True)],
    )
    def post(self, request):
        with cyclic_gc_paused():
            # The decoded batch is a temporary, freed (by reference counting) before the collector
            # runs again: the collection that re-enabling it brings on then has nothing to walk.
            result = usage_ingest(parse_batch(request_body(request._request)))
        return Response({
            "accepted": result.accepted,
            "duplicates": len(result.duplicates),
            "rejected": len(result.rejected),
            "duplicate_events": [{"index": index, "id": event_id} for index, event_id in result.duplicates],
            "rejections": [{"index": index, "id": event_id, "reason": reason}
                           for index, event_id, reason in result.rejected],
        }, status=status.HTTP_202_ACCEPTED)


@contextmanager
def cyclic_gc_paused():
    """Pause Python's cycle collector while a batch is decoded and ingested.

    A batch allocates thousands of containers (events, their data) that live until the answer;
    each few hundred allocations would otherwise trigger a collection that walks them, and now and
    then the whole heap: a third of the decoding time, measured. Nothing here makes reference
    cycles, so reference counting frees it all; the collector runs again afterwards. Free the
    batch inside the block: the first allocation after it triggers a collection, which would
    otherwise walk every object of a batch still alive (7 % of a worker's time, measured).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def request_body(request) -> bytes:
    """The body as JSON bytes: checked content type, gunzipped within the size limit."""
    if request.content_type not in JSON_CONTENT_TYPES:
        raise UnsupportedMediaType(f"Send the batch as application/json, not {request.content_type or 'nothing'}.")
    body = request.body
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported: send gzip, or no encoding.")
    return gunzip(body, limit=settings.API_MAX_BODY_BYTES)


def gunzip(body: bytes, *, limit: int) -> bytes:
    """Decompress a gzip body (all its members), refusing one that would grow past `limit` bytes:
    a gzip bomb is stopped after `limit` bytes of output, not after it has filled the memory."""
    out = b""
    rest = body
    while rest:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += decompressor.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise ServiceError(f"The body is not valid gzip ({exc}).") from None
        if len(out) > limit:
            raise PayloadTooLarge(f"The body decompresses to more than {limit} bytes, the limit "
                                  f"(SWITCHYARD_API_MAX_BODY_BYTES): send smaller batches.")
        if not decompressor.eof:
            raise ServiceError("The gzip body is truncated.")
        rest = decompressor.unused_data  # the next member, if any
    return out


def parse_batch(body: bytes) -> list:
    """`{"events": [...]}` → the list of events, or a 400/413 problem (nothing is stored)."""
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(f"The body is not valid JSON: {exc}.") from None
    if type(batch) is not dict or type(batch.get("events")) is not list:
        raise ServiceError('The body must be a batch: {"events": [CloudEvent, …]}.', field="events")
    unknown = sorted(set(batch) - {"events"})
    if unknown:
        raise ServiceError(f"Unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the batch has "
                           f'only "events".', field=unknown[0])
    events = batch["events"]
    if len(events) > settings.USAGE_MAX_BATCH:
        raise PayloadTooLarge(f"A batch holds at most {settings.USAGE_MAX_BATCH} events; this one has "
                              f"{len(events)}: split it.", field="events")
    return events
