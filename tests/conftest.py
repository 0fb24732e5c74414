"""Shared fixtures: tiny configs and a fresh run folder per test."""
from __future__ import annotations

import pytest

from harness import config


@pytest.fixture
def tiny_cfg(tmp_path):
    """A resolved config for a short colored_digits run in its own folder."""

    def make(*overrides: str) -> dict:
        return config.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=60", "eval_every=20",
                                  "backbone.options.width=64", *overrides])

    return make
