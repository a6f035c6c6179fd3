"""Load dask-coded's defaults (``coded.yaml``) into ``dask.config`` under ``coded.*``."""

from __future__ import annotations

import pathlib

import dask.config
import yaml

__all__ = ["load_config", "DEFAULTS_PATH"]

DEFAULTS_PATH = pathlib.Path(__file__).with_name("coded.yaml")


def load_config() -> None:
    """Register the packaged defaults; user settings (``dask.config.set``, env) win."""
    with DEFAULTS_PATH.open() as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)
