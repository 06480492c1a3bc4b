"""Split: train/valid/test ratios (each above 0, their sum enforced) and a seed → the darknet list files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import ui
from pipeline.cli import UserError
from pipeline.workspace import Workspace
from pipeline.yolo import health, split

SPLITS = ("train", "valid", "test")
DEFAULT_PERCENT = {"train": 80, "valid": 10, "test": 10}
PAGE_WORDS = {"run prepare first": "run the Prepare page first", "build it first": "build it on the Dataset page first"}
MODE_NAMES = {"hash": "exact counts", "threshold": "stable", "official": "Open Images' own subsets"}
STABLE_HELP = ("Off: images are ranked and cut, so each split gets its share to within one image, but adding "
               "images later may move a few existing ones to a neighbouring split. On: each image's split depends "
               "on that image alone, so adding images never moves an existing one, but the counts miss the "
               "ratios by chance (about ±30 images for a 10 % split of 10,000).")


def _ratio_problems(percent: dict[str, int]) -> list[str]:
    """What is wrong with the percentages, empty when split_dataset would accept them."""
    problems = []
    empty = [name for name in SPLITS if percent[name] <= 0]
    if empty:
        problems.append(f"Every split needs images: give {' and '.join(empty)} more than 0 %.")
    total = sum(percent.values())
    if total != 100:
        problems.append(f"The ratios must sum to 100 %; they sum to {total} %.")
    return problems


def _ratios() -> tuple[dict[str, int], bool]:
    """Three percentages and whether split_dataset would accept them (each above 0, summing to 100)."""
    cols = st.columns(3)
    percent = {name: int(col.number_input(f"{name} %", min_value=0, max_value=100, value=DEFAULT_PERCENT[name],
                                          step=5, key=f"split_{name}"))
               for name, col in zip(SPLITS, cols)}
    problems = _ratio_problems(percent)
    for problem in problems:
        st.error(problem)
    return percent, not problems


def _preview(n_images: int, percent: dict[str, int]) -> None:
    """Images each split will get: the writer's own rounding applied to the prepared images."""
    counts = split.split_counts(n_images, tuple(percent[name] / 100 for name in SPLITS))
    st.dataframe(pd.DataFrame([dict(zip(SPLITS, counts))], index=["images"]), width="stretch")
    st.caption(f"{n_images} prepared images (an image is listed once its resized copy and label exist).")


@st.cache_data(show_spinner=False, max_entries=8)
def _split_table(root: str, slug: str, file_stamp: tuple) -> pd.DataFrame:
    """Images, boxes (from the written label files) and images without boxes, one column per split
    in train, valid, test order (cached until the split or the prepared labels change)."""
    ws_ = Workspace(Path(root))
    table = health.split_table(split.read_split(ws_, slug), health.written_labels(ws_, slug))
    return table.T.rename(index={"empty_images": "images without boxes"})[list(SPLITS)]


def _table(slug: str) -> pd.DataFrame:
    dataset = ws.dataset(slug)
    return _split_table(str(ws.root), slug, ui.stamp(dataset.split_json, dataset.manifest_path))


def _write(slug: str, percent: dict[str, int], seed: int, official: bool, stable: bool) -> None:
    ratios = tuple(percent[name] / 100 for name in SPLITS)
    try:
        split.split_dataset(ws, slug, ratios=ratios, seed=seed, official=official, stable=stable)
    except (UserError, ValueError, FileNotFoundError) as err:
        st.error(ui.md_escape(ui.in_page_words(str(err), PAGE_WORDS)))
        return
    table = _table(slug)
    parts = [f"{name} {table.loc['images', name]} images ({table.loc['boxes', name]} boxes)" for name in SPLITS]
    st.success(f"Wrote the split lists: {', '.join(parts)}.")


def _current(slug: str) -> None:
    info = ws.dataset(slug).split_info()
    if not info:
        st.caption("No split written yet.")
        return
    st.subheader("Current split")
    st.table(_table(slug))
    mode = MODE_NAMES.get(info.get("mode"), info.get("mode"))
    ratios = info.get("ratios")
    shown = " / ".join(f"{round(100 * r)} %" for r in ratios) if ratios else "Open Images' own"
    st.caption(f"Mode: {mode}; ratios (train / valid / test) {shown}, seed {info.get('seed')}.")


ws = ui.workspace()
st.title("Split")
slug = ui.require_dataset(ws)
st.caption(f"Dataset: {slug}")
yolo = ws.dataset(slug).yolo
prepared = sum(1 for p in yolo.glob("*.txt") if p.with_suffix(".jpg").exists()) if yolo.is_dir() else 0
with st.container(border=True):
    percent, valid = _ratios()
    left, right = st.columns(2)
    seed = int(left.number_input("Seed", min_value=0, value=0, key="split_seed"))
    official = right.checkbox("Keep Open Images' own train/validation/test subsets", key="split_official")
    stable = right.checkbox("Stable when images are added", key="split_stable", disabled=official, help=STABLE_HELP)
    if not prepared:
        st.warning("No prepared image yet: run the Prepare page first.")
    elif valid and stable and not official:
        st.caption(f"{prepared} prepared images; a stable split gives each split about its share.")
    elif valid and not official:
        _preview(prepared, percent)
    if st.button("Write split", type="primary", disabled=not valid, icon=":material/call_split:"):
        _write(slug, percent, seed, official, stable)
_current(slug)
