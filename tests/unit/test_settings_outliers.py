"""Settings.from_env: OUTLIER_REJECTION read once, as "on" or "off"."""

from __future__ import annotations

import pytest

from cloudfree.errors import ConfigError
from cloudfree.settings import Settings

ENV = {"WORK_BUCKET": "w", "DATA_BUCKET": "d", "CONTROL_BUCKET": "c"}


@pytest.mark.parametrize("value, expected", [
    (None, "on"), ("", "on"), ("on", "on"), (" ON ", "on"), ("true", "on"), ("1", "on"),
    ("off", "off"), ("Off", "off"), ("false", "off"), ("none", "off"), ("0", "off")])
def test_outlier_rejection_setting(value, expected):
    env = dict(ENV) if value is None else {**ENV, "OUTLIER_REJECTION": value}
    assert Settings.from_env(env).outlier_rejection == expected


def test_outlier_rejection_setting_refuses_other_values():
    with pytest.raises(ConfigError, match="outlier rejection must be one of"):
        Settings.from_env({**ENV, "OUTLIER_REJECTION": "maybe"})
