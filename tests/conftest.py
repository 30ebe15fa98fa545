"""Test-process set-up: 8 fake CPU devices for the sharded paths, set before JAX is imported anywhere.

The flag only adds host (CPU) devices; GPU/TPU backends, when present, are untouched. Users never need it.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (``jax.enable_x64``), restoring the previous setting after it."""
    with jax.enable_x64(True):
        yield
