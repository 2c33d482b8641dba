"""Template filters of the budget pages."""

from decimal import Decimal

from django import template

from billing.selectors import money_text

register = template.Library()


@register.filter
def money(value: Decimal | None, currency: str) -> str:
    """An amount in its currency's minor units: `{{ alert.spend|money:budget.currency }}` → "80.12"."""
    return "—" if value is None else money_text(value, currency)
