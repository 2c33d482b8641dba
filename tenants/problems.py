"""RFC 9457 problem details: the one error shape of the whole API.

    {"type": "https://switchyard.dev/problems/validation-error", "title": "Your request is not valid.",
     "status": 400, "detail": "...", "instance": "/api/v1/api-keys",
     "errors": [{"field": "scopes", "message": "...", "code": "invalid"}]}
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tenants.errors import ServiceError
from tenants.scoping import NotFound

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://switchyard.dev/problems/"

TITLES = {
    400: "Your request is not valid.",
    401: "Authentication is required.",
    403: "You may not do this.",
    404: "Not found.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    409: "Conflict with the current state.",
    413: "Request body too large.",
    415: "Unsupported media type.",
    422: "Unprocessable request.",
    429: "Too many requests.",
    500: "Internal server error.",
}


def problem_body(status: int, detail: str, *, slug: str | None = None, instance: str = "",
                 errors: list[dict] | None = None) -> dict:
    body = {
        "type": PROBLEM_BASE + (slug or str(status)),
        "title": TITLES.get(status, "Error."),
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors:
        body["errors"] = errors
    return body


def problem_response(status: int, detail: str, *, slug: str | None = None, instance: str = "",
                     errors: list[dict] | None = None) -> JsonResponse:
    """A problem answer outside DRF (middleware, Django's error handlers)."""
    return JsonResponse(problem_body(status, detail, slug=slug, instance=instance, errors=errors),
                        status=status, content_type=PROBLEM_CONTENT_TYPE)


def flatten_field_errors(detail, prefix: str = "") -> list[dict]:
    """DRF's nested error detail → [{"field": "a.b", "message": …, "code": …}]."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            # str(): list serializers key item errors by index, and index 0 must not read as "no field".
            field = "" if key in ("non_field_errors", "__all__") else str(key)
            out += flatten_field_errors(value, f"{prefix}.{field}".strip(".") if field else prefix)
        return out
    if isinstance(detail, list):
        out = []
        for index, item in enumerate(detail):
            nested = isinstance(item, (dict, list))
            out += flatten_field_errors(item, f"{prefix}.{index}".strip(".") if nested else prefix)
        return out
    return [{"field": prefix or None, "message": str(detail), "code": getattr(detail, "code", "invalid")}]


def _as_drf_exception(exc: Exception) -> Exception:
    if isinstance(exc, NotFound):
        return exceptions.NotFound(str(exc))
    if isinstance(exc, ServiceError):
        error = exceptions.APIException(exc.message, code=exc.code)
        error.status_code = exc.status
        error.field = exc.field
        return error
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return exc


SLUGS = {400: "validation-error", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
         405: "method-not-allowed", 409: "conflict", 413: "payload-too-large", 415: "unsupported-media-type",
         422: "unprocessable", 429: "rate-limited"}


def problem_exception_handler(exc, context):
    exc = _as_drf_exception(exc)
    response = exception_handler(exc, context)
    if response is None:
        return None
    request = context.get("request")
    instance = request.path if request is not None else ""
    status = response.status_code
    errors = None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_field_errors(exc.detail)
        detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
    else:
        detail = str(exc.detail) if hasattr(exc, "detail") else str(exc)
        field = getattr(exc, "field", None)
        if field:
            errors = [{"field": field, "message": detail, "code": exc.get_codes()}]
    body = problem_body(status, detail, slug=SLUGS.get(status), instance=instance, errors=errors)
    problem = Response(body, status=status, headers={k: v for k, v in response.items()})
    problem.content_type = PROBLEM_CONTENT_TYPE
    return problem


# Django-level handlers (unknown URLs, crashes): problem details under /api/, HTML elsewhere.

def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def api_aware_404(request, exception=None):
    if _is_api(request):
        return problem_response(404, "No such endpoint or object.", slug="not-found", instance=request.path)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def api_aware_500(request):
    if _is_api(request):
        return problem_response(500, "Something went wrong on our side; it has been logged.",
                                instance=request.path)
    from django.views.defaults import server_error

    return server_error(request)


def api_aware_403(request, exception=None):
    if _is_api(request):
        return problem_response(403, str(exception) or "Forbidden.", slug="forbidden", instance=request.path)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


def api_aware_400(request, exception=None):
    if _is_api(request):
        return problem_response(400, "Bad request.", slug="validation-error", instance=request.path)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


__all__ = ["DjangoPermissionDenied", "Http404", "problem_exception_handler", "problem_response"]
