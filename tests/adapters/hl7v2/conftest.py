"""Fixtures the HL7 v2 render tests share: the shipped settings and one converter for the module."""

from __future__ import annotations

import pytest

from router.pipeline.convert import Converter
from router.settings import load_settings


@pytest.fixture(scope="module")
def settings():
    return load_settings(environ={})


@pytest.fixture(scope="module")
def converter(settings):
    return Converter(settings)
