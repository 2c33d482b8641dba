"""Password guessing and reset-mail flooding are limited per client address and per email."""

import uuid

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse


def fresh_address() -> str:
    # Counters can outlive a test (Redis): each test signs in from addresses and accounts of its own.
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


@pytest.fixture(autouse=True)
def fresh_emails(tenant_a, tenant_b):
    for world in (tenant_a, tenant_b):
        world.owner.email = f"owner-{uuid.uuid4().hex[:12]}@example.com"
        world.owner.save(update_fields=["email"])


def test_guessing_passwords_is_refused_after_the_limit_even_with_the_right_one(tenant_a, password, settings):
    settings.LOGIN_RATE_LIMIT = "3/hour"
    client, address = Client(), fresh_address()
    for _ in range(3):
        wrong = client.post(reverse("login"), {"username": tenant_a.owner.email, "password": "guess"},
                            REMOTE_ADDR=address)
        assert wrong.status_code == 200
    refused = client.post(reverse("login"), {"username": tenant_a.owner.email, "password": password},
                          REMOTE_ADDR=address)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "Too many attempts" in refused.content.decode()
    assert tenant_a.owner.email in refused.content.decode()  # the form keeps what was typed
    assert "_auth_user_id" not in client.session


def test_the_limit_follows_the_account_across_addresses(tenant_a, password, settings):
    settings.LOGIN_RATE_LIMIT = "2/hour"
    email = tenant_a.owner.email
    for _ in range(2):
        Client().post(reverse("login"), {"username": email, "password": "guess"}, REMOTE_ADDR=fresh_address())
    response = Client().post(reverse("login"), {"username": email.upper(), "password": password},
                             REMOTE_ADDR=fresh_address())
    assert response.status_code == 429


def test_other_people_still_sign_in(tenant_a, tenant_b, password, settings):
    settings.LOGIN_RATE_LIMIT = "2/hour"
    for _ in range(3):
        Client().post(reverse("login"), {"username": tenant_a.owner.email, "password": "guess"},
                      REMOTE_ADDR=fresh_address())
    response = Client().post(reverse("login"), {"username": tenant_b.owner.email, "password": password},
                             REMOTE_ADDR=fresh_address())
    assert response.status_code == 302


def test_password_reset_mails_stop_at_the_limit(tenant_a, settings):
    settings.PASSWORD_RESET_RATE_LIMIT = "2/hour"
    address = fresh_address()
    statuses = [Client().post(reverse("password_reset"), {"email": tenant_a.owner.email}, REMOTE_ADDR=address)
                .status_code for _ in range(4)]
    assert statuses == [302, 302, 429, 429]
    assert len(mail.outbox) == 2
