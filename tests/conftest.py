"""Shared pytest configuration.

Hypothesis profiles, chosen with the environment variable HYPOTHESIS_PROFILE:

* ``default`` (used when the variable is unset): about 100 examples per
  property, no deadline; the whole property suite stays well under a minute.
* ``deep``: 2000 examples per property, for a long hunt before a release or
  after changing the codec, the parser or validation::

      HYPOTHESIS_PROFILE=deep .venv/bin/pytest tests/property

Properties that pin their own ``max_examples`` with ``@settings`` keep it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
