"""Settings for every test: how hard hypothesis tries (HYPOTHESIS_PROFILE=fuzz for long runs)."""

import os

from hypothesis import settings

# deadline=None: a slow example is not a failure here (CI machines vary); the timeout guards.
settings.register_profile("ci", max_examples=50, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
