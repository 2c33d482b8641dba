from django.conf import settings

from tenants.problems import problem_response


class ApiBodyLimitMiddleware:
    """Refuse API bodies over SWITCHYARD_API_MAX_BODY_BYTES before anything reads them.

    DRF reads the body from the raw stream, past Django's own upload limit, so
    the limit is enforced here, from Content-Length, with a problem answer.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return problem_response(400, "Content-Length is not a number.", instance=request.path)
            if length > settings.API_MAX_BODY_BYTES:
                return problem_response(
                    413, f"The body has {length} bytes; the limit is {settings.API_MAX_BODY_BYTES}.",
                    slug="payload-too-large", instance=request.path,
                )
        return self.get_response(request)
