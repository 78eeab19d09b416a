r"""Results a notebook computes once per run: a later pass of the same notebook loads them.

The run-level differencing audit can suppress more cells after a notebook has run; the runner then
runs that notebook again (a second pass) so that every table, figure and sentence leaves those cells
out. A second pass sees the same inputs and parameters as the first; only the disclosure verdicts
differ. Computations that come before any disclosure check (a cohort-wise match, say: ~100 s at two
million firms) need not be made twice: :func:`once_per_run` stores the first pass's result in the
run's work folder and a later pass loads it.

What is stored is never a disclosure verdict: :class:`reach.disclosure.Checked` objects apply the
audit's suppressions when they are made, so results holding them must not go through this module.

The runner empties ``work/<run>/memo/`` when a run starts and when it ends, and points the
notebooks at it (environment variable :data:`ENV_MEMO`); outside a run (a notebook opened in
Jupyter, a test) :func:`once_per_run` just computes. An entry is found again only under the same
notebook, name, key, input files (path, size, modification time) and reach version; an entry that
cannot be read is computed again, with a warning.
"""
from __future__ import annotations

import copyreg
import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence, TypeVar

__all__ = ["ENV_MEMO", "once_per_run", "memo_key", "folder"]

#: Folder of the run's memo (set by the runner for the notebooks it executes; unset: nothing is kept).
ENV_MEMO = "REACH_MEMO"

T = TypeVar("T")


def memo_key(name: str, key: Mapping[str, Any], files: Sequence[str | os.PathLike] = ()) -> str:
    """Digest of what a memo entry depends on: notebook, ``name``, ``key``, the files' stamps, reach's version.

    A file's stamp is its resolved path, size and modification time in nanoseconds (a rewritten
    input gets a new stamp); a missing file stamps as missing.
    """
    from reach import __version__
    from reach.publish import _notebook

    stamps = []
    for f in files:
        p = Path(f).resolve()
        st = p.stat() if p.is_file() else None
        stamps.append([str(p), None if st is None else st.st_size, None if st is None else st.st_mtime_ns])
    text = json.dumps({"notebook": _notebook(), "name": name, "key": key, "files": stamps, "version": __version__},
                      sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def once_per_run(name: str, compute: Callable[[], T], *, key: Mapping[str, Any],
                 files: Sequence[str | os.PathLike] = ()) -> T:
    """``compute()`` once per run; a later pass of the same notebook gets the first pass's result.

    Parameters
    ----------
    name : str
        What is computed (part of the entry's file name).
    compute : callable
        Makes the result; called when there is no usable entry. Its result must pickle, and must
        not hold disclosure verdicts (:class:`reach.disclosure.Checked`): those are made per pass.
    key : mapping
        Every parameter the result depends on (JSON-able values; others by ``repr``).
    files : sequence of path
        Input files the result depends on (e.g. the panel); a changed file is a new entry.

    Returns
    -------
    The result of ``compute()``, made now or in an earlier pass of this run.

    Notes
    -----
    Outside ``reach run`` (:data:`ENV_MEMO` unset) this is ``compute()``. Entries are written
    atomically (a temporary file replaced), so a pass never reads a half-written entry.

    Examples
    --------
    >>> once_per_run("square", lambda: 3 ** 2, key={"x": 3})
    9
    """
    folder = os.environ.get(ENV_MEMO)
    if not folder:
        return compute()
    digest = memo_key(name, key, files)
    path = Path(folder) / f"{_safe(name)}-{digest[:24]}.pkl"
    if path.is_file():
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)
        except Exception as exc:  # a truncated or foreign file: never trusted, made again
            warnings.warn(f"{path.name}: the stored result of {name!r} could not be read ({type(exc).__name__}); "
                          "computed again", RuntimeWarning, stacklevel=2)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            pickler = pickle.Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL)
            # results keep their mappings read-only (MappingProxyType), which pickle cannot store by
            # itself; this pickler stores them as the proxy of a dict (no process-wide registration)
            pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _proxy_of_dict}
            pickler.dump(result)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def folder(root: str | os.PathLike, notebook: str, parameters: Mapping[str, Any]) -> Path:
    """The memo folder of one notebook run with ``parameters`` (the runner's): a pass with other
    parameters never finds the entries of this one."""
    text = json.dumps(dict(parameters), sort_keys=True, default=repr)
    return Path(root) / f"{_safe(notebook)}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def _proxy_of_dict(proxy: MappingProxyType) -> tuple:
    return _read_only, (dict(proxy),)


def _read_only(mapping: dict) -> MappingProxyType:
    """A stored read-only mapping, made again (the type itself cannot be named in a pickle)."""
    return MappingProxyType(mapping)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60]
