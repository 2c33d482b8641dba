"""Writes of the tenancy layer. Each service checks its rules, writes in one
transaction, and records an AuditEvent for every change."""

import hashlib
import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from tenants import key_cache
from tenants.context import Actor
from tenants.errors import Conflict, Forbidden, ServiceError
from tenants.keys import SERVICE_TOKEN, generate_key
from tenants.models import ApiKey, AuditEvent, Invitation, Membership, ServiceToken, Tenant, User
from tenants.roles import ALL_SCOPES, ALL_SERVICE_SCOPES, Role, may_assign_role, scopes_for_role

logger = logging.getLogger(__name__)
from tenants.validation import validate_country, validate_currency

# --- Audit --------------------------------------------------------------------------------


def audit_record(*, actor: Actor, action: str, obj: Model, changes: dict | None = None) -> AuditEvent:
    return AuditEvent.objects.create(
        tenant=actor.tenant,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        actor=actor.label,
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(getattr(obj, "public_id", obj.pk)),
        object_repr=str(obj)[:200],
        changes=changes or {},
        source_ip=actor.source_ip,
    )


# --- Tenants and users --------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "tenant"
    slug, n = base, 1
    while Tenant.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def _validate_new_password(password: str, user: User) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ServiceError(" ".join(exc.messages), field="password") from None


@transaction.atomic
def tenant_create(
    *,
    name: str,
    owner_email: str,
    owner_password: str | None = None,
    billing_country: str = "US",
    currency: str = "USD",
    source_ip: str | None = None,
) -> tuple[Tenant, User]:
    """A new tenant with its first owner. An existing user becomes the owner;
    a new one is created (with an unusable password when none is given)."""
    name = name.strip()
    if not name:
        raise ServiceError("A tenant needs a name.", field="name")
    tenant = Tenant.objects.create(
        name=name,
        slug=_unique_slug(name),
        billing_country=validate_country(billing_country),
        currency=validate_currency(currency),
    )
    email = User.objects.normalize_email(owner_email).lower()
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User(email=email)
        if owner_password:
            _validate_new_password(owner_password, user)
        user = User.objects.create_user(email, owner_password)
    Membership.objects.create(tenant=tenant, user=user, role=Role.OWNER)
    actor = Actor(tenant=tenant, user=user, role=Role.OWNER, scopes=ALL_SCOPES, source_ip=source_ip)
    audit_record(actor=actor, action="tenant.create", obj=tenant, changes={"name": name, "owner": email})
    return tenant, user


def user_signup(
    *, email: str, password: str, full_name: str, tenant_name: str, billing_country: str, currency: str,
    source_ip: str | None = None,
) -> tuple[Tenant, User]:
    """Self-service sign-up: a new user who owns a new tenant."""
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(email=email).exists():
        raise Conflict("An account with this email already exists. Log in instead.", field="email")
    _validate_new_password(password, User(email=email, full_name=full_name))
    with transaction.atomic():
        tenant, user = tenant_create(
            name=tenant_name, owner_email=email, owner_password=password,
            billing_country=billing_country, currency=currency, source_ip=source_ip,
        )
        if full_name:
            user.full_name = full_name
            user.save(update_fields=["full_name"])
    return tenant, user


TENANT_EDITABLE_FIELDS = {"name": None, "billing_country": validate_country, "currency": validate_currency}


@transaction.atomic
def tenant_update(*, actor: Actor, **fields) -> Tenant:
    tenant = Tenant.objects.select_for_update().get(pk=actor.tenant.pk)
    changes = {}
    for field, value in fields.items():
        validator = TENANT_EDITABLE_FIELDS[field]
        if validator is not None:
            value = validator(value)
        elif isinstance(value, str):
            value = value.strip()
            if not value:
                raise ServiceError(f"{field} may not be blank.", field=field)
        old = getattr(tenant, field)
        if old != value:
            changes[field] = [old, value]
            setattr(tenant, field, value)
    if changes:
        tenant.save(update_fields=list(changes))
        audit_record(actor=actor, action="tenant.update", obj=tenant, changes=changes)
    return tenant


# --- API keys -----------------------------------------------------------------------------


def _check_scopes(actor: Actor, scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - ALL_SCOPES)
    if unknown:
        raise ServiceError(f"Unknown scopes: {', '.join(unknown)}. Choose from {', '.join(sorted(ALL_SCOPES))}.",
                           field="scopes")
    if not scopes:
        raise ServiceError("An API key needs at least one scope.", field="scopes")
    beyond = sorted(set(scopes) - actor.scopes)
    if beyond:
        raise Forbidden(f"You cannot grant scopes you do not hold: {', '.join(beyond)}.", field="scopes")
    return sorted(set(scopes))


