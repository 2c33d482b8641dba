"""Errors the services raise; the API turns them into problem details, the console into form errors."""


class ServiceError(Exception):
    """A request the service refuses; nothing was changed. `field` names the input at fault."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


class Conflict(ServiceError):
    """The request is valid but clashes with the current state (e.g. the last owner)."""

    status = 409


class Forbidden(ServiceError):
    """The actor is authenticated but may not do this."""

    status = 403
