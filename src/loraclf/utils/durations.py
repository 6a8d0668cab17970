"""Durations as users write them (``90``, ``90s``, ``8m``, ``1h30m``) and as loraclf prints them (``7m40s``)."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(
    value: float | int | str | None, where: str = "train.time_budget (--time-budget)"
) -> float | None:
    """Seconds from a number of seconds or a duration such as ``90s``, ``8m``, ``1h30m`` or ``1.5h``.

    Args:
        value: A number (seconds), a string of digits (seconds), a duration string, or None.
        where: The key or flag named in the error.

    Returns:
        The duration in seconds (a positive float), or None for None.

    Raises:
        UserError: a value that is neither, or not positive; the message names ``where``.
    """
    from loraclf.utils.errors import UserError

    if value is None:
        return None
    bad = UserError(
        f"{where} must be seconds or a duration such as 90s, 8m or 1h30m, got {value!r}; "
        "write e.g. --time-budget 8m"
    )
    if isinstance(value, bool):
        raise bad
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            units = [u for _, u in parts]
            # Each unit once, largest first, and nothing left over ("8m5" or "5s8m" are mistakes, not durations).
            if (
                not parts
                or "".join(n + u for n, u in parts) != text
                or units != sorted(units, key="hms".index)
            ):
                raise bad from None
            if len(set(units)) != len(units):
                raise bad from None
            seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not seconds > 0 or seconds == float("inf"):
        raise bad
    return seconds


def format_duration(seconds: float) -> str:
    """``7m40s``, ``1h05m``, ``45s``: whole seconds below an hour, whole minutes above."""
    seconds = max(0.0, float(seconds))
    if seconds >= 3600:
        minutes = round(seconds / 60)
        return f"{minutes // 60}h{minutes % 60:02d}m"
    whole = round(seconds)
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole}s"
