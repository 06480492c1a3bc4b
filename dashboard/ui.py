"""Small UI helpers shared by the pages: the workspace, persisted choices, pickers, progress.

Everything about datasets and runs is read from disk on every run; ``st.session_state`` only
holds the user's *choices* (which dataset, which run), re-assigned in the router so a page
switch does not drop them (facts/streamlit.md §1.2).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from darknet_runner.rundir import RunDir
from dashboard import gallery, journey
from pipeline.workspace import Workspace

# Choices kept across page switches (non-widget state re-assigned by the router), with defaults.
PERSISTED = {
    "dataset": None,
    "run": None,
    "class_query": "",
    "gallery_seed": 0,
    "conf": 0.25,
    "darknet_setting": "",
    "gallery_n": 12,
}
GRID_COLUMNS = 4
PROGRESS_EVERY_S = 0.2  # redraw a progress bar at most this often (each redraw is a websocket message)


def workspace() -> Workspace:
    """The workspace of this server: ``-- --workspace W``, then ``$STUDIO_WORKSPACE``, then ./workspace."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return Workspace.open(known.workspace)


def keep_choices() -> None:
    """Re-assign the persisted keys so widgets bound to them survive a page switch."""
    for key, default in PERSISTED.items():
        st.session_state[key] = st.session_state.get(key, default)
    for key in ("dataset", "run"):
        pending = st.session_state.pop(f"_pending_{key}", None)
        if pending is not None:
            st.session_state[key] = pending


def select(kind: str, value: str) -> None:
    """Make ``value`` the current dataset or run (applied before the sidebar pickers on the next run)."""
    st.session_state[f"_pending_{kind}"] = value


def _newest(paths: list[Path]) -> str | None:
    existing = [p for p in paths if p.exists()]
    return max(existing, key=lambda p: p.stat().st_mtime).parent.name if existing else None


def sidebar() -> None:
    """Workspace path, demo badge, dataset and run pickers (shared by every page)."""
    ws = workspace()
    with st.sidebar:
        st.caption("Workspace")
        st.code(str(ws.root), language=None)
        if ws.is_demo:
            st.caption(":orange-badge[DEMO workspace]")
        _picker("dataset", "Dataset", ws.datasets(), [ws.dataset(s).manifest_path for s in ws.datasets()])
        runs = journey.training_runs(ws)  # the zero-shot baselines are shown on Evaluate, not picked
        _picker("run", "Run", runs, [RunDir(ws.run_dir(r)).manifest_path for r in runs])


def _picker(key: str, label: str, options: list[str], manifests: list[Path]) -> None:
    # A choice that no longer exists on disk (deleted, other workspace) falls back to the newest.
    if st.session_state.get(key) not in options:
        st.session_state[key] = _newest(manifests)
    if options:
        st.selectbox(label, options, key=key)
    else:
        st.caption(f"No {label.lower()} yet.")


def flash(message: str, kind: str = "error") -> None:
    """Keep a message for the next run of the page (callbacks and ``st.rerun`` draw nothing).

    ``kind`` is "error" or "success".
    """
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flash() -> None:
    """Show and forget the messages left by :func:`flash`."""
    for kind, message in st.session_state.pop("_flash", []):
        (st.success if kind == "success" else st.error)(md_escape(message))


def in_page_words(message: str, words: dict[str, str] | None = None) -> str:
    """A library sentence with its command-line hints replaced by the page's own words.

    ``words`` maps a phrase of the sentence (``"use --overwrite"``) to what the page calls it
    (``"tick “Replace an existing dataset of that name”"``); longer phrases are replaced first.
    """
    for phrase in sorted(words or {}, key=len, reverse=True):
        message = message.replace(phrase, words[phrase])
    return message


def failed(status, label: str, err: BaseException | str, words: dict[str, str] | None = None) -> None:
    """Mark an ``st.status`` panel failed and keep it open with the reason, in the page's words.

    Call inside the ``with st.status(...)`` block: a collapsed "Build failed" hides why.
    """
    status.update(label=label, state="error", expanded=True)
    st.error(md_escape(in_page_words(str(err), words)))


def current_dataset() -> str | None:
    """Slug of the dataset chosen in the sidebar (None when the workspace has none)."""
    return st.session_state.get("dataset")


def current_run() -> str | None:
    """Id of the run chosen in the sidebar (None when the workspace has none)."""
    return st.session_state.get("run")


def manifest(ws: Workspace, slug: str) -> dict:
    """The dataset's dataset.json (an empty dict when it is missing)."""
    return ws.dataset(slug).load({}) or {}


def require_dataset(ws: Workspace) -> str:
    """The current dataset's slug, or a pointer to the Dataset page and the end of this page's run."""
    slug = current_dataset()
    if not slug:
        st.info("No dataset yet: build one on the Dataset page first.")
        st.page_link("views/dataset.py", label="Go to Dataset", icon=":material/dataset:")
        st.stop()
    return slug


