"""The de-identification engine (PS3.15 Annex E): pure functions over in-memory data sets.

`Engine` is the single entry point used by `serve` (receive.py) and `deidentify` (cli.py), so
both apply exactly the same rules. Stage order: plan -> pixels -> tags -> verify.
"""

from __future__ import annotations

from dicom_proxy.deidentify.engine import Engine

__all__ = ["Engine"]
