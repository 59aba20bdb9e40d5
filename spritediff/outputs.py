"""Writing results safely: output folders staged and moved into place whole, model file paths checked
before any work, files written atomically (temporary name, then rename), and strict JSON records."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from .errors import SpriteDiffError
from .interrupts import raise_if_stopped

NAME_MAX = 255  # bytes in one file name on the usual file systems


def prepare_out(path) -> Path:
    """Check, before any work, that the output folder can be made or updated; create nothing.

    out, if it exists, must be a writable folder; otherwise its nearest existing ancestor must be a writable
    folder (missing parents are made only when the results are in place); no name longer than NAME_MAX bytes.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise SpriteDiffError("--out must name a folder, got an empty path")
    out = Path(path)
    too_long = [part for part in out.parts if len(os.fsencode(part)) > NAME_MAX]
    if too_long:
        raise SpriteDiffError(f"cannot write to --out: a name in it is {len(os.fsencode(too_long[0]))} bytes long, "
                              f"at most {NAME_MAX}")
    if out.exists() and not out.is_dir():
        raise SpriteDiffError(f"--out {out} exists and is not a folder")
    folder = out if out.exists() else nearest_existing(out.absolute().parent)
    if not folder.is_dir():
        raise SpriteDiffError(f"cannot write to --out {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpriteDiffError(f"cannot write to --out {out}: {folder} is not writable")
    return out


def nearest_existing(path: Path) -> Path:
    """path itself or its closest ancestor that exists."""
    return next(p for p in [path, *path.parents] if p.exists())


def check_free_space(out: Path, nbytes: int, what: str) -> None:
    """A user error if out's file system has less than nbytes (plus 1 MB) free for the file `what`."""
    free = shutil.disk_usage(nearest_existing(out.absolute())).free
    if nbytes + 2**20 > free:
        raise SpriteDiffError(f"--out: {what} needs {nbytes / 1e9:.3g} GB but only {free / 1e9:.3g} GB are free")


class staged_output:
    """A hidden staging folder to write results into: inside out if it exists, else in out's nearest existing
    parent. On success the files move into out (a new out and its missing parents are created then, out by
    renaming the stage); on any failure or interrupt the stage is removed and out is exactly as it was."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def __enter__(self) -> Path:
        try:  # inside an existing out (the same file system as its files), else beside the out to be made
            home = self.out if self.out.is_dir() else nearest_existing(self.out.absolute().parent)
            self.stage = Path(tempfile.mkdtemp(prefix=".spritediff-stage-", dir=home))
        except OSError as err:
            raise SpriteDiffError(f"cannot write to --out {self.out}: {err.strerror or err}") from None
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)
        if exc_type is not None and issubclass(exc_type, OSError):  # e.g. the disk filled up while writing
            raise SpriteDiffError(f"cannot write to --out {self.out}: {exc.strerror or exc}") from None

    def _commit(self) -> None:
        raise_if_stopped()
        try:
            if not self.out.exists():
                self.out.parent.mkdir(parents=True, exist_ok=True)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.stage, 0o777 & ~umask)  # mkdtemp makes it owner-only; out is like any new folder
                os.rename(self.stage, self.out)
                return
            for item in self.stage.iterdir():
                os.replace(item, self.out / item.name)
        except OSError as err:
            raise SpriteDiffError(f"cannot write to --out {self.out}: {err.strerror or err}") from None


def model_out_path(path: str | os.PathLike, name: str = "--out") -> Path:
    """Check, before any work, that path can take a model file: a .safetensors name in an existing, writable
    folder, not itself a folder; `name` is the argument named in the error."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise SpriteDiffError(f"{name} must be a .safetensors file name, got {path!r}")
    out = Path(path)
    if out.suffix != ".safetensors":
        raise SpriteDiffError(f"{name} must end in .safetensors, got {out}")
    if len(os.fsencode(out.name)) > 250:
        raise SpriteDiffError(f"{name}: file name is {len(os.fsencode(out.name))} bytes long, at most 250")
    parent = out.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise SpriteDiffError(f"{name} folder {parent} {what}")
    if out.is_dir():
        raise SpriteDiffError(f"{name} {out} is a folder, not a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpriteDiffError(f"{name} folder {parent} is not writable")
    return out


def write_atomically(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path), then rename tmp_path over path; on failure nothing is left at path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates files owner-only; make them like any other file
        os.replace(tmp, path)
    except OSError as err:
        raise SpriteDiffError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def json_text(record, what: str = "record") -> str:
    """record as strict JSON (no NaN or Infinity); a non-finite number is a SpriteDiffError naming its key."""
    try:
        return json.dumps(record, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise SpriteDiffError(f"{what} holds a non-finite number at {_first_nonfinite(record)}; not written") from None


def write_json(path: Path, record) -> None:
    Path(path).write_text(json_text(record, Path(path).name))


def _first_nonfinite(value, where: str = "") -> str:
    """The key path of the first NaN or inf in a JSON-like value ("" when there is none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the top level"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _first_nonfinite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return ""
