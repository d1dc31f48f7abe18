"""Writing outputs safely: every command writes into a temporary sibling and renames it into place when
complete (:func:`atomic_output`), so an interrupted run never leaves a half-written file that a rerun would
trust; :func:`sweep_stale` removes the temporaries of runs whose process is gone.

A temporary is named ``<name>.tmp-<pid>-<hex>`` (``<stem>.tmp-<pid>-<hex><suffix>`` with ``keep_suffix``,
for writers that pick the format by extension), next to its output.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_TAG = ".tmp-"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (used to tell abandoned temporary outputs from live ones)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_sibling(path: Path, keep_suffix: bool = False) -> Path:
    """A fresh temporary name next to ``path`` (this process's id and a random tag)."""
    tag = f"{TMP_TAG}{os.getpid()}-{os.urandom(3).hex()}"
    return path.with_name(f"{path.stem}{tag}{path.suffix}" if keep_suffix else f"{path.name}{tag}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | Path, keep_suffix: bool = False,
                  on_existing: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path for ``path``; when the block succeeds it is renamed onto ``path``.

    The block creates the file or folder at the yielded path. An existing file at ``path`` is replaced;
    an existing folder is passed to ``on_existing`` first (which removes it, or raises): without the hook
    a folder is never replaced. If the block fails, the temporary is removed; if ``on_existing`` raises,
    the finished temporary is kept and the error propagates (its name is in the error where the hook says).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, keep_suffix)
    keep = False
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            if on_existing is None:
                raise FileExistsError(f"{path}: a folder is in the way of this output")
            try:
                on_existing(path)
            except BaseException:
                keep = True
                raise
        os.replace(tmp, path)
    finally:
        if not keep and (tmp.exists() or tmp.is_symlink()):
            _remove(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_csv_atomic(df, out: Path) -> None:
    """Write a pandas DataFrame to ``out`` through a temporary file renamed when complete."""
    with atomic_output(out) as tmp:
        df.to_csv(tmp, index=False)


def sweep_stale(out: str | Path, require: str | None = None) -> list[Path]:
    """Remove the temporaries of ``out`` (see the module docstring) left by processes that are gone;
    with ``require``, only temporary folders holding a file of that name (a marker proving
    they are ours). Returns what was removed."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(re.escape(out.stem) + re.escape(TMP_TAG) + r"(\d+)(?:-[0-9a-f]+)?" + re.escape(out.suffix)
                         + "|" + re.escape(out.name) + re.escape(TMP_TAG) + r"(\d+)(?:-[0-9a-f]+)?")
    removed = []
    for candidate in out.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if not match:
            continue
        if require is not None and not (candidate / require).exists():
            continue
        pid = int(match.group(1) or match.group(2))
        if not pid_alive(pid):
            _remove(candidate)
            removed.append(candidate)
    return removed