def progress_callback(label: str) -> Callable[[int, int, str], None]:
    """A ``ProgressFn`` drawing an ``st.progress`` bar; calls from worker threads are ignored.

    Streamlit elements may only be touched from the script thread (facts/streamlit.md §1.7).
    """
    bar = st.progress(0.0, text=label)
    last = [0.0]

    def update(done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        finished = total and done >= total
        if get_script_run_ctx(suppress_warning=True) is None or (now - last[0] < PROGRESS_EVERY_S and not finished):
            return
        last[0] = now
        fraction = min(1.0, done / total) if total else 0.0
        bar.progress(fraction, text=f"{label}: {done}/{total} {message}".strip())

    return update


def show_path(label: str, text: str, ws: Workspace | None = None) -> Path | None:
    """Resolve a path the user typed and show where it really points (None for empty text)."""
    if not text.strip():
        return None
    path = Path(text.strip()).expanduser().resolve()
    inside = ws is not None and ws.contains(path)
    where = "inside the workspace" if inside else "outside the workspace (read only)"
    shown = str(path).replace("`", "'")  # inside a code span: nothing is interpreted but a backtick
    st.caption(f"{label} resolves to `{shown}` — {where}; exists: {'yes' if path.exists() else 'no'}.")
    return path


def human_bytes(size: float) -> str:
    """``1536`` → ``"1.5 KB"``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


# Cached functions below take a change stamp (mtime and size) as an ordinary argument: Streamlit
# leaves parameters whose names start with "_" out of the cache key, so a stamp named that way
# never invalidates anything (a rebuilt dataset would keep showing the old table).


def mtime_ns(path: Path) -> int:
    """Modification time used as a cache key (0 when the file does not exist)."""
    try:
        return Path(path).stat().st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return 0


def stamp(*paths: Path) -> tuple[tuple[int, int], ...]:
    """A change stamp of files for a cache key: (mtime_ns, size) each, (0, -1) for a missing one."""
    out = []
    for path in paths:
        try:
            info = Path(path).stat()
            out.append((info.st_mtime_ns, info.st_size))
        except (FileNotFoundError, NotADirectoryError):
            out.append((0, -1))
    return tuple(out)


@st.cache_data(max_entries=16, show_spinner=False)
def _read_parquet(path: str, file_stamp: tuple) -> pd.DataFrame:
    return pd.read_parquet(path)


def read_parquet(path: Path) -> pd.DataFrame | None:
    """A parquet file as a DataFrame (cached until the file changes); None when it is missing."""
    file_stamp = stamp(path)
    return None if file_stamp[0][0] == 0 else _read_parquet(str(path), file_stamp)


@st.cache_data(max_entries=1024, show_spinner=False)
def _tile(path: str, file_stamp: tuple, boxes: tuple, labels: tuple | None, colors: tuple | None,
          side: int) -> bytes:
    rgb = gallery.render_tile(Path(path), np.array(boxes, dtype=np.float64).reshape(-1, 4),
                              list(labels) if labels else None, list(colors) if colors else None, side)
    return gallery.to_jpeg(rgb)


def tile(path: Path | None, boxes_xyxy_rel: np.ndarray, labels=None, colors=None,
         side: int = gallery.TILE_SIDE) -> bytes | None:
    """JPEG bytes of an image with ``boxes_xyxy_rel`` drawn (cached); None when it cannot be decoded.

    ``colors`` is None (ground-truth colour) or one RGB tuple per box.
    """
    from pipeline.images.imageio import ImageDecodeError

    file_stamp = stamp(path) if path is not None else ((0, -1),)
    if file_stamp[0][0] == 0:  # not fetched, or deleted since: say so rather than show an old tile
        return None
    boxes = tuple(map(tuple, np.asarray(boxes_xyxy_rel, dtype=np.float64).reshape(-1, 4).round(6)))
    colors = tuple(tuple(int(v) for v in c) for c in colors) if colors is not None else None
    try:
        return _tile(str(path), file_stamp, boxes, tuple(labels) if labels else None, colors, side)
    except (ImageDecodeError, FileNotFoundError):
        return None


def show_grid(tiles: list[tuple[bytes | None, str]], columns: int = GRID_COLUMNS) -> None:
    """Images in a grid with captions; a missing image is said, not hidden."""
    cols = st.columns(columns)
    for i, (data, caption) in enumerate(tiles):
        with cols[i % columns]:
            if data is None:
                st.caption(f"{caption}: pixels not available (not fetched, deleted or undecodable)")
            else:
                st.image(data, caption=caption, width="stretch")


DETAIL_SIDE = 720  # longest side of the larger view of one image, in pixels


def pick_image(ids: list[str], key: str, describe: Callable[[str], str] | None = None) -> str | None:
    """A "Look closer at" chooser over ``ids`` (None until the user picks one)."""
    if not ids:
        return None
    if st.session_state.get(key) not in ids:
        st.session_state.pop(key, None)  # the gallery changed: its old choice is gone
    return st.selectbox("Look closer at", ids, index=None, key=key, format_func=describe or str,
                        placeholder="choose an image to see it larger, with its boxes listed")


def show_detail(data: bytes | None, caption: str, boxes: pd.DataFrame) -> None:
    """One image larger, beside the table of its boxes (row numbers are the numbers drawn on it)."""
    left, right = st.columns([3, 2])
    with left:
        if data is None:
            st.caption(f"{caption}: pixels not available (not fetched, deleted or undecodable)")
        else:
            st.image(data, caption=caption, width="stretch")
    with right:
        if boxes.empty:
            st.caption("No boxes on this image.")
        else:
            st.table(boxes)


MARKDOWN_SPECIALS = "\\`*_{}[]<>()#+-.!|~$:"


def md_escape(text: str) -> str:
    """User text made inert in Streamlit markdown (HTML is never enabled; this stops formatting too)."""
    return "".join("\\" + ch if ch in MARKDOWN_SPECIALS else ch for ch in str(text))
