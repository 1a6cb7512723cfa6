"""Settings.from_env: OUTLIER_REJECTION read once, as "on" or "off"; PUBLIC_STORAGE_CLASS."""

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


@pytest.mark.parametrize("value, expected", [
    (None, "INTELLIGENT_TIERING"), ("", "INTELLIGENT_TIERING"),
    ("intelligent-tiering", "INTELLIGENT_TIERING"), (" STANDARD ", "STANDARD")])
def test_public_storage_class_setting(value, expected):
    env = dict(ENV) if value is None else {**ENV, "PUBLIC_STORAGE_CLASS": value}
    assert Settings.from_env(env).public_storage_class == expected


@pytest.mark.parametrize("value", ["STANDARD_IA", "GLACIER_IR", "cheap"])
def test_public_storage_class_refuses_classes_with_retrieval_fees_and_typos(value):
    with pytest.raises(ConfigError, match="PUBLIC_STORAGE_CLASS must be one of "
                                          "INTELLIGENT_TIERING, STANDARD"):
        Settings.from_env({**ENV, "PUBLIC_STORAGE_CLASS": value})
