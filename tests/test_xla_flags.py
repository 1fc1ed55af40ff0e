"""studylib.xla_flags adds its XLA CPU flag without touching what the user set."""

from __future__ import annotations

import os
from importlib import metadata

import pytest

from studylib import xla_flags as _xla

FLAG = _xla.FLAGS[0]

pytestmark = pytest.mark.skipif(not _xla.applies(metadata.version("jaxlib")),
                                reason="the flag is only added for the jaxlib versions it was measured on")


def test_flag_added_to_empty_and_to_user_flags(monkeypatch):
    monkeypatch.delenv("NTK_STUDY_XLA_DEFAULTS", raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    _xla.configure()
    assert os.environ["XLA_FLAGS"] == FLAG
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    _xla.configure()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}"


def test_user_setting_and_opt_out_are_respected(monkeypatch):
    monkeypatch.delenv("NTK_STUDY_XLA_DEFAULTS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_copy_insertion_use_region_analysis=false")
    _xla.configure()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_copy_insertion_use_region_analysis=false"
    monkeypatch.setenv("NTK_STUDY_XLA_DEFAULTS", "1")
    monkeypatch.setenv("XLA_FLAGS", "")
    _xla.configure()
    assert os.environ["XLA_FLAGS"] == ""


def test_versions_the_flag_applies_to():
    assert _xla.applies("0.5.3") and _xla.applies("0.10.2")
    assert not _xla.applies("0.4.38") and not _xla.applies("0.11.0") and not _xla.applies("dev")
