"""Fixtures the HL7 v2 render tests share: the shipped settings, one converter for the module, and an admission converted."""

from __future__ import annotations

import pytest

from router.contracts import Converted
from router.pipeline.convert import Converter
from router.settings import load_settings


@pytest.fixture(scope="module")
def settings():
    return load_settings(environ={})


@pytest.fixture(scope="module")
def converter(settings):
    return Converter(settings)


@pytest.fixture
def admit(converter) -> Converted:
    """test_render.ADT_A01 converted: the admission the render tests write out."""
    from .test_render import ADT_A01

    [conv] = converter.convert(ADT_A01)
    assert conv.ok, conv.error
    return conv
