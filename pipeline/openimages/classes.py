"""The 600 boxable classes: names ↔ MIDs, search, suggestions, and the class hierarchy.

``class-descriptions-boxable.csv`` has no header in the v5 file but may have one elsewhere, so a
first row whose first field is not a MID is dropped. The hierarchy is the nested
``{"LabelName", "Subcategory": [...], "Part": [...]}`` JSON; a class may sit under several
parents, so its children are the union over every place it appears. Parts are not children.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
from pathlib import Path

import pandas as pd

from pipeline.cli import UserError
from pipeline.workspace import Workspace

CLASS_FILE = "class-descriptions-boxable.csv"
HIERARCHY_FILE = "bbox_labels_600_hierarchy.json"
MID_PREFIX = "/m/"


def _class_path(path_or_ws: Workspace | str | os.PathLike) -> Path:
    if isinstance(path_or_ws, Workspace):
        return path_or_ws.metadata_dir / CLASS_FILE
    path = Path(path_or_ws)
    return path / CLASS_FILE if path.is_dir() else path


def load_classes(path_or_ws: Workspace | str | os.PathLike) -> pd.DataFrame:
    """Read the class table (a CSV path, a folder holding it, or a workspace) → columns mid, name.

    Raises:
        UserError: the file is missing or has no ``/m/…,name`` rows.
    """
    path = _class_path(path_or_ws)
    if not path.is_file():
        raise UserError(f"no class table at {path}: run `python -m pipeline metadata download` or `metadata link`")
    frame = pd.read_csv(path, header=None, names=["mid", "name"], dtype=str, keep_default_na=False,
                        usecols=[0, 1], encoding="utf-8-sig")
    if len(frame) and not frame.loc[0, "mid"].startswith(MID_PREFIX):
        frame = frame.iloc[1:]  # a header row such as "LabelName,DisplayName"
    if frame.empty or not frame["mid"].str.startswith(MID_PREFIX).all():
        raise UserError(f"{path} is not a class table: expected rows of `/m/…,name`")
    return frame.reset_index(drop=True)


def search_classes(df: pd.DataFrame, text: str) -> pd.DataFrame:
    """Rows whose name or MID contains ``text`` (case-insensitive); exact name matches first."""
    needle = text.strip().lower()
    if not needle:
        return df.copy()
    names, mids = df["name"].str.lower(), df["mid"].str.lower()
    hits = df[names.str.contains(needle, regex=False) | mids.str.contains(needle, regex=False)]
    exact = hits["name"].str.lower() == needle
    return pd.concat([hits[exact], hits[~exact]]).reset_index(drop=True)


def suggest(df: pd.DataFrame, name: str, n: int = 5) -> list[str]:
    """The ``n`` class names closest to ``name`` (difflib, case-insensitive)."""
    by_lower = {str(v).lower(): str(v) for v in df["name"]}
    close = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[c] for c in close]


def resolve_class(df: pd.DataFrame, name_or_mid: str) -> tuple[str, str]:
    """A class name (any case) or MID → ``(mid, name)``.

    Raises:
        UserError: no such class; the message suggests the closest names.
    """
    key = name_or_mid.strip()
    if key.startswith(MID_PREFIX):
        rows = df[df["mid"] == key]
    else:
        rows = df[df["name"].str.lower() == key.lower()]
    if len(rows):
        return str(rows.iloc[0]["mid"]), str(rows.iloc[0]["name"])
    close = suggest(df, key)
    hint = f"; did you mean {', '.join(close)}?" if close else "; try `python -m pipeline classes --search TEXT`"
    raise UserError(f"no Open Images class {key!r}{hint}")


def load_hierarchy(path: str | os.PathLike | Workspace) -> dict:
    """Read ``bbox_labels_600_hierarchy.json`` (a path, or a workspace's metadata copy)."""
    path = path.metadata_dir / HIERARCHY_FILE if isinstance(path, Workspace) else Path(path)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no class hierarchy at {path}: run `python -m pipeline metadata download`") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None


def _nodes(node: dict):
    yield node
    for key in ("Subcategory", "Part"):
        for child in node.get(key, []):
            yield from _nodes(child)


def children(hierarchy: dict, mid: str) -> list[str]:
    """Direct sub-categories of ``mid`` (Boat → Barge, Gondola, Canoe), in file order, no repeats."""
    found: dict[str, None] = {}
    for node in _nodes(hierarchy):
        if node.get("LabelName") == mid:
            for child in node.get("Subcategory", []):
                found[child["LabelName"]] = None
    return list(found)


def descendants(hierarchy: dict, mid: str) -> list[str]:
    """All sub-categories below ``mid``, depth first, no repeats (parts excluded)."""
    found: dict[str, None] = {}
    stack = list(reversed(children(hierarchy, mid)))
    while stack:
        current = stack.pop()
        if current in found or current == mid:
            continue
        found[current] = None
        stack.extend(reversed(children(hierarchy, current)))
    return list(found)


# --------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    table = load_classes(ws)
    rows = search_classes(table, args.search or "")
    hierarchy_path = ws.metadata_dir / HIERARCHY_FILE
    hierarchy = load_hierarchy(hierarchy_path) if hierarchy_path.exists() else {}
    names = dict(zip(table["mid"], table["name"]))
    if rows.empty:
        close = suggest(table, args.search or "")
        print(f"no class matches {args.search!r}" + (f"; closest: {', '.join(close)}" if close else ""))
        return 1
    width = max(len(m) for m in rows["mid"])
    for mid, name in zip(rows["mid"], rows["name"]):
        kids = [names.get(k, k) for k in children(hierarchy, mid)] if hierarchy else []
        print(f"{mid:<{width}}  {name}" + (f"  (children: {', '.join(kids)})" if kids else ""))
    print(f"{len(rows)} of {len(table)} classes")
    return 0


def register(subparsers) -> None:
    """``python -m pipeline classes [--search TEXT]``."""
    parser = subparsers.add_parser("classes", help="list or search the boxable classes",
                                   description="List the 600 boxable classes, or those whose name or MID contains TEXT.")
    parser.add_argument("--search", metavar="TEXT", help="case-insensitive text in the name or MID")
    parser.set_defaults(func=_run)
