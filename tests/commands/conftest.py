"""The tiny-run fixtures (:mod:`helpers.run_configs`: digits configs, a point dataset and model)."""
from helpers.run_configs import digits_cfg, make_cfg  # noqa: F401 (fixtures)
