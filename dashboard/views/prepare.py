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
# prepare_dataset's command-line hints, in this page's words.
PAGE_WORDS = {"--workers": "“Worker processes”", "--size": "“Network size”", "--quality": "“JPEG quality”",
              "build it again": "build it again on the Dataset page", "build it first": "build it on the Dataset page first"}


def _prepare(slug: str, size: int, letterbox: bool, quality: int, workers: int) -> None:
    with st.status(f"Preparing {slug} at {size}×{size}…", expanded=True) as status:
        try:
            summary = prepare.prepare_dataset(ws, slug, size=size, letterbox=letterbox, quality=quality,
                                              workers=workers or None, progress=ui.progress_callback("Preparing"))
        except UserError as err:
            ui.failed(status, "Prepare failed", err, PAGE_WORDS)
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


@st.cache_data(show_spinner=False, max_entries=256)
def _pair_jpegs(root: str, slug: str, image_id: str, file_stamp: tuple) -> tuple[bytes, bytes] | str:
    """JPEGs of :func:`verify.verification_pair`, or the sentence saying why there is none (cached
    until the image, its label or the manifest changes)."""
    try:
        prepared, original = verify.verification_pair(Workspace(Path(root)), slug, image_id, max_side=gallery.TILE_SIDE)
    except UserError as err:
        return str(err)
    return gallery.to_jpeg(prepared), gallery.to_jpeg(original)


def _pair(slug: str, image_id: str) -> None:
    dataset = ws.dataset(slug)
    pair = _pair_jpegs(str(ws.root), slug, image_id,
                       ui.stamp(dataset.manifest_path, dataset.image(image_id), dataset.label(image_id),
                                dataset.original(image_id)))
    if isinstance(pair, str):
        st.caption(f"{image_id}: {pair}")
        return
    left, right = st.columns(2)
    left.image(pair[0], caption=f"{image_id} · prepared (label file)", width="stretch")
    right.image(pair[1], caption=f"{image_id} · original (Open Images)", width="stretch")


@st.cache_data(show_spinner="Looking for suspicious images…", max_entries=8)
def _suspicious_table(root: str, slug: str, size: int, file_stamp: tuple) -> pd.DataFrame:
    return verify.suspicious(Workspace(Path(root)), slug, size)


def _suspicious(slug: str, size: int) -> None:
    # Reading every original's EXIF is slow on big datasets: cached until the manifest changes.
    table = _suspicious_table(str(ws.root), slug, size, ui.stamp(ws.dataset(slug).manifest_path))
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


@st.cache_data(show_spinner=False, max_entries=8)
def _health_tables(root: str, slug: str, size: int, prepared: bool, file_stamp: tuple) -> dict:
    """Everything the health section draws (cached until the manifest, the boxes or the split change:
    prepare rewrites the labels and then the manifest)."""
    ws_ = Workspace(Path(root))
    images, boxes = health.load_tables(ws_, slug)
    table = health.written_labels(ws_, slug, size) if prepared else health.box_table(boxes, size)
    parts = split.read_split(ws_, slug)
    return {"table": table, "per_image": health.boxes_per_image(images, boxes),
            "sizes": health.size_summary(table).round(2) if not table.empty else None,
            "flags": health.flag_counts(boxes),
            "splits": None if parts is None else health.split_table(parts, boxes).T[list(split.SPLITS)]}


@st.cache_data(show_spinner=False, max_entries=16)
def _anchor_fit(table: pd.DataFrame, k: int):
    try:
        return health.anchors_for(table, k)
    except ValueError as err:  # fewer usable boxes than anchors
        return str(err)


def _health(slug: str, size: int, prepared: bool) -> None:
    dataset = ws.dataset(slug)
    found = _health_tables(str(ws.root), slug, size, prepared,
                           ui.stamp(dataset.manifest_path, dataset.boxes_path, dataset.images_path, dataset.split_json))
    table = found["table"]
    if table.empty:
        return
    st.subheader("Dataset health")
    st.caption(f"From the {'written label files' if prepared else 'Open Images boxes'} at {size}×{size}: "
               f"{len(table)} boxes, {int(table['Tiny'].sum())} tiny.")
    left, right = st.columns(2)
    left.plotly_chart(charts.box_size_figure(table), key="health_sizes", width="stretch")
    right.plotly_chart(charts.boxes_per_image_figure(found["per_image"]), key="health_per_image", width="stretch")
    left.plotly_chart(charts.aspect_figure(table), key="health_aspect", width="stretch")
    with right:  # small tables as plain HTML: cheaper to draw than a data grid each, and readable text
        st.table(found["sizes"])
        st.table(found["flags"])
        if found["splits"] is not None:
            st.table(found["splits"])  # train, valid, test: the order of every page
        _anchors(table)


def _anchors(table: pd.DataFrame) -> None:
    k = st.radio("Anchors", [6, 9], horizontal=True, key="anchor_k",
                 format_func=lambda n: f"{n} (yolov3-tiny)" if n == 6 else f"{n} (yolov3)")
    fit = _anchor_fit(table, int(k))
    if isinstance(fit, str):
        st.warning(f"No anchors: {fit}. Add images with boxes, or keep the model's default anchors.")
        return
    anchors, avg_iou = fit
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
