"""Hypothesis profiles for the whole suite.

"ci" is derandomized so a CI run is reproducible; "dev" explores fresh examples on each
run.  CI=<anything non-empty> picks "ci".

The gateway's packages are imported as installed (`pip install -e '.[test]'`, or a
wheel); nothing here edits sys.path.  `tests.support` is found because `tests` is a
package at the root pytest starts from.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
