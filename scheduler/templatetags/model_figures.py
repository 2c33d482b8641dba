"""Template filters for a model's figures: parameters in billions, bytes in decimal units.

Decimal units (GB = 10⁹ bytes) throughout, as accelerator vendors state memory, so a
model's weights compare directly with an accelerator's memory.
"""

from django import template

register = template.Library()

DECIMAL_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


@register.filter
def billions(count: int | None) -> str:
    """8_030_261_248 → '8.03 B'."""
    if count is None:
        return "—"
    return f"{count / 1e9:,.2f} B"


@register.filter
def decimal_bytes(size: int | float | None) -> str:
    """16_060_522_496 → '16.1 GB'; three significant figures in the largest fitting unit."""
    if size is None:
        return "—"
    for unit, scale in DECIMAL_UNITS:
        if size >= scale:
            value = size / scale
            return f"{value:,.{0 if value >= 100 else 1 if value >= 10 else 2}f} {unit}"
    return f"{size:,.0f} B"


@register.filter
def thousands(number: int | float | None) -> str:
    """131072 → '131,072'."""
    if number is None:
        return "—"
    return f"{number:,.0f}"