@transaction.atomic
def api_key_create(*, actor: Actor, name: str, scopes: list[str], expires_at=None) -> tuple[ApiKey, str]:
    """A new key; returns it and its plaintext, which is never stored nor shown again."""
    name = name.strip()
    if not name:
        raise ServiceError("An API key needs a name.", field="name")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expires_at must be in the future.", field="expires_at")
    scopes = _check_scopes(actor, scopes)
    generated = generate_key()
    key = ApiKey.objects.create(
        tenant=actor.tenant, name=name, prefix=generated.prefix, secret_hash=generated.secret_hash,
        scopes=scopes, created_by=actor.user, expires_at=expires_at,
    )
    audit_record(actor=actor, action="api_key.create", obj=key,
                 changes={"scopes": scopes, "expires_at": expires_at.isoformat() if expires_at else None})
    return key, generated.plaintext


@transaction.atomic
def api_key_revoke(*, actor: Actor, key: ApiKey) -> ApiKey:
    """Revoke now: the next request with the key is refused. Revoking twice changes nothing."""
    updated = ApiKey.objects.filter(pk=key.pk, tenant=actor.tenant, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    key.refresh_from_db()
    if updated:
        # A queryset update sends no post_save: tell the key caches directly.
        key_cache.credentials_changed()
        audit_record(actor=actor, action="api_key.revoke", obj=key)
    return key


# --- Service tokens (the operator's credentials) --------------------------------------------
# Not tenant-owned, so there is no tenant audit log to write to: the token row
# itself keeps who made it and when, and when it was revoked; both are logged.


def _check_service_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - ALL_SERVICE_SCOPES)
    if unknown:
        raise ServiceError(f"Unknown service scopes: {', '.join(unknown)}. "
                           f"Choose from {', '.join(sorted(ALL_SERVICE_SCOPES))}.", field="scopes")
    if not scopes:
        raise ServiceError("A service token needs at least one scope.", field="scopes")
    return sorted(set(scopes))


@transaction.atomic
def service_token_create(*, name: str, scopes: list[str], created_by: User | None = None,
                         expires_at=None) -> tuple[ServiceToken, str]:
    """A new service token; returns it and its plaintext, which is never stored nor shown again."""
    name = name.strip()
    if not name:
        raise ServiceError("A service token needs a name.", field="name")
    if created_by is not None and not created_by.is_staff:
        raise Forbidden("Only staff users create service tokens.", field="created_by")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expires_at must be in the future.", field="expires_at")
    generated = generate_key(SERVICE_TOKEN)
    token = ServiceToken.objects.create(
        name=name, prefix=generated.prefix, secret_hash=generated.secret_hash,
        scopes=_check_service_scopes(scopes), created_by=created_by, expires_at=expires_at,
    )
    logger.info("service token %s created by %s with scopes %s", token, created_by or "a command", token.scopes)
    return token, generated.plaintext


@transaction.atomic
def service_token_revoke(*, token: ServiceToken, revoked_by: User | None = None) -> ServiceToken:
    """Revoke now: the next request with the token is refused. Revoking twice changes nothing."""
    updated = ServiceToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    if updated:
        # A queryset update sends no post_save: tell the credential caches directly.
        key_cache.credentials_changed()
        logger.info("service token %s revoked by %s", token, revoked_by or "a command")
    return token


# --- Members ------------------------------------------------------------------------------


def _owner_count(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=Role.OWNER).count()


def _lock_memberships(tenant: Tenant) -> None:
    # Changes to owners are serialised per tenant, so two concurrent demotions
    # cannot both see "another owner remains" and leave the tenant without one.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()


