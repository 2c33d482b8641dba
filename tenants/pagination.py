from rest_framework.pagination import CursorPagination, PageNumberPagination


class PagePagination(PageNumberPagination):
    """Small lists: `?page=2&page_size=100` (at most 200)."""

    page_size_query_param = "page_size"
    max_page_size = 200


class RecentFirstCursorPagination(CursorPagination):
    """Large, growing lists (audit log, usage): stable under inserts, no COUNT(*)."""

    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500
