"""`{{ amount|money:currency }}`: an amount with exactly its currency's minor units (5.00, 27778)."""

from django import template

from billing.selectors import money_text

register = template.Library()


@register.filter
def money(amount, currency: str) -> str:
    if amount is None or not currency:
        return ""
    return money_text(amount, currency)
