from rest_framework.negotiation import DefaultContentNegotiation


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """The API answers in JSON only (problem details included), so there is no renderer to
    choose: skip DRF's per-request parsing of the Accept header. Request bodies are still
    matched to a parser by Content-Type (415 for anything else)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
