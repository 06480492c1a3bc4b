"""Prepare: resize to the network size and write YOLO labels; verify them; dataset health; anchors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import charts, gallery, ui
from pipeline.yolo import health, prepare, split, verify
from pipeline.cli import UserError
from pipeline.workspace import Workspace

SIZES = list(range(128, 640, 32))
VERIFY_N = 6


def _prepare(slug: str, size: int, letterbox: bool, quality: int, workers: int) -> None:
    with st.status(f"Preparing {slug} at {size}×{size}…", expanded=True) as status:
        try:
            summary = prepare.prepare_dataset(ws, slug, size=size, letterbox=letterbox, quality=quality,
                                              workers=workers or None, progress=ui.progress_callback("Preparing"))
        except UserError as err:
            status.update(label="Prepare failed", state="error")
            st.error(ui.md_escape(str(err)))
            return
        status.update(label=f"Prepared {summary['prepared']} of {summary['images']} images", state="complete")
    if summary["failed"]:
        st.warning(f"{len(summary['failed'])} images could not be prepared (missing or undecodable originals).")
        st.dataframe(pd.DataFrame(summary["failed"]), hide_index=True, width="stretch")


def _summary(meta: dict) -> None:
    done = meta.get("prepare")
    if not done:
        st.caption("Not prepared yet.")
        return
    settings = done.get("settings", {})
    st.caption(f"Prepared at {settings.get('size')}×{settings.get('size')}"
               f"{' letterboxed' if settings.get('letterbox') else ''}, quality {settings.get('quality')}: "
               f"{done.get('prepared')} of {done.get('images')} images, {done.get('boxes')} boxes, "
               f"{done.get('empty_labels')} empty labels, {done.get('clipped')} boxes clipped, "
               f"{done.get('dropped_degenerate')} degenerate boxes dropped, {len(done.get('failed', []))} failed.")


def _verification(slug: str) -> None:
    """Prepared image with the boxes read back from its label file, beside the original with Open Images'."""
    st.subheader("Verification gallery")
    st.caption("Left: the prepared image with the boxes read back from its label file. Right: the original "
               "with the Open Images boxes. They must line up.")
    left, right = st.columns([1, 3])
    n = left.number_input("Pairs", min_value=1, max_value=24, value=VERIFY_N, key="verify_n")
    if right.button("Other images", icon=":material/shuffle:"):
        st.session_state["gallery_seed"] += 1
    for image_id in verify.sample_ids(ws, slug, int(n), st.session_state["gallery_seed"]):
        _pair(slug, image_id)


def _pair(slug: str, image_id: str) -> None:
    try:
        prepared, original = verify.verification_pair(ws, slug, image_id, max_side=gallery.TILE_SIDE)
    except UserError as err:
        st.caption(f"{image_id}: {err}")
        return
    left, right = st.columns(2)
    left.image(gallery.to_jpeg(prepared), caption=f"{image_id} · prepared (label file)", width="stretch")
    right.image(gallery.to_jpeg(original), caption=f"{image_id} · original (Open Images)", width="stretch")


@st.cache_data(show_spinner="Looking for suspicious images…", max_entries=8)
def _suspicious_table(root: str, slug: str, size: int, _stamp: int) -> pd.DataFrame:
    return verify.suspicious(Workspace(Path(root)), slug, size)


def _suspicious(slug: str, size: int) -> None:
    # Reading every original's EXIF is slow on big datasets: cached until the manifest changes.
    table = _suspicious_table(str(ws.root), slug, size, ui.mtime_ns(ws.dataset(slug).manifest_path))
    st.subheader("Suspicious images")
    if table.empty:
        st.caption("No tiny or clipped box, no rotation, no EXIF orientation tag.")
        return
    st.caption(f"{len(table)} images worth a look: tiny boxes (under 8 px at {size}), clipped boxes, "
               "Rotation ≠ 0 in the metadata, or an EXIF orientation tag (ignored on purpose: the boxes "
               "refer to the stored pixels).")
    st.dataframe(table, hide_index=True, width="stretch", height=220)
    reasons = dict(zip(table["ImageID"], table["Reasons"]))
    chosen = st.selectbox("Look at", list(reasons), format_func=lambda i: f"{i} ({reasons[i]})", key="suspicious_id")
    if chosen:
        _pair(slug, chosen)


def _health(slug: str, size: int, prepared: bool) -> None:
    images, boxes = health.load_tables(ws, slug)
    table = health.written_labels(ws, slug, size) if prepared else health.box_table(boxes, size)
    if table.empty:
        return
    st.subheader("Dataset health")
    st.caption(f"From the {'written label files' if prepared else 'Open Images boxes'} at {size}×{size}: "
               f"{len(table)} boxes, {int(table['Tiny'].sum())} tiny.")
    left, right = st.columns(2)
    left.plotly_chart(charts.box_size_figure(table), key="health_sizes", width="stretch")
    right.plotly_chart(charts.boxes_per_image_figure(health.boxes_per_image(images, boxes)),
                       key="health_per_image", width="stretch")
    left.plotly_chart(charts.aspect_figure(table), key="health_aspect", width="stretch")
    with right:
        st.dataframe(health.size_summary(table).round(2), width="stretch")
        st.dataframe(health.flag_counts(boxes), width="stretch")
        parts = split.read_split(ws, slug)
        if parts is not None:
            st.dataframe(health.split_table(parts, boxes), width="stretch")
        _anchors(table)


def _anchors(table: pd.DataFrame) -> None:
    k = st.radio("Anchors", [6, 9], horizontal=True, key="anchor_k",
                 format_func=lambda n: f"{n} (yolov3-tiny)" if n == 6 else f"{n} (yolov3)")
    try:
        anchors, avg_iou = health.anchors_for(table, k)
    except ValueError as err:  # fewer usable boxes than anchors
        st.warning(f"No anchors: {err}. Add images with boxes, or keep the model's default anchors.")
        return
    st.code(", ".join(f"{round(w)},{round(h)}" for w, h in anchors), language=None)
    st.caption(f"Average best IoU of the boxes with these anchors: {avg_iou:.3f}.")


ws = ui.workspace()
st.title("Prepare")
slug = ui.require_dataset(ws)
meta = ui.manifest(ws, slug)
st.caption(f"Dataset: {slug}")
with st.container(border=True):
    left, mid, right = st.columns(3)
    size = left.select_slider("Network size", SIZES, value=416, key="prep_size")
    quality = mid.slider("JPEG quality", 50, 100, 90, key="prep_quality")
    workers = right.number_input("Worker processes (0 = all cores)", min_value=0, value=0, key="prep_workers")
    letterbox = st.checkbox("Letterbox (keep the aspect ratio, pad with grey) instead of stretching", key="prep_lb")
    if st.button("Prepare", type="primary", icon=":material/tune:"):
        _prepare(slug, int(size), letterbox, int(quality), int(workers))
        meta = ui.manifest(ws, slug)
_summary(meta)
prepared_size = (meta.get("prepare") or {}).get("settings", {}).get("size")
if prepared_size:
    _verification(slug)
    _suspicious(slug, int(prepared_size))
_health(slug, int(prepared_size or size), bool(prepared_size))
