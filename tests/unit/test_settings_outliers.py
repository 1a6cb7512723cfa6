"""Settings.from_env: OUTLIER_REJECTION ("on" or "off"), PUBLIC_STORAGE_CLASS, COG_COMPRESSION."""

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


@pytest.mark.parametrize("value, expected", [
    (None, "DEFLATE"), ("", "DEFLATE"), ("deflate", "DEFLATE"), ("lerc-zstd", "LERC_ZSTD")])
def test_cog_compression_setting(value, expected):
    env = dict(ENV) if value is None else {**ENV, "COG_COMPRESSION": value}
    assert Settings.from_env(env).cog_compression == expected


@pytest.mark.parametrize("value", ["ZSTD", "LERC", "JPEG", "webp"])
def test_cog_compression_refuses_the_untested_and_the_lossy(value):
    with pytest.raises(ConfigError, match="COG_COMPRESSION must be one of DEFLATE, LERC_ZSTD"):
        Settings.from_env({**ENV, "COG_COMPRESSION": value})
