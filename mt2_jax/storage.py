"""Paths that are local folders or bucket URLs (gs://, s3://, ...), through etils.epath.

Every module that reads or writes a user-given path (datasets, workdirs,
embeddings, probe caches and reports) goes through here, so that a URL works
wherever a local path does (tests/test_storage.py checks that no other module
opens one with `open`, `os.path` or `pathlib`). The rules (docs/design.md §2.4):

- Writes are atomic: a local file is written under a temporary name and
  renamed; an object appears in a bucket only when its upload completes, so it
  is written in one piece under its final name.
- A missing folder is reported before any compute starts, naming the path and,
  for a URL, whether the bucket itself is missing.
- ArrayRecord (and so Grain and TFDS data sources) reads local files only: a
  dataset in a bucket is first copied into a local cache (`local_copy`), or
  mounted (gcsfuse), which makes it a local path.
"""

import csv
import hashlib
import io
import os
import pathlib
import posixpath
import shutil
import uuid

from etils import epath
import numpy as np

# Where local copies of bucket datasets go (`local_copy`); override with MT2_JAX_CACHE.
CACHE_ENV = "MT2_JAX_CACHE"


def path(p) -> epath.Path:
  """A local path or a URL as an `epath.Path` (local paths made absolute)."""
  return epath.Path(p) if not is_local(p) else epath.Path(os.path.abspath(os.fspath(p)))


def is_local(p) -> bool:
  """False for a URL with a scheme (gs://, s3://, ...); True for a plain path."""
  return "://" not in os.fspath(p)


def _bucket(p) -> str | None:
  """'gs://bucket' of a URL, None for a local path."""
  s = os.fspath(p)
  if is_local(s):
    return None
  scheme, rest = s.split("://", 1)
  return f"{scheme}://{rest.split('/', 1)[0]}"


def _missing_bucket(p) -> str | None:
  """The bucket of URL `p` when that bucket does not exist, else None."""
  bucket = _bucket(p)
  if bucket is None:
    return None
  try:
    return None if epath.Path(bucket).exists() else bucket
  except Exception:  # pylint: disable=broad-except
    return None  # Not listable (permissions): the caller says what it knows.


def _missing(p, what: str) -> FileNotFoundError:
  bucket = _missing_bucket(p)
  if bucket is not None:
    return FileNotFoundError(f"{what}: the bucket {bucket} does not exist (or this machine's "
                             f"credentials cannot see it), so {p} does not either")
  return FileNotFoundError(f"{what}: {p} does not exist")


def require_dir(p, what: str) -> epath.Path:
  """`p` as a path; FileNotFoundError naming `what` and `p` when it is not a folder."""
  q = path(p)
  try:
    ok = q.is_dir()
  except OSError as e:
    raise FileNotFoundError(f"{what}: cannot read {p} ({type(e).__name__}: {e})") from e
  if not ok:
    if q.exists():
      raise NotADirectoryError(f"{what}: {p} is a file, not a folder")
    raise _missing(p, what)
  return q


def output_dir(p, what: str) -> epath.Path:
  """A folder to write into, made if missing; for a URL its bucket must exist.

  Creating the folder would otherwise create the bucket with whatever
  credentials the machine has, far from the user's intent.
  """
  q = path(p)
  bucket = _missing_bucket(p)
  if bucket is not None:
    raise FileNotFoundError(f"{what}: the bucket {bucket} does not exist (or this machine's "
                            f"credentials cannot see it); create it first")
  if q.exists() and not q.is_dir():
    raise NotADirectoryError(f"{what}: {p} is a file, not a folder")
  q.mkdir(parents=True, exist_ok=True)
  return q


def _tmp_name(target: epath.Path) -> epath.Path:
  return target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"


def write_bytes(target, data: bytes) -> None:
  """Writes `data` to `target` atomically (see the module docstring)."""
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(target):
    target.write_bytes(data)  # One upload: the object appears whole or not at all.
    return
  tmp = _tmp_name(target)
  tmp.write_bytes(data)
  os.replace(tmp, target)


def write_text(target, text: str) -> None:
  write_bytes(target, text.encode())


def read_csv(p) -> csv.DictReader:
  """A csv.DictReader over the file at a path or URL (read whole: labels files are small)."""
  return csv.DictReader(io.StringIO(path(p).read_bytes().decode("utf-8"), newline=""))


