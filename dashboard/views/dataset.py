"""Dataset: pick classes, choose policies, build; then counts and a sample gallery of the boxes."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import gallery, ui
from pipeline.openimages import build, classes
from pipeline.cli import UserError
from pipeline.workspace import Workspace

CHILDREN = {"merge": "merge into the parent class", "separate": "one class each", "none": "leave them out"}
GROUP_OF = {"keep": "keep the box", "drop-box": "drop the box", "drop-image": "drop the image"}
DEPICTION = {"keep": "keep", "drop": "drop"}
REPLACE_LABEL = "Replace an existing dataset of that name"
# The builder's command-line hints, in this page's words.
PAGE_WORDS = {
    "use --overwrite": f"tick “{REPLACE_LABEL}”",
    "--overwrite": f"“{REPLACE_LABEL}”",
    "pick another --name": "type another “Dataset name”",
    "--name": "“Dataset name”",
    "(e.g. --class Boat)": "(search for one, e.g. boat)",
    "--max-images": "“Image cap”",
    "--negatives": "“Negatives”",
    "--seed": "“Seed”",
}


@st.cache_data(show_spinner=False)
def _classes(root: str, file_stamp: tuple) -> pd.DataFrame:
    """The class table (cached until class-descriptions-boxable.csv changes: the stamp is part of the key)."""
    return classes.load_classes(Workspace(Path(root)))


def _pick_classes(table: pd.DataFrame) -> list[str]:
    """Search box → matching classes → the ones to build (names, as the user sees them)."""
    query = st.text_input("Search classes by name or MID", key="class_query", placeholder="boat, /m/019jd, …")
    if not query.strip():
        st.caption(f"{len(table)} boxable classes in the metadata; type to search.")
        return []
    found = classes.search_classes(table, query)
    if len(found) == 0:
        hints = classes.suggest(table, query)
        hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
        st.error(f"No Open Images class matches “{ui.md_escape(query)}”.{hint}")
        for column, name in zip(st.columns(max(len(hints), 1) + 2), hints):
            column.button(name, key=f"suggest::{name}", icon=":material/search:", on_click=_search_for, args=(name,),
                          help=f"Search for {name}")
        return []
    names = list(found["name"])
    exact = [n for n in names if n.lower() == query.strip().lower()] or names[:1]
    return st.multiselect("Classes to build", names, default=exact, key=f"pick::{query.strip().lower()}")


def _search_for(name: str) -> None:
    """Fill the search box with a suggested class (a callback: runs before the box is drawn)."""
    st.session_state["class_query"] = name


def _children_note(picked: list[str], table: pd.DataFrame) -> None:
    try:
        hierarchy = classes.load_hierarchy(ws.metadata_dir / "bbox_labels_600_hierarchy.json")
    except UserError:
        return
    names = dict(zip(table["mid"], table["name"]))
    for name in picked:
        mid, _ = classes.resolve_class(table, name)
        kids = [names.get(m, m) for m in classes.children(hierarchy, mid)]
        if kids:
            st.caption(f"{name} has child classes: {', '.join(kids)}.")


def _options() -> dict:
    left, mid, right = st.columns(3)
    children = left.radio("Child classes", list(CHILDREN), format_func=CHILDREN.get, key="opt_children")
    group_of = mid.radio("Group-of boxes", list(GROUP_OF), format_func=GROUP_OF.get, key="opt_group_of")
    depiction = right.radio("Depictions", list(DEPICTION), format_func=DEPICTION.get, key="opt_depiction")
    left, mid, right = st.columns(3)
    cap = left.number_input("Image cap (0 = all)", min_value=0, value=0, step=100, key="opt_cap")
    negatives = mid.slider("Negatives (share of images without the class)", 0.0, 0.5, 0.0, 0.05, key="opt_neg")
    seed = right.number_input("Seed", min_value=0, value=0, key="opt_seed")
    return dict(children=children, group_of=group_of, depiction=depiction, max_images=int(cap) or None,
                negatives=float(negatives), seed=int(seed))


def _build(picked: list[str], options: dict, name: str, overwrite: bool) -> None:
    """Build with progress, then rerun with the new dataset chosen (the sidebar picker is drawn already)."""
    with st.status("Building the dataset…", expanded=True) as status:
        try:
            manifest = build.build_dataset(ws, picked, name=name or None, overwrite=overwrite,
                                           progress=ui.progress_callback("Reading annotations"), **options)
        except (UserError, ValueError, FileNotFoundError, FileExistsError) as err:
            ui.failed(status, "Build failed", err, PAGE_WORDS)
            return
        status.update(label=f"Built dataset {manifest['slug']}", state="complete")
    ui.select("dataset", manifest["slug"])
    ui.flash(f"Built dataset {manifest['slug']}.", "success")
    st.rerun()


def _counts(meta: dict) -> None:
    counts = pd.DataFrame(meta.get("counts", {})).T
    if counts.empty:
        return
    order = [s for s in ("train", "validation", "test") if s in counts.index]  # the journey's order everywhere
    counts = counts.loc[order + [s for s in counts.index if s not in order]]
    counts.loc["total"] = counts.sum()
    st.table(counts)  # a few rows; plain text a reader (and a test) can read


def _gallery(slug: str) -> None:
    dataset = ws.dataset(slug)
    images, boxes = ui.read_parquet(dataset.images_path), ui.read_parquet(dataset.boxes_path)
    if images is None or boxes is None:
        st.warning("This dataset has no images.parquet/boxes.parquet: rebuild it.")
        return
    st.subheader("Sample gallery")
    left, mid, right = st.columns([1, 2, 1])
    n = left.slider("Images", 4, 48, key="gallery_n", step=4)
    flags = mid.multiselect("Only images with", [*gallery.FLAG_FILTERS, gallery.ROTATED], key="gallery_flags")
    if right.button("Reshuffle", icon=":material/shuffle:"):
        st.session_state["gallery_seed"] += 1
    chosen = gallery.filter_images(images, boxes, flags)
    ids = gallery.sample_ids(list(chosen["ImageID"]), n, st.session_state["gallery_seed"])
    st.caption(f"{len(ids)} of {len(chosen)} matching images (seed {st.session_state['gallery_seed']}).")
    names = {c["index"]: c["name"] for c in ui.manifest(ws, slug).get("classes", [])}
    subsets = dict(zip(images["ImageID"], images["Subset"]))
    by_image = dict(tuple(boxes[boxes["ImageID"].isin(ids)].groupby("ImageID")))
    tiles = []
    for image_id in ids:
        rows = by_image.get(image_id, boxes.iloc[:0])
        path = gallery.original_path(ws, slug, image_id, subsets[image_id])
        labels = [names.get(int(i), str(i)) for i in rows["ClassIndex"]]
        tiles.append((ui.tile(path, gallery.boxes_xyxy_rel(rows), labels), f"{image_id} · {len(rows)} boxes"))
    counts = {image_id: len(by_image.get(image_id, ())) for image_id in ids}
    chosen_id = ui.pick_image(ids, "dataset_detail", lambda i: f"{i} · {counts[i]} boxes")
    if chosen_id:
        rows = by_image.get(chosen_id, boxes.iloc[:0])
        labels = gallery.numbered([names.get(int(i), str(i)) for i in rows["ClassIndex"]])
        path = gallery.original_path(ws, slug, chosen_id, subsets[chosen_id])
        ui.show_detail(ui.tile(path, gallery.boxes_xyxy_rel(rows), labels, side=ui.DETAIL_SIDE),
                       f"{chosen_id} · original with the Open Images boxes", gallery.box_table(rows, names))
    ui.show_grid(tiles)


ws = ui.workspace()
st.title("Dataset")
ui.show_flash()
missing = [f for f in ("class-descriptions-boxable.csv",) if not (ws.metadata_dir / f).exists()]
if missing:
    st.error(f"The metadata folder {ui.md_escape(str(ws.metadata_dir))} has no class-descriptions-boxable.csv: "
             "download the metadata first (`python -m pipeline metadata download`).")
    st.stop()

table = _classes(str(ws.root), ui.stamp(ws.metadata_dir / "class-descriptions-boxable.csv"))
with st.container(border=True):
    picked = _pick_classes(table)
    _children_note(picked, table)
    options = _options()
    left, right = st.columns([3, 1])
    name = left.text_input("Dataset name (default: the class names)", key="opt_name")
    overwrite = right.checkbox(REPLACE_LABEL, key="opt_overwrite")
    if st.button("Build dataset", type="primary", disabled=not picked, icon=":material/build:"):
        _build(picked, options, name, overwrite)

slug = ui.current_dataset()
if slug:
    meta = ui.manifest(ws, slug)
    st.header(f"Dataset: {ui.md_escape(meta.get('name', slug))}")
    st.caption("Classes: " + ", ".join(f"{c['index']}: {c['name']} ({c['mid']})" for c in meta.get("classes", [])))
    _counts(meta)
    _gallery(slug)
