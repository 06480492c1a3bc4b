"""Split: train/valid/test ratios (their sum enforced) and a seed → the darknet list files."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import ui
from pipeline import split
from pipeline.cli import UserError
from pipeline.workspace import read_json

SPLITS = ("train", "valid", "test")
DEFAULT_PERCENT = {"train": 80, "valid": 10, "test": 10}


def _ratios() -> tuple[dict[str, int], bool]:
    """Three percentages and whether they sum to 100."""
    cols = st.columns(3)
    percent = {name: int(col.number_input(f"{name} %", min_value=0, max_value=100, value=DEFAULT_PERCENT[name],
                                          step=5, key=f"split_{name}"))
               for name, col in zip(SPLITS, cols)}
    total = sum(percent.values())
    if total != 100:
        st.error(f"The ratios must sum to 100 %; they sum to {total} %.")
    return percent, total == 100


def _preview(n_images: int, percent: dict[str, int]) -> None:
    """Images each split will get: the writer's own rounding applied to the prepared images."""
    counts = split.split_counts(n_images, tuple(percent[name] / 100 for name in SPLITS))
    st.dataframe(pd.DataFrame([dict(zip(SPLITS, counts))], index=["images"]), width="stretch")
    st.caption(f"{n_images} prepared images (an image is listed once its resized copy and label exist).")


def _write(slug: str, percent: dict[str, int], seed: int, official: bool) -> None:
    ratios = tuple(percent[name] / 100 for name in SPLITS)
    try:
        result = split.split_dataset(ws, slug, ratios=ratios, seed=seed, official=official)
    except (UserError, ValueError, FileNotFoundError) as err:
        st.error(ui.md_escape(str(err)))
        return
    st.success(f"Wrote the split lists: {result.get('counts', result)}")


def _current(slug: str) -> None:
    info = read_json(ws.dataset_dir(slug) / "splits" / "split.json", default=None)
    if info is None:
        st.caption("No split written yet.")
        return
    st.subheader("Current split")
    st.dataframe(pd.DataFrame([info.get("counts", {})], index=["images"]), width="stretch")
    st.caption(f"Ratios {info.get('ratios')}, seed {info.get('seed')}.")


ws = ui.workspace()
st.title("Split")
slug = ui.require_dataset(ws)
st.caption(f"Dataset: {slug}")
yolo = ws.dataset_dir(slug) / "yolo"
prepared = sum(1 for p in yolo.glob("*.txt") if p.with_suffix(".jpg").exists()) if yolo.is_dir() else 0
with st.container(border=True):
    percent, valid = _ratios()
    left, right = st.columns(2)
    seed = int(left.number_input("Seed", min_value=0, value=0, key="split_seed"))
    official = right.checkbox("Keep Open Images' own train/validation/test subsets", key="split_official")
    if not prepared:
        st.warning("No prepared image yet: run the Prepare page first.")
    elif valid and not official:
        _preview(prepared, percent)
    if st.button("Write split", type="primary", disabled=not valid, icon=":material/call_split:"):
        _write(slug, percent, seed, official)
_current(slug)
