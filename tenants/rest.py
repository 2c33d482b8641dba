"""The base of every tenant API view: scopes, one transaction per write, idempotent POSTs,
strict input (unknown fields are errors), and the helpers views fetch objects with.
And the base of the operator's views (the fleet), which no tenant credential opens."""

from django.db import transaction
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.authentication import ApiKeyAuthentication, ServiceTokenAuthentication
from tenants.context import Actor, Operator
from tenants.idempotency import (
    IdempotencyProblem,
    Replay,
    idempotency_claim,
    idempotency_complete,
    idempotency_release,
    request_fingerprint,
)
from tenants.pagination import PagePagination
from tenants.permissions import IsOperator
from tenants.problems import PROBLEM_CONTENT_TYPE, SLUGS, problem_body
from tenants.requests import actor_for_request, operator_for_request
from tenants.scoping import get_owned, scoped

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class StrictSerializer(serializers.Serializer):
    """Input serializer that refuses fields it does not know, instead of ignoring them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - {name for name, field in self.fields.items() if not field.read_only})
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class TenantAPIView(APIView):
    """Every tenant-facing API view derives from this.

    Subclasses set `required_scopes` ({"GET": "read", …}) and read objects only
    through `self.scoped(...)` / `self.get_owned(...)`.
    """

    required_scopes: dict[str, str] = {}

    @property
    def actor(self) -> Actor:
        return actor_for_request(self.request)

    def scoped(self, source):
        return scoped(source, self.actor.tenant)

    def get_owned(self, source, public_id):
        return get_owned(source, self.actor.tenant, public_id)

    def dispatch(self, request, *args, **kwargs):
        # DRF's APIView.dispatch, plus: unsafe methods run in one transaction, and a
        # POST with an Idempotency-Key stores its response in that same transaction.
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        claim = None
        try:
            self.initial(request, *args, **kwargs)
            claim = self._idempotency_claim(request)
            if isinstance(claim, Replay):
                response = Response(claim.body, status=claim.status, headers={"Idempotent-Replayed": "true"})
                claim = None
            else:
                response = self._run_handler(request, claim, *args, **kwargs)
        except Exception as exc:
            if claim is not None:
                idempotency_release(claim)
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response

    def _run_handler(self, request, claim, *args, **kwargs):
        handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
        if request.method not in UNSAFE_METHODS:
            return handler(request, *args, **kwargs)
        with transaction.atomic():
            response = handler(request, *args, **kwargs)
            if claim is not None and response.status_code < 500:
                idempotency_complete(claim, response.status_code, response.data)
        if claim is not None and response.status_code >= 500:
            idempotency_release(claim)
        return response

    def _idempotency_claim(self, request):
        key = request.META.get("HTTP_IDEMPOTENCY_KEY")
        if request.method != "POST" or key is None:
            return None
        # Reading the body here caches it; DRF's parser then reads the cached copy.
        fingerprint = request_fingerprint(request.method, request.path, request._request.body)
        try:
            return idempotency_claim(actor=self.actor, key=key, fingerprint=fingerprint)
        except IdempotencyProblem as problem:
            body = problem_body(problem.status, problem.detail, slug=SLUGS.get(problem.status),
                                instance=request.path)
            response = Response(body, status=problem.status)
            response.content_type = PROBLEM_CONTENT_TYPE
            raise _Answer(response) from None

    def handle_exception(self, exc):
        if isinstance(exc, _Answer):
            return exc.response
        return super().handle_exception(exc)


class OperatorAPIView(APIView):
    """Every operator API view (routes under /api/v1/fleet/) derives from this.

    Callers: a staff user's session (with CSRF) or a service token (`sy_svc_…`)
    holding the scope the method needs (`required_scopes = {"GET": "fleet", …}`).
    A tenant API key authenticates (so it is told clearly why) and is refused
    with 403, whatever its scopes. Writes run in one transaction. There is no
    Idempotency-Key store (it is per tenant): operator actions set a state, so
    a retried request finds the state it asked for.
    """

    authentication_classes = [ServiceTokenAuthentication, ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsOperator]
    required_scopes: dict[str, str] = {}
    # For the schema: tenant keys are authenticated only to be refused, so they are not documented here.
    refuses_tenant_keys = True
    honours_idempotency_key = False

    @property
    def operator(self) -> Operator:
        return operator_for_request(self.request)

    def dispatch(self, request, *args, **kwargs):
        # DRF's APIView.dispatch, plus: unsafe methods run in one transaction.
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
            if request.method in UNSAFE_METHODS:
                with transaction.atomic():
                    response = handler(request, *args, **kwargs)
            else:
                response = handler(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response


class _Answer(Exception):
    """Carries a finished response out of `initial`-time checks."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


def page_of(item_serializer: type[serializers.Serializer], *, cursor: bool = False) -> type[serializers.Serializer]:
    """The schema of a paginated list of `item_serializer` (page numbers, or a cursor for large lists)."""
    fields = {
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item_serializer(many=True),
    }
    if not cursor:
        fields["count"] = serializers.IntegerField()
    name = item_serializer.__name__.removesuffix("Output")
    return type(f"{'Cursor' if cursor else ''}Paginated{name}List", (serializers.Serializer,), fields)


def valid(serializer_class: type[serializers.Serializer], data, **kwargs) -> dict:
    """The validated input, or a ValidationError (→ 400 problem with field errors)."""
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def paginated(view: APIView, queryset, serializer_class, paginator_class=PagePagination,
              context: dict | None = None) -> Response:
    paginator = paginator_class()
    page = paginator.paginate_queryset(queryset, view.request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True, context=context or {}).data)


_representers: dict[type, serializers.Serializer] = {}


def represent(serializer_class: type[serializers.Serializer], instance) -> dict:
    """`serializer_class(instance).data`, without rebuilding the serializer's fields.

    DRF deep-copies every declared field each time a serializer is instantiated — on
    a small read endpoint that is most of the request. An instance kept per class
    binds its fields once; `to_representation` does not change it, so sharing it is
    safe. For serializers that need no context (request, view).
    """
    representer = _representers.get(serializer_class)
    if representer is None:
        representer = _representers.setdefault(serializer_class, serializer_class())
    return representer.to_representation(instance)