def save_npz(target, **arrays) -> None:
  """np.savez to a path or URL, atomically."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(target, buf.getvalue())


def load_npz(p) -> dict:
  """{name: array} of an .npz file at a path or URL."""
  with np.load(io.BytesIO(path(p).read_bytes())) as z:
    return {k: z[k] for k in z.files}


def put_file(local: pathlib.Path, target) -> None:
  """Moves a finished local file to `target` (a path or URL), atomically."""
  target = path(target)
  if is_local(target):
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(local, target)
  else:
    copy_file(local, target)
    os.remove(local)


def copy_file(src, target) -> None:
  """Copies a file between any two stores (this machine, a bucket), atomically."""
  src, target = path(src), path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(target):
    _stream(src, target)
    return
  tmp = _tmp_name(target)
  _stream(src, tmp)
  os.replace(tmp, target)


def _stream(src: epath.Path, dst: epath.Path) -> None:
  """Copies a file across stores (a bucket and this machine) in chunks."""
  with src.open("rb") as r, dst.open("wb") as w:
    shutil.copyfileobj(r, w, 1 << 24)


def local_dir(p) -> pathlib.Path:
  """A folder on this machine to write into before `put_file` moves files to `p`.

  `p` itself when it is local; otherwise a temporary folder under the cache.
  """
  if is_local(p):
    q = pathlib.Path(os.path.abspath(os.fspath(p)))
    q.mkdir(parents=True, exist_ok=True)
    return q
  q = cache_root() / "staging" / uuid.uuid4().hex
  q.mkdir(parents=True, exist_ok=True)
  return q


def join(base, rel: str) -> epath.Path:
  """`base`/`rel` with '..' resolved, for a local path or a URL."""
  s = os.fspath(path(base))
  if is_local(s):
    return path(os.path.normpath(os.path.join(s, rel)))
  scheme, rest = s.split("://", 1)
  return epath.Path(f"{scheme}://{posixpath.normpath(posixpath.join(rest, rel))}")


def relative(p, root) -> str:
  """`p`'s path below `root`, '/'-separated ('a/b.wav'); ValueError if it is not below."""
  p, root = os.fspath(path(p)), os.fspath(path(root)).rstrip("/")
  if not p.startswith(root + "/"):
    raise ValueError(f"{p} is not under {root}")
  return p[len(root) + 1:]


def drop_local_dir(local: pathlib.Path, p) -> None:
  """Removes what `local_dir(p)` made for a URL `p` (nothing for a local `p`)."""
  if not is_local(p):
    shutil.rmtree(local, ignore_errors=True)


def cache_root() -> pathlib.Path:
  return pathlib.Path(os.environ.get(CACHE_ENV) or
                      os.path.join(os.path.expanduser("~"), ".cache", "mt2_jax"))


def _walk(root: epath.Path, scheme: str | None):
  """(folder, file names) under root. Locally, linked folders are followed
  (data is often linked in), each real folder once, so a link cycle ends."""
  if scheme:
    for dirpath, _, names in root.walk():
      d = os.fspath(dirpath)  # fsspec's walk drops the scheme (etils 1.15).
      yield (d if "://" in d else f"{scheme}://{d}"), names
    return
  seen = set()
  for d, dirs, names in os.walk(os.fspath(root), followlinks=True):
    real = os.path.realpath(d)
    if real in seen:
      dirs[:] = []
      continue
    seen.add(real)
    yield d, names


def list_files(root, what: str = "folder") -> tuple[list[epath.Path], list[tuple[str, str]]]:
  """(every readable file under `root`, sorted; [(entry, reason)] for entries that are not).

  An entry that cannot be read (a dangling symlink, a file without read
  permission) is returned with its reason rather than silently left out.
  Linked local folders are listed as if they were there.
  """
  root = require_dir(root, what)
  files, bad = [], []
  scheme = None if is_local(root) else os.fspath(root).split("://", 1)[0]
  for d, names in _walk(root, scheme):
    for name in names:
      f = epath.Path(d) / name
      if is_local(f):
        if not os.path.exists(f):
          bad.append((os.fspath(f), "dangling symlink (its target does not exist)"))
          continue
        if not os.access(f, os.R_OK):
          bad.append((os.fspath(f), "not readable (permission denied)"))
          continue
      files.append(f)
  return sorted(files, key=os.fspath), bad


def local_copy(p, progress: bool = True) -> pathlib.Path:
  """A local folder with the contents of `p`: `p` itself when local, else a cached copy.

  The copy lives in `cache_root()/data/<hash of the URL>` and is reused: a file
  is downloaded again only when its size differs from the bucket's, each
  under a temporary name then renamed, so an interrupted copy resumes. The
  bucket is listed once per process and URL (the train loop, its eval and
  its checks all ask).
  """
  if is_local(p):
    return pathlib.Path(os.path.abspath(os.fspath(p)))
  key = (os.fspath(p).rstrip("/"), os.fspath(cache_root()))
  if key not in _COPIES or not _COPIES[key].is_dir():
    _COPIES[key] = _download(key[0], progress)
  return _COPIES[key]


_COPIES: dict[tuple[str, str], pathlib.Path] = {}  # (URL, cache root) -> copy made by this process.


def _download(p: str, progress: bool) -> pathlib.Path:
  src = require_dir(p, "dataset")
  key = hashlib.sha256(os.fspath(p).rstrip("/").encode()).hexdigest()[:16]
  dst = cache_root() / "data" / f"{src.name}-{key}"
  files, bad = list_files(src, "dataset")
  if bad:
    raise OSError(f"cannot read {bad[0][0]}: {bad[0][1]}")
  from tqdm import tqdm
  for f in tqdm(files, desc=f"copy {p}", unit="file", disable=not progress, dynamic_ncols=True):
    out = dst / relative(f, src)
    size = f.stat().length
    if out.exists() and out.stat().st_size == size:
      continue
    copy_file(f, out)
  return dst
