"""The one rule for every option that writes a file or a folder (`explain --html`, `plot -o`, exports).

charlm writes a file only where doing so cannot lose anything of the user's:
- a path that does not exist yet, or an existing file that charlm itself wrote, of the same kind (an HTML
  page carrying charlm's generator mark, a PNG whose Software field says charlm);
- never a folder, never one of a run folder's own files (its checkpoints, its data, its manifest, metrics
  and lock), nor any other file inside a run folder but plot's own RUN/curve.png, never the input being
  read (compared by device and inode, so a hard link or a symbolic link to it is caught as well), never an
  existing file of anyone else, nor through a symbolic link;
unless the user adds --force (a folder and a run folder's own files are refused even then, as nothing
useful can come of writing there).

The file is written to a temporary name beside it and renamed over the target in one step, so a failed write
leaves the old file whole, and replacing a file (--force) replaces that name only: another hard link to the
old file, or the file a symbolic link pointed to, keeps its content.

`check_dir` is the same rule for an option that writes a folder of files: a new or empty folder, or with
--force an existing one, whose other files are left alone (charlm only ever adds or replaces its own names).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal

from charlm import __version__
from charlm.checkpoint.layout import is_step_dir
from charlm.checkpoint.manifest import OWN_NAMES, run_folder_of
from charlm.errors import CharlmError, UsageError

Kind = Literal["html", "png", "onnx", "file"]
HTML_MARK = f'<meta name="generator" content="charlm {__version__}">'
PNG_SOFTWARE = f"charlm {__version__}"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEAD = 8192
_NAMES = {"html": "an HTML page", "png": "a PNG image", "onnx": "an ONNX model", "file": "a file"}


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD)
    except OSError:
        return b""


def _is_charlm_html(path: Path) -> bool:
    head = _head(path)
    return head.lstrip().lower().startswith(b"<!doctype html") and (
        b'<meta name="generator" content="charlm' in head or b"<title>charlm explain" in head
    )


def _is_charlm_png(path: Path) -> bool:
    head = _head(path)
    if not head.startswith(_PNG_SIGNATURE):
        return False
    if b"tEXtSoftware\x00charlm" in head:
        return True
    # a curve an earlier charlm drew into its run folder (then only matplotlib's own Software field)
    return path.name == "curve.png" and run_folder_of(path.parent) is not None


RECOGNISERS: dict[str, Callable[[Path], bool]] = {"html": _is_charlm_html, "png": _is_charlm_png}


def written_by_charlm(path: Path, kind: Kind) -> bool:
    """Whether the existing file `path` is one charlm wrote, of this kind."""
    recognise = RECOGNISERS.get(kind)
    return recognise is not None and recognise(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _run_internal(path: Path, kind: Kind) -> Path | None:
    """The run folder whose own files `path` would be (a checkpoint, its data, its manifest...), if any."""
    absolute = Path(os.path.abspath(path))
    run = run_folder_of(absolute.parent)
    if run is None:
        return None
    first = absolute.relative_to(run).parts[0]
    own = first in OWN_NAMES and not (first == "curve.png" and kind == "png")
    if own or is_step_dir(run / first) or first.startswith("."):
        return run
    return None


def check_file(
    path: Path, *, option: str, kind: Kind = "file", force: bool = False, inputs: Sequence[Path | str] = ()
) -> None:
    """Refuse, in one line, to write `path` where that could lose something (the module's docstring)."""
    if str(path) == "-":
        return
    where = f"{option} {path}"
    if path.is_dir():
        raise UsageError(f"{where}: is a folder; give the name of a file to write")
    if not path.parent.is_dir():
        raise UsageError(f"{where}: there is no folder {path.parent}")
    for source in inputs:
        if str(source) != "-" and _same_file(Path(source), path) and not force:
            raise UsageError(f"{where}: that is {source}, the input being read; choose another file")
    if (run := _run_internal(path, kind)) is not None:
        raise UsageError(f"{where}: is one of the files of the run folder {run}; choose a file outside it")
    run = run_folder_of(Path(os.path.abspath(path)).parent)
    if run is not None and not force and not (kind == "png" and path.name == "curve.png" and path.parent == run):
        raise UsageError(
            f"{where}: is inside the run folder {run}, which holds only what charlm writes there; choose a file "
            "outside it (or add --force)"
        )
    if not os.path.lexists(path) or force:
        return
    if path.is_symlink():
        raise UsageError(
            f"{where}: is a symbolic link (to {os.readlink(path)}); charlm does not write through links "
            "(add --force to replace the link itself)"
        )
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UsageError(f"{where}: is not a regular file (add --force to write to it anyway)")
    if not written_by_charlm(path, kind):
        raise UsageError(
            f"{where}: already exists and is not {_NAMES[kind]} charlm wrote; "
            "choose another name, or add --force to replace it"
        )


def check_dir(path: Path, *, option: str, force: bool = False, inputs: Sequence[Path | str] = ()) -> None:
    """The rule for an option that writes a folder: new or empty, or (with force) an existing folder whose
    other files charlm leaves alone; never a file, a run folder or its own files, nor (without force) a folder
    inside a run folder; and one that can really be created and written (tried: permissions alone do not say,
    on a read-only disk or as root)."""
    where = f"{option} {path}"
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError(f"{where}: exists and is not a folder")
    if path.is_symlink() and not force:
        raise UsageError(f"{where}: is a symbolic link (to {os.readlink(path)}); add --force to write into it")
    absolute = Path(os.path.abspath(path))
    run = run_folder_of(absolute)
    if run == absolute:
        raise UsageError(f"{where}: is the run folder {run}; choose a folder outside it")
    if run is not None and _run_internal(absolute / "x", "file") is not None:
        raise UsageError(f"{where}: is inside the run folder {run}, among its own files; choose a folder outside it")
    if run is not None and not force:
        raise UsageError(f"{where}: is inside the run folder {run}; choose a folder outside it, or add --force")
    for source in inputs:
        if str(source) != "-" and Path(os.path.abspath(source)).parent == absolute and not force:
            raise UsageError(f"{where}: holds {source}, the input being read; choose another folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        shown = ", ".join(sorted(p.name for p in path.iterdir())[:3])
        raise UsageError(
            f"{where}: is not empty (it holds {shown}...); choose a new or empty folder, or add --force to add "
            "charlm's files to it (nothing else in it is touched)"
        )
    existing = next(p for p in [absolute, *absolute.parents] if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{where}: cannot be created ({existing} is a file)")
    try:
        tempfile.TemporaryDirectory(prefix=".charlm-probe-", dir=existing).cleanup()
    except OSError as e:
        raise UsageError(f"{where}: cannot write there ({existing}: {e.strerror or e})") from None


@contextmanager
def replacing(path: Path, *, option: str) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; renamed over `path` only once it is whole.

    A target that is not a regular file nor a link (a device, a pipe: only with --force) is written in place."""
    where = f"{option} {path}"
    try:
        special = os.path.exists(path) and not path.is_symlink() and not stat.S_ISREG(os.stat(path).st_mode)
        if special:
            with open(path, "wb") as f:
                yield f
            return
        tmp = path.parent / f".{path.name}.charlm-{os.getpid()}.tmp"
        try:
            with open(tmp, "xb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                tmp.unlink()
    except OSError as e:
        raise CharlmError(f"{where}: cannot write it ({e.strerror or e})") from None


def write_file(path: Path, data: bytes | str, *, option: str) -> None:
    """Write `data` to `path` whole (see `replacing`); call check_file first."""
    with replacing(path, option=option) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
