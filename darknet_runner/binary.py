"""Find the darknet binary and tell which fork it is (pjreddie, AlexeyAB, hank-ai) and what it supports.

The fork is detected by running ``darknet version`` briefly (stdin closed):
- hank-ai prints its banner, e.g. ``Darknet V5 "Moonlit" v5.1-104-gf684e1d7``;
- AlexeyAB prints `` GPU isn't used`` / ``CUDA-version:`` and ``OpenCV isn't used`` / ``OpenCV version:``
  before ``Not an option: version`` (``src/darknet.c:main``);
- pjreddie prints only ``Not an option: version`` (and ``usage: darknet <function>`` with no argument).
A program that answers neither way (``/usr/bin/true`` prints nothing) is refused: it is not darknet.
The answer is cached per path and modification time, so a rebuilt binary is detected again.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.cli import UserError

log = logging.getLogger(__name__)

ENV_VAR = "DARKNET"
FALLBACK_PATHS = ("/usr/bin/darknet",)
PROBE_TIMEOUT_S = 15

PJREDDIE, ALEXEYAB, HANK = "pjreddie", "alexeyab", "hank-ai"
FORKS = (PJREDDIE, ALEXEYAB, HANK)

# (fork, pattern on the probe output); first match wins.
FORK_SIGNS = [
    (HANK, re.compile(r"Darknet V\d|hank-ai|ccoderun|Darknet/YOLO|\bv[2-9]\.\d+-\d+-g[0-9a-f]+", re.I)),
    (ALEXEYAB, re.compile(r"GPU isn't used|CUDA-version|OpenCV isn't used|OpenCV version|compute_capability", re.I)),
    (PJREDDIE, re.compile(r"Not an option|usage: \S*darknet", re.I)),
]
HANK_CPU_SIGN = re.compile(r"compiled to (?:only )?use the CPU|GPU is disabled|CPU[- ]only", re.I)
HANK_GPU_SIGN = re.compile(r"CUDA|ROCm|GPU #\d", re.I)

INSTALL_WAYS = (
    "no darknet binary was found (looked at the setting, $DARKNET, PATH and /usr/bin/darknet); "
    "for CPU training install Debian's package (sudo apt-get install darknet), for GPU training build "
    "AlexeyAB/darknet (make GPU=1 CUDNN=1 OPENCV=1) or hank-ai/darknet (cmake with CUDA) and point "
    "the studio at it with --darknet PATH or $DARKNET"
)


class DarknetNotFound(UserError):
    """No usable darknet binary; the message lists the ways to get one."""


@dataclass(frozen=True)
class DarknetInfo:
    """A darknet binary and what its fork can do."""

    path: str
    fork: str
    version_text: str
    supports_map: bool
    supports_dont_show: bool
    supports_nocolour: bool
    needs_yes_prompt: bool

    def to_dict(self) -> dict:
        return asdict(self)


_CACHE: dict[tuple[str, int], DarknetInfo | DarknetNotFound] = {}  # a refusal is remembered too


def candidate_paths(setting: str | None = None) -> list[str]:
    """Where to look, in order: the setting, ``$DARKNET``, PATH, /usr/bin/darknet."""
    found = [setting, os.environ.get(ENV_VAR), shutil.which("darknet"), *FALLBACK_PATHS]
    return [p for p in found if p]


def _resolve(candidate: str) -> Path | None:
    path = Path(candidate).expanduser()
    if not path.is_file() and os.sep not in candidate:
        located = shutil.which(candidate)
        path = Path(located) if located else path
    if path.is_file() and os.access(path, os.X_OK):
        return path.resolve()
    return None


def _unusable(setting: str) -> str | None:
    """One sentence saying why the chosen ``setting`` cannot be a darknet binary, or None when it can be run."""
    path = Path(setting).expanduser()
    if _resolve(setting) is not None:
        return None
    if path.is_dir():
        return f"{setting} is a folder, not a darknet binary: give the darknet program inside it"
    if path.exists():
        return f"{setting} is not executable: make it so (chmod +x) or give the darknet binary itself"
    return (f"the darknet binary {setting!r} does not exist; fix the path, or leave it empty so the studio "
            f"searches ($DARKNET, PATH)")


def find_darknet(setting: str | None = None) -> DarknetInfo:
    """The first darknet binary that answers like darknet, and its fork.

    Args:
        setting: a path (or command name) the user chose; tried first, and only it when given.

    Raises:
        DarknetNotFound: nothing usable was found, or the chosen setting is missing, a folder, not
            executable, or a program that is not darknet (one sentence each).
    """
    if setting:
        problem = _unusable(setting)
        if problem:
            raise DarknetNotFound(problem)
        return describe(_resolve(setting))
    for candidate in candidate_paths(setting):
        path = _resolve(candidate)
        if path is None:
            continue
        try:
            return describe(path)
        except DarknetNotFound as err:
            log.warning("skipping %s", err)
    raise DarknetNotFound(INSTALL_WAYS)


def describe(path: str | os.PathLike) -> DarknetInfo:
    """Probe one binary (cached per path and mtime).

    Raises:
        DarknetNotFound: the program cannot be run, or it did not answer like any darknet fork.
    """
    path = Path(path)
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _CACHE:
        text = probe(path)
        if detect_fork(text) is None:  # darknet with no argument prints "usage: <argv0> <function>"
            text = (text + "\n" + probe(path, ())).strip()
        if detect_fork(text) is None:
            _CACHE[key] = DarknetNotFound(f"{path} is not darknet: it did not answer like any darknet fork")
        else:
            _CACHE[key] = info_from_output(str(path), text)
    if isinstance(_CACHE[key], DarknetNotFound):
        raise DarknetNotFound(str(_CACHE[key]))
    return _CACHE[key]


def probe(path: Path, args: tuple[str, ...] = ("version",)) -> str:
    """Output of ``darknet version`` (or ``darknet ARGS``; stdout + stderr), run with stdin closed and a timeout."""
    try:
        done = subprocess.run([str(path), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=PROBE_TIMEOUT_S, check=False)
        return done.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as err:
        return (err.output or b"").decode("utf-8", "replace")
    except OSError as err:
        raise DarknetNotFound(f"the darknet binary {path} cannot be run ({err.strerror}); "
                              f"check it is built for this machine") from err


def detect_fork(text: str) -> str | None:
    """Which fork printed ``text`` (the probe output); None when it is no darknet's answer."""
    for fork, sign in FORK_SIGNS:
        if sign.search(text):
            return fork
    return None


def info_from_output(path: str, text: str) -> DarknetInfo:
    """Capabilities from the fork (facts §9): pjreddie has no -map/-dont_show; hank adds -nocolour
    and, in a CPU-only build, asks ``Type "yes"`` before training.

    Raises:
        DarknetNotFound: ``text`` is no darknet fork's answer.
    """
    fork = detect_fork(text)
    if fork is None:
        raise DarknetNotFound(f"{path} is not darknet: it did not answer like any darknet fork")
    return DarknetInfo(
        path=path, fork=fork, version_text=text.strip()[:2000],
        supports_map=fork != PJREDDIE, supports_dont_show=fork != PJREDDIE,
        supports_nocolour=fork == HANK,
        needs_yes_prompt=fork == HANK and bool(HANK_CPU_SIGN.search(text) or not HANK_GPU_SIGN.search(text)),
    )


def clear_cache() -> None:
    """Forget probed binaries (tests)."""
    _CACHE.clear()
