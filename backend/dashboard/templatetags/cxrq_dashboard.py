"""Figures as people read them: milliseconds, seconds, ratios."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.0f} ms"


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f} %"
