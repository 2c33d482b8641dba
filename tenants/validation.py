"""Validation of codes that come from standards (ISO 3166 countries, ISO 4217 currencies)."""

import pycountry

from tenants.errors import ServiceError


def validate_country(code: str) -> str:
    code = (code or "").strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ServiceError(f"{code or 'An empty value'} is not an ISO 3166-1 alpha-2 country code (e.g. DE, US).",
                           field="billing_country")
    return code


def validate_currency(code: str) -> str:
    code = (code or "").strip().upper()
    if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
        raise ServiceError(f"{code or 'An empty value'} is not an ISO 4217 currency code (e.g. EUR, USD, JPY).",
                           field="currency")
    return code
