"""Durations as users write them (train.time_budget, --time-budget) and as loraclf prints them."""

from __future__ import annotations

import pytest

from loraclf.utils.durations import format_duration, parse_duration
from loraclf.utils.errors import UserError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), (12.5, 12.5), ("90s", 90), ("8m", 480), ("1h30m", 5400), ("1h", 3600),
     ("2m30s", 150), ("1.5h", 5400), (" 8M ", 480)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "8x", "m", "8m5", "5s8m", "1m1m", "-5", "0", "0s", True, "inf", "8 minutes"]
)
def test_parse_duration_refuses_with_the_flag_named(text):
    with pytest.raises(UserError, match=r"--time-budget"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (0, 45.4, 460, 3600, 5430)] == [
        "0s",
        "45s",
        "7m40s",
        "1h00m",
        "1h30m",
    ]