@transaction.atomic
def membership_change_role(*, actor: Actor, membership: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise ServiceError(f"Unknown role {role!r}. Choose from {', '.join(Role.values)}.", field="role")
    if role == membership.role:
        return membership
    if not (may_assign_role(actor.role, role) and may_assign_role(actor.role, membership.role)):
        raise Forbidden("Only an owner can make or unmake owners.", field="role")
    _lock_memberships(actor.tenant)
    if membership.role == Role.OWNER and _owner_count(actor.tenant) == 1:
        raise Conflict("A tenant needs at least one owner: make someone else owner first.", field="role")
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(actor=actor, action="membership.change_role", obj=membership, changes={"role": [old, role]})
    return membership


@transaction.atomic
def membership_remove(*, actor: Actor, membership: Membership) -> None:
    if not may_assign_role(actor.role, membership.role):
        raise Forbidden("Only an owner can remove an owner.")
    _lock_memberships(actor.tenant)
    if membership.role == Role.OWNER and _owner_count(actor.tenant) == 1:
        raise Conflict("A tenant needs at least one owner: make someone else owner first.")
    audit_record(actor=actor, action="membership.remove", obj=membership,
                 changes={"email": membership.user.email, "role": membership.role})
    membership.delete()


# --- Invitations --------------------------------------------------------------------------


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _send_invitation_email(invitation: Invitation, token: str) -> None:
    link = settings.SITE_URL + reverse("invitation-accept", args=[token])
    send_mail(
        subject=f"You are invited to {invitation.tenant.name} on Switchyard",
        message=(
            f"{invitation.invited_by or 'Someone'} invited you to join {invitation.tenant.name} "
            f"on Switchyard as {invitation.role}.\n\nAccept: {link}\n\n"
            f"The link expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC."
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


@transaction.atomic
def invitation_create(*, actor: Actor, email: str, role: str) -> tuple[Invitation, str]:
    """Invite someone by email; returns the invitation and the secret token of its link."""
    email = User.objects.normalize_email(email.strip()).lower()
    if role not in Role.values:
        raise ServiceError(f"Unknown role {role!r}. Choose from {', '.join(Role.values)}.", field="role")
    if not may_assign_role(actor.role, role):
        raise Forbidden("Only an owner can invite an owner.", field="role")
    if Membership.objects.filter(tenant=actor.tenant, user__email=email).exists():
        raise Conflict(f"{email} is already a member.", field="email")
    if Invitation.objects.pending().filter(tenant=actor.tenant, email=email).exists():
        raise Conflict(f"{email} already has a pending invitation; revoke it to send a new one.", field="email")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=actor.tenant, email=email, role=role, token_hash=_hash_token(token), invited_by=actor.user,
        expires_at=timezone.now() + timedelta(hours=settings.INVITATION_TTL_HOURS),
    )
    audit_record(actor=actor, action="invitation.create", obj=invitation, changes={"email": email, "role": role})
    # robust: a mail server that is down must not turn a created invitation into a 500; the
    # failure is logged, and the inviter can revoke and invite again.
    transaction.on_commit(lambda: _send_invitation_email(invitation, token), robust=True)
    return invitation, token


@transaction.atomic
def invitation_revoke(*, actor: Actor, invitation: Invitation) -> Invitation:
    if invitation.state != "pending":
        raise Conflict(f"This invitation is {invitation.state}; only a pending one can be revoked.")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(actor=actor, action="invitation.revoke", obj=invitation)
    return invitation


def invitation_for_token(token: str) -> Invitation | None:
    """The invitation behind an emailed link (any tenant: the token is the credential)."""
    return Invitation.objects.select_related("tenant").filter(token_hash=_hash_token(token)).first()


@transaction.atomic
def invitation_accept(*, token: str, user: User, source_ip: str | None = None) -> Membership:
    invitation = invitation_for_token(token)
    if invitation is None:
        raise ServiceError("This invitation link is not valid.")
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.state != "pending":
        raise Conflict(f"This invitation is {invitation.state}.")
    if invitation.email != user.email:
        raise Forbidden(f"This invitation is for {invitation.email}; you are logged in as {user.email}.")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(tenant=invitation.tenant, user=user, role=invitation.role)
    except IntegrityError:
        raise Conflict("You are already a member of this tenant.") from None
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    actor = Actor(tenant=invitation.tenant, user=user, role=invitation.role,
                  scopes=scopes_for_role(invitation.role), source_ip=source_ip)
    audit_record(actor=actor, action="invitation.accept", obj=membership, changes={"role": invitation.role})
    return membership


@transaction.atomic
def invitation_accept_as_new_user(*, token: str, full_name: str, password: str,
                                  source_ip: str | None = None) -> Membership:
    """Sign up through an invitation link and join the inviting tenant.

    The emailed token vouches for the address, so the account is created for the
    invited email and no tenant of its own is made. An address that already has
    an account must log in and accept instead: the token never takes one over.
    """
    invitation = invitation_for_token(token)
    if invitation is None:
        raise ServiceError("This invitation link is not valid.")
    if invitation.state != "pending":
        raise Conflict(f"This invitation is {invitation.state}.")
    if User.objects.filter(email=invitation.email).exists():
        raise Conflict("An account with this email already exists. Log in to accept the invitation.",
                       field="email")
    full_name = full_name.strip()
    _validate_new_password(password, User(email=invitation.email, full_name=full_name))
    try:
        with transaction.atomic():
            user = User.objects.create_user(invitation.email, password, full_name=full_name)
    except IntegrityError:
        # Another request created the account between the check and the insert.
        raise Conflict("An account with this email already exists. Log in to accept the invitation.",
                       field="email") from None
    return invitation_accept(token=token, user=user, source_ip=source_ip)


@transaction.atomic
def tenant_set_status(*, actor: Actor, status: str) -> Tenant:
    """Suspend (read-only) or reactivate a tenant: a back-office action."""
    if status not in Tenant.Status.values:
        raise ServiceError(f"Unknown status {status!r}.", field="status")
    tenant = Tenant.objects.select_for_update().get(pk=actor.tenant.pk)
    if tenant.status != status:
        audit_record(actor=actor, action="tenant.set_status", obj=tenant, changes={"status": [tenant.status, status]})
        tenant.status = status
        tenant.save(update_fields=["status"])
    return tenant
