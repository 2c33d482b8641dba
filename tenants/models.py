"""Tenancy and identity: who a request acts for, and what it may do there."""

import uuid

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.roles import Role, Scope


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra):
        if not email:
            raise ValueError("A user needs an email address")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Users log in by email; what they may do depends on their memberships."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="Operators of the fleet and the money (back office).")
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self) -> str:
        return self.email


class Tenant(models.Model):
    """A customer organisation. Every tenant-owned row points at one."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    billing_country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2 code, e.g. DE.")
    currency = models.CharField(max_length=3, default="USD", help_text="ISO 4217 code the tenant is billed in.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["active", "suspended"]), name="tenant_status_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class TenantOwned(models.Model):
    """Base of every tenant-owned row: a non-null tenant and a public UUID.

    The API and the console never expose the database key: objects are named by
    `public_id`, and fetched only through `tenants.scoping` helpers, which filter
    by tenant, so another tenant's object is "not found", like a missing one.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        abstract = True


class Membership(TenantOwned):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_one_per_user_and_tenant"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.role}"


class InvitationQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now())


class Invitation(TenantOwned):
    """An emailed link that lets its holder join the tenant with a role.

    Only a SHA-256 of the token is stored: the link in the email is the only copy.
    """

    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.tenant}"

    @property
    def state(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class Credential(models.Model):
    """What API keys and service tokens share: `<kind>_<prefix>_<secret>`, stored as the
    prefix (for lookup) and a SHA-256 of the secret, with scopes, expiry and revocation.

    The secret has at least 128 bits of entropy, so a fast hash is enough: there is
    nothing to brute-force, and a password hasher would cost every request dearly.
    """

    KIND = ""  # the text before the prefix: "sy_live" or "sy_svc"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display})"

    @property
    def display(self) -> str:
        return f"{self.KIND}_{self.prefix}_…"

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def has_scope(self, scope: Scope | str) -> bool:
        return str(scope) in self.scopes


class ApiKey(TenantOwned, Credential):
    """A tenant credential `sy_live_<prefix>_<secret>`."""

    KIND = "sy_live"

    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(Credential.Meta):
        verbose_name = "API key"


class ServiceToken(Credential):
    """An operator credential `sy_svc_<prefix>_<secret>` for fleet-side software and automation.

    Not tenant-owned: it acts for the operator (the fleet, usage ingestion), never
    for a tenant.
    """

    KIND = "sy_svc"

    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                   help_text="The staff user who created it; empty when made by a command.")


class AuditEvent(TenantOwned):
    """Who changed what, when, from where. Append-only: written by services, never edited."""

    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # A readable snapshot of the actor, kept even after the user or key is gone.
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="audit_tenant_recent")]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_repr}"


class IdempotencyRecord(TenantOwned):
    """The stored outcome of a POST sent with an `Idempotency-Key` header.

    Scoped to tenant and credential (`principal`): two keys of one tenant may use
    the same idempotency key without meeting. `response_status` is null while the
    first request is still running.
    """

    principal = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "principal", "key"], name="idempotency_key_once_per_principal"),
        ]


class RateCounter(models.Model):
    """A fixed-window request counter, used for throttling when Redis is not configured."""

    bucket = models.CharField(max_length=128, unique=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)


class WebhookEndpoint(TenantOwned):
    """A URL of the tenant's that is sent signed event notifications (tenants/webhooks.py).

    The signing secret is stored as is (HMAC needs it), shown to the tenant once when the
    endpoint is made or its secret rotated, and never returned by the API afterwards.
    """

    ALL_EVENTS = "*"

    url = models.URLField(max_length=2048)
    description = models.CharField(max_length=200, blank=True)
    # Event types sent here, or ["*"]: every type, including types added later.
    event_types = models.JSONField(default=list)
    secret = models.CharField(max_length=100)
    # After a rotation the old secret may keep signing (beside the new one) for a while, so the
    # receiver can switch without losing a request.
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive endpoints are sent nothing.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        return self.ALL_EVENTS in self.event_types or event_type in self.event_types

    def signing_secrets(self, now) -> list[str]:
        """The secrets a request is signed with now: the current one, and the previous one while it is valid."""
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            return [self.secret, self.previous_secret]
        return [self.secret]


class WebhookDelivery(TenantOwned):
    """One event for one endpoint, and every attempt to send it.

    `event_id` is the event's: the same for every endpoint the event goes to and every
    attempt (redeliveries included), so receivers can drop duplicates. A pending delivery
    is due when `next_attempt_at` has passed; a worker claims it by pushing that time
    forward (a lease) and adding one to `attempts`, in one conditional UPDATE.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (gave up)"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(db_index=True)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField(help_text="The request body: id, type, created, tenant, data.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    last_response_ms = models.PositiveIntegerField(null=True, blank=True)
    # One entry per attempt, oldest first: {attempt, at, status_code, error, duration_ms, response}.
    attempt_log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.CheckConstraint(condition=Q(state__in=["pending", "succeeded", "failed"]),
                                   name="webhook_delivery_state_valid"),
            # Redelivery reuses the row: one delivery per event and endpoint.
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_once_per_endpoint"),
        ]
        indexes = [
            # The sweep's query: due pending deliveries. Partial, so finished ones cost the index nothing.
            models.Index(fields=["next_attempt_at"], condition=Q(state="pending"), name="webhook_delivery_due"),
            models.Index(fields=["endpoint", "-created_at", "-id"], name="webhook_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} → {self.endpoint_id}"
