"""Headline numbers that notebooks record for tests and for the summary notebook.

Only aggregates that passed :mod:`reach.disclosure` may be recorded: the files
land in ``output/<run>/headline/`` and leave the Remote Access environment.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["record_headline", "read_headlines"]


def _plain(value: Any) -> Any:
    """Convert numpy/pandas scalars and containers to JSON-native values.

    NaN becomes ``None`` so the files are strict JSON (a suppressed number is null).
    """
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:  # pandas NA / NaT
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def record_headline(output_dir: str | Path, section: str, numbers: Mapping[str, Any]) -> Path:
    """Write ``numbers`` to ``<output_dir>/headline/<section>.json``.

    Parameters
    ----------
    output_dir : str or Path
        The run's output folder (``output/<run>``).
    section : str
        Name of the section, usually the notebook's topic (``reach``, ``matching``, ``effects``).
    numbers : mapping
        JSON-serialisable headline numbers (nested mappings and lists allowed).

    Returns
    -------
    Path
        The file written. Keys are sorted so two identical runs give identical files.

    Examples
    --------
    >>> import tempfile
    >>> p = record_headline(tempfile.mkdtemp(), "effects", {"att": 0.12})
    >>> read_headlines(p.parent.parent)["effects"]["att"]
    0.12
    """
    path = Path(output_dir) / "headline" / f"{section}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(numbers), indent=2, sort_keys=True), encoding="utf-8")
    return path


def read_headlines(output_dir: str | Path) -> dict[str, Any]:
    """Read every ``headline/<section>.json`` of a run into ``{section: numbers}``."""
    folder = Path(output_dir) / "headline"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}
