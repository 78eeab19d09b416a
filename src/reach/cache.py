"""Typed copies of input files under ``work/<run>/cache/``: the second read of a .sav is a parquet read.

Reading an SPSS file of the register or of goods-level trade is the slow part of
notebook 01. Each input file, once read, mapped and typed by :mod:`reach.io`, is
kept as parquet (microdata: under ``work/``, never ``output/``) together with
what the read counted (repairs, number notation). The key is the file's SHA-256,
the column mapping and :data:`CACHE_VERSION`: a changed file, another mapping or
another version of the reading rules gives another key, so a stale copy is never
used. A copy that cannot be read is rebuilt from the source with a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pandas as pd

__all__ = ["CACHE_VERSION", "cache_key", "cached_chunks"]

log = logging.getLogger(__name__)

#: Bump when the typed output of reach.io's reading changes (invalidates every cached copy).
CACHE_VERSION = "2"  # 2: dates datetime64[us] from every reader


def cache_key(sha256: str, colmap: Mapping[str, str]) -> str:
    """The cache key of one file read with one column mapping.

    Examples
    --------
    >>> cache_key("ab" * 32, {"be_id": "BE_ID"}) == cache_key("ab" * 32, {"be_id": "BE_ID"})
    True
    >>> cache_key("ab" * 32, {"be_id": "BE_ID"}) == cache_key("ab" * 32, {"be_id": "be_id"})
    False
    """
    payload = json.dumps({"v": CACHE_VERSION, "sha256": sha256, "columns": dict(sorted(colmap.items()))},
                         sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def _paths(cache_dir: Path, role: str, source: Path, key: str) -> tuple[Path, Path]:
    stem = f"{role.replace(' ', '_').replace(':', '_')}__{source.name}"
    return cache_dir / f"{stem}__{key}.parquet", cache_dir / f"{stem}__{key}.json"


def _iter_cached(data: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(data, pre_buffer=False)
    for batch in pf.iter_batches(batch_size=chunksize):
        yield batch.to_pandas()


def cached_chunks(source: Path, sha256: str, colmap: Mapping[str, str], role: str, chunksize: int,
                  cache_dir: Path, read: Callable[[], Iterator[pd.DataFrame]],
                  state_out: Callable[[], dict], state_in: Callable[[dict], None]) -> Iterator[pd.DataFrame]:
    """Yield the typed chunks of ``source``: from the cache when a valid copy exists, else from ``read()``.

    Parameters
    ----------
    source : Path
        The input file.
    sha256 : str
        Its checksum.
    colmap : mapping
        The column mapping it is read with.
    role : str
        Input role (part of the cache file's name).
    chunksize : int
        Rows per chunk yielded.
    cache_dir : Path
        Folder of the cached copies.
    read : callable
        Returns the uncached iterator of typed chunks.
    state_out, state_in : callable
        Give / restore what the read counted (kept next to the copy as JSON).

    Notes
    -----
    The copy is written while the source is read (``pyarrow.parquet.ParquetWriter``,
    one row group per chunk), so memory stays one chunk; it becomes visible only
    after the whole file was read (renamed from a temporary name), so an interrupted
    read leaves no copy that looks complete.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache_dir = Path(cache_dir)
    key = cache_key(sha256, colmap)
    data, meta = _paths(cache_dir, role, Path(source), key)
    if data.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            n_rows = pq.ParquetFile(data).metadata.num_rows  # raises for a truncated or corrupt copy
            if n_rows != info["n_rows"] or info.get("sha256") != sha256:
                raise ValueError(f"copy has {n_rows} rows, its record says {info['n_rows']}")
            state = info["state"]
        except Exception as exc:  # noqa: BLE001 - any unreadable copy is rebuilt
            log.warning("cached copy of %s is unreadable (%s: %s); reading the source again",
                        source, type(exc).__name__, exc)
            data.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
        else:
            state_in(state)
            yield from _iter_cached(data, chunksize)
            return
    cache_dir.mkdir(parents=True, exist_ok=True)
    # older copies of the same file (other contents or mapping) are of no further use
    for old in cache_dir.glob(data.name.rsplit("__", 1)[0] + "__*"):
        old.unlink(missing_ok=True)
    tmp = data.with_suffix(".parquet.tmp")
    writer = None
    n = 0
    try:
        for chunk in read():
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
            n += len(chunk)
            yield chunk
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if writer is None:
        return
    writer.close()
    os.replace(tmp, data)
    meta.write_text(json.dumps({"source": str(source), "sha256": sha256, "columns": dict(colmap), "n_rows": n,
                                "version": CACHE_VERSION, "state": state_out()}, default=str), encoding="utf-8")
