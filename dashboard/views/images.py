"""Images: where the pixels come from (local folder, GCS bucket, direct URLs), fetch with progress."""
from __future__ import annotations

import streamlit as st

from dashboard import gallery, ui
from pipeline.images import fetch, stores
from pipeline.cli import UserError
from pipeline.demo.generate import originals_dir as demo_originals

SOURCES = {
    "folder": "A local folder (files named <ImageID>.jpg, flat or in train/validation/test/)",
    "gcs": "A Google Cloud Storage bucket (gs://bucket/prefix)",
    "urls": "Direct URLs (the CVDF mirror or Flickr's original URLs)",
}
PREVIEW_N = 8
# fetch_images' command-line hints, in this page's words.
PAGE_WORDS = {"--workers": "“Parallel downloads”", "the --base-url mirror": "the mirror",
              "build it first": "build it on the Dataset page first", "rebuild the dataset": "rebuild it on the Dataset page"}
URL_SOURCES = {"urls:cvdf": "CVDF mirror (every image, full size)", "urls:original": "Flickr OriginalURL",
               "urls:thumbnail": "Thumbnail300KURL (small, fast, some missing)"}


def _source_spec() -> str | None:
    """The source spec the user chose, or None while it is incomplete."""
    kind = st.radio("Source", list(SOURCES), format_func=SOURCES.get, key="img_source")
    if kind == "folder":
        default = demo_originals(ws.root) if ws.is_demo else ""
        text = st.text_input("Folder", value=str(default), key="img_folder")
        path = ui.show_path("The folder", text, ws)
        if path is not None and not path.is_dir():
            st.error(f"{ui.md_escape(str(path))} is not a folder.")
            return None
        return str(path) if path else None
    if kind == "gcs":
        st.caption(stores.credential_status())
        text = st.text_input("Bucket path", placeholder="gs://my-bucket/openimages/train", key="img_bucket")
        if text and not text.startswith("gs://"):
            st.error("A bucket path starts with gs://, for example gs://my-bucket/openimages.")
            return None
        return text or None
    return st.radio("URL source", list(URL_SOURCES), format_func=URL_SOURCES.get, key="img_urls")


def _fetch(slug: str, spec: str, workers: int) -> None:
    with st.status("Fetching images…", expanded=True) as status:
        try:
            report = fetch.fetch_images(ws, slug, spec, workers=workers,
                                        progress=ui.progress_callback("Fetching"))
        except (UserError, ValueError, OSError) as err:
            ui.failed(status, "Fetch failed", err, PAGE_WORDS)
            return
        label = f"Fetched {report.fetched}, skipped {report.skipped}, failed {report.failed}"
        if not report.failed:
            status.update(label=label, state="complete")
            return
        # Failures keep the panel open: the reasons are the point.
        status.update(label=label, state="error", expanded=True)
        st.warning(f"{report.failed} images could not be fetched (the rest were kept; fetch again to retry).")
        for reason, n in report.failures["reason"].value_counts().items():
            st.markdown(f"- **{ui.md_escape(reason)}** ({n}): {ui.md_escape(fetch.REASONS.get(reason, ''))}")
        st.dataframe(report.failures, hide_index=True, width="stretch")


def _present(slug: str) -> None:
    dataset = ws.dataset(slug)
    images = ui.read_parquet(dataset.images_path)
    total = 0 if images is None else len(images)
    have = len(list(dataset.originals.glob("*.jpg"))) if dataset.originals.is_dir() else 0
    st.metric("Originals on disk", f"{have} / {total}")
    _preview(slug, images)
    tsv = dataset.transfer_tsv
    if tsv.exists():
        st.download_button("Download transfer.tsv (Storage Transfer Service URL list)", tsv.read_bytes(),
                           file_name=f"{slug}-transfer.tsv", mime="text/tab-separated-values",
                           icon=":material/download:")


def _preview(slug: str, images) -> None:
    """A few of the fetched originals with their Open Images boxes: the pixels really arrived."""
    dataset = ws.dataset(slug)
    boxes = ui.read_parquet(dataset.boxes_path)
    if images is None or boxes is None or not dataset.originals.is_dir():
        return
    fetched = sorted(p.stem for p in dataset.originals.glob("*.jpg"))
    if not fetched:
        st.caption("No image fetched yet: the preview appears here once some are.")
        return
    ids = gallery.sample_ids(fetched, PREVIEW_N, 0)
    names = {c["index"]: c["name"] for c in ui.manifest(ws, slug).get("classes", [])}
    by_image = dict(tuple(boxes[boxes["ImageID"].isin(ids)].groupby("ImageID")))
    tiles = []
    for image_id in ids:
        rows = by_image.get(image_id, boxes.iloc[:0])
        labels = [names.get(int(i), str(i)) for i in rows["ClassIndex"]]
        tiles.append((ui.tile(dataset.original(image_id), gallery.boxes_xyxy_rel(rows), labels),
                      f"{image_id} · {len(rows)} boxes"))
    st.caption(f"Preview: {len(ids)} of the {len(fetched)} fetched originals, with their Open Images boxes.")
    ui.show_grid(tiles)


ws = ui.workspace()
st.title("Images")
slug = ui.require_dataset(ws)
st.caption(f"Dataset: {slug}")
summary = st.container()  # filled last, so it counts what a fetch just wrote
with st.container(border=True):
    spec = _source_spec()
    workers = st.number_input("Parallel downloads", min_value=1, max_value=64, value=16, key="img_workers")
    if st.button("Fetch images", type="primary", disabled=not spec, icon=":material/download:"):
        _fetch(slug, spec, int(workers))
with summary:
    _present(slug)
