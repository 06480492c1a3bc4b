"""The embedded demo: a small, deterministic Open Images workspace that works offline.

``generate(root)`` writes the official metadata files (exact schemas, real MIDs) under
``<ws>/metadata/`` and the matching source pixels under ``<ws>/demo/originals/<Subset>/`` (the
CVDF bucket layout), drawn procedurally by :mod:`pipeline.demo.scenes`. Boxes are ``xyxy_rel``
of the stored pixels. A few files are traps that real Open Images data also springs: EXIF
orientation tags to ignore, grayscale JPEGs, a PNG behind a ``.jpg`` name, a truncated JPEG;
they are listed in ``<ws>/demo/special.json`` (see :func:`special_images`).

Same seed → byte-identical files: one ``numpy`` generator per image derived from the seed, fixed
encoder settings, no timestamps, sorted rows. ``Rotation`` ``nan`` is written as the text ``nan``
(as in the official files), which pandas reads back as NaN.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import numbers
from pipeline.demo import scenes as demo_scenes
from pipeline.cli import UserError
from pipeline.progress import ProgressFn, tqdm_progress
from pipeline.atomic import atomic_write_text, read_json, write_json
from pipeline.workspace import DEMO_MARKER, Workspace

log = logging.getLogger(__name__)

DEFAULT_IMAGES = 300
MAX_IMAGES = 100_000  # about 2 GB of pictures and an hour of drawing
SUBSETS = ("train", "validation", "test")
SUBSET_SHARE = {"validation": 0.1, "test": 0.1}  # the rest is train

# Real MIDs and names (class-descriptions-boxable.csv), written sorted by MID.
CLASSES = {
    "/m/011k07": "Tortoise", "/m/011q46kg": "Container", "/m/012074": "Magpie", "/m/014y4n": "Paddle",
    "/m/019jd": "Boat", "/m/019w40": "Surfboard", "/m/01btn": "Barge", "/m/01g317": "Person",
    "/m/01rzcn": "Watercraft", "/m/01xs3r": "Jet ski", "/m/02068x": "Gondola", "/m/054xkw": "Lifejacket",
    "/m/074d1": "Submarine", "/m/07yv9": "Vehicle", "/m/0ph39": "Canoe",
}
MIDS = {name: mid for mid, name in CLASSES.items()}
BOAT_MID = MIDS["Boat"]
ROOT_MID = "/m/0bl9f"  # "Entity"
# bbox_labels_600_hierarchy.json subset: Vehicle → Watercraft → {Boat → {Barge, Gondola, Canoe}, Jet ski, Submarine}.
HIERARCHY = {"LabelName": ROOT_MID, "Subcategory": [
    {"LabelName": "/m/07yv9", "Subcategory": [
        {"LabelName": "/m/01rzcn", "Subcategory": [
            {"LabelName": "/m/019jd", "Subcategory": [
                {"LabelName": "/m/01btn"}, {"LabelName": "/m/02068x"}, {"LabelName": "/m/0ph39"}]},
            {"LabelName": "/m/01xs3r"}, {"LabelName": "/m/074d1"}]}]},
    *({"LabelName": mid} for mid in ("/m/011k07", "/m/011q46kg", "/m/012074", "/m/01g317", "/m/014y4n",
                                     "/m/054xkw", "/m/019w40")),
]}

# Official file names and headers (facts/openimages.md §1).
CLASS_FILE = "class-descriptions-boxable.csv"
HIERARCHY_FILE = "bbox_labels_600_hierarchy.json"
BBOX_FILES = {"train": "oidv6-train-annotations-bbox.csv", "validation": "validation-annotations-bbox.csv",
              "test": "test-annotations-bbox.csv"}
IMAGE_FILES = {"train": "train-images-boxable-with-rotation.csv", "validation": "validation-images-with-rotation.csv",
               "test": "test-images-with-rotation.csv"}
LABEL_FILES = {s: f"{s}-annotations-human-imagelabels-boxable.csv" for s in SUBSETS}
BBOX_COLUMNS = ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
                "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]
XCLICK_COLUMNS = [f"XClick{i}X" for i in range(1, 5)] + [f"XClick{i}Y" for i in range(1, 5)]
IMAGE_COLUMNS = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL",
                 "Author", "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]
LABEL_COLUMNS = ["ImageID", "Source", "LabelName", "Confidence"]

# Picture sizes (width, height): landscape and portrait, 320×240 to 640×480.
SIZES = ((640, 480), (480, 640), (640, 427), (427, 640), (512, 384), (400, 300), (320, 240), (240, 320),
         (500, 500), (640, 360))
KIND_SHARE = {"group": 0.08, "distractor": 0.10, "depiction": 0.04, "inside": 0.02, "empty": 0.06}  # the rest: "boats"
# Trap files, filled round-robin from train boat scenes (so a small demo still gets one of each).
SPECIAL_COUNTS = {"exif_orientation": 4, "grayscale": 3, "png_as_jpg": 1, "truncated_jpeg": 1}
EXIF_ORIENTATIONS = (6, 8)
EXIF_ROTATION_90 = 2        # this many of the EXIF files also get Rotation 90.0
# Keys of special.json: the traps, then other traits a test or a page may want to find.
SPECIAL_TRAITS = (*SPECIAL_COUNTS, "rotation_90", "rotation_nan", "no_boxes", "group_of", "depiction", "inside",
                  "no_boat")
ROTATION_90_SHARE = 0.03
ROTATION_NAN_SHARE = 0.03
TRUNCATE_AT = 0.6           # the truncated JPEG keeps this share of its bytes
ACTIVEMIL_SHARE = 0.10
UNKNOWN_FLAG_SHARE = 0.3    # of activemil rows' 0 flags written as -1 (unknown)
UNKNOWN_INSIDE_SHARE = 0.03
JPEG_SETTINGS = {"quality": 88, "subsampling": 0, "optimize": False, "progressive": False}
MISSING_THUMBNAIL_SHARE = 0.03

LICENSES = ("https://creativecommons.org/licenses/by/2.0/",) * 6 + ("https://creativecommons.org/licenses/by-sa/2.0/",)
AUTHORS = (("Michael Beat", "michael-beat"), ("Karen", "drstarbuck"), ("Jörg Müller", "joergm"),
           ("Ana Sousa", "anasousa"), ("Sea Photos, Inc.", "seaphotos"), ("Marie-Claire Dubois", "mcdubois"),
           ("Hiroshi T.", "hiroshi_t"), ("dave", "dave2009"))
TITLES = ("Harbour at dusk", "Boats, boats, boats", 'The "Blue Lady" leaving port', "Île de Ré, ferry",
          "IMG_2041", "Lake Como, Italy", "sailing...", "Regatta 2009, day 2", "untitled", "Venice, gondolas",
          "canal; morning", "DSC01234.JPG", "At sea", "Summer, 2008 — the bay")


@dataclass
class _ImagePlan:
    image_id: str
    subset: str
    kind: str
    width: int
    height: int
    index: int                 # seeds this image's own generator
    special: str = ""          # a SPECIAL_COUNTS key, or ""
    rotation: str = "0.0"


def _plan_images(rng: np.random.Generator, count: int) -> list[_ImagePlan]:
    """Ids, subsets, scene kinds and sizes of ``count`` images, sorted by subset then ImageID."""
    unique: dict[str, None] = {}  # an insertion-ordered set
    while len(unique) < count:
        unique.setdefault(f"{int(rng.integers(0, 2**63)):016x}")
    ids = list(unique)
    kinds = ["boats"] * count
    at = 0
    for kind, share in KIND_SHARE.items():
        n = max(1, round(share * count)) if count >= 2 * len(KIND_SHARE) + 2 else 0
        kinds[at:at + n] = [kind] * n
        at += n
    kinds = [kinds[i] for i in rng.permutation(count)]
    subsets = ["train"] * count
    at = 0
    for subset, share in SUBSET_SHARE.items():
        n = round(share * count)
        subsets[at:at + n] = [subset] * n
        at += n
    subsets = [subsets[i] for i in rng.permutation(count)]
    plans = [_ImagePlan(ids[i], subsets[i], kinds[i], *SIZES[int(rng.integers(len(SIZES)))], index=i)
             for i in range(count)]
    return sorted(plans, key=lambda p: (SUBSETS.index(p.subset), p.image_id))


def _assign_specials(rng: np.random.Generator, plans: list[_ImagePlan]) -> None:
    """Mark trap files (round-robin over SPECIAL_COUNTS) and Rotation values, in place."""
    candidates = [p for p in plans if p.subset == "train" and p.kind == "boats"]
    queue = [candidates[i] for i in rng.permutation(len(candidates))]
    wanted = dict(SPECIAL_COUNTS)
    while queue and any(wanted.values()):
        for kind in SPECIAL_COUNTS:
            if wanted[kind] and queue:
                queue.pop().special = kind
                wanted[kind] -= 1
    exif = [p for p in plans if p.special == "exif_orientation"]
    for plan in exif[:EXIF_ROTATION_90]:
        plan.rotation = "90.0"
    for plan in plans:
        if plan.special:
            continue
        draw = rng.random()
        if draw < ROTATION_90_SHARE:
            plan.rotation = "90.0"
        elif draw < ROTATION_90_SHARE + ROTATION_NAN_SHARE:
            plan.rotation = "nan"


def _encode(image: Image.Image, plan: _ImagePlan, rng: np.random.Generator) -> bytes:
    """The file bytes for one picture, applying its trap (if any) with fixed encoder settings."""
    buffer = io.BytesIO()
    if plan.special == "png_as_jpg":
        image.save(buffer, "PNG", compress_level=6)
        return buffer.getvalue()
    if plan.special == "grayscale":
        image = image.convert("L")
    extra = {}
    if plan.special == "exif_orientation":
        exif = Image.Exif()
        exif[0x0112] = EXIF_ORIENTATIONS[int(rng.integers(len(EXIF_ORIENTATIONS)))]
        extra["exif"] = exif.tobytes()
    image.save(buffer, "JPEG", **JPEG_SETTINGS, **extra)
    data = buffer.getvalue()
    if plan.special == "truncated_jpeg":
        data = data[: int(len(data) * TRUNCATE_AT)]
    return data


def _fmt_train(value: float) -> str:
    return f"{value:.6f}"


def _fmt_free(value: float) -> str:
    """Shortest float32 text, as the val/test files have it (``0.022673031``, ``1``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def _box_rows(plan: _ImagePlan, objects: list, rng: np.random.Generator) -> list[list[str]]:
    """Bbox CSV rows of one image: xclick (with extreme points in train) or activemil (-1 clicks)."""
    fmt = _fmt_train if plan.subset == "train" else _fmt_free
    rows = []
    for obj in sorted(objects, key=lambda o: (MIDS[o.name], o.box)):
        x0, y0, x1, y1 = obj.box  # xyxy_px, exclusive x1/y1 → xyxy_rel by dividing by the size
        activemil = rng.random() < ACTIVEMIL_SHARE
        flags = [int(obj.occluded), int(obj.truncated), int(obj.group_of), int(obj.depiction), int(obj.inside)]
        if activemil:
            flags = [-1 if f == 0 and rng.random() < UNKNOWN_FLAG_SHARE else f for f in flags]
        elif rng.random() < UNKNOWN_INSIDE_SHARE:
            flags[4] = -1
        row = [plan.image_id, "activemil" if activemil else "xclick", MIDS[obj.name], "1",
               fmt(x0 / plan.width), fmt(x1 / plan.width), fmt(y0 / plan.height), fmt(y1 / plan.height),
               *map(str, flags)]
        if plan.subset == "train":
            row += ["-1"] * 8 if activemil else _xclicks(obj.extremes, plan, int(rng.integers(4)))
        rows.append(row)
    return rows


def _xclicks(extremes: list, plan: _ImagePlan, start: int) -> list[str]:
    """Four extreme points in clicking order (clockwise from ``start``): all four X, then all four Y."""
    points = extremes[start:] + extremes[:start]
    return [_fmt_train(x / plan.width) for x, _ in points] + [_fmt_train(y / plan.height) for _, y in points]


def _image_info_row(plan: _ImagePlan, data: bytes, rng: np.random.Generator) -> list[str]:
    """One row of ``*-images-with-rotation.csv``: Flickr-like provenance plus the file's size and MD5."""
    author, slug = AUTHORS[int(rng.integers(len(AUTHORS)))]
    farm, server, photo = int(rng.integers(1, 10)), int(rng.integers(100, 9999)), int(rng.integers(10**9, 10**10))
    thumbnail = "" if rng.random() < MISSING_THUMBNAIL_SHARE else \
        f"https://c{int(rng.integers(1, 9))}.staticflickr.com/{farm}/{server}/{plan.image_id}_z.jpg"
    return [plan.image_id, plan.subset, f"https://farm{farm}.staticflickr.com/{server}/{plan.image_id}_o.jpg",
            f"https://www.flickr.com/photos/{slug}/{photo}", LICENSES[int(rng.integers(len(LICENSES)))],
            f"https://www.flickr.com/people/{slug}/", author, TITLES[int(rng.integers(len(TITLES)))],
            str(len(data)), base64.b64encode(hashlib.md5(data).digest()).decode("ascii"), thumbnail, plan.rotation]


def _label_rows(plan: _ImagePlan, objects: list, rng: np.random.Generator) -> list[list[str]]:
    """Human image-level labels: positives for the classes boxed, verified negatives for Boat on boat-free scenes."""
    labels = {MIDS[o.name]: "1" for o in objects}
    if plan.kind == "empty" or (plan.kind == "distractor" and rng.random() < 0.7):
        labels[BOAT_MID] = "0"
    if rng.random() < 0.2:
        labels.setdefault(MIDS["Tortoise"], "0")
    source = lambda: "verification" if rng.random() < 0.7 else "crowdsource-verification"  # noqa: E731
    return [[plan.image_id, source(), mid, labels[mid]] for mid in sorted(labels)]


def _csv_text(rows: list[list[str]], header: list[str] | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    """Temp file + rename without fsync: hundreds of small files, and the DEMO marker comes last."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def originals_dir(root: Path) -> Path:
    """Where the demo keeps its source pixels: ``<ws>/demo/originals/<Subset>/<ImageID>.jpg``."""
    return Path(root) / "demo" / "originals"


def special_images(root: Path) -> dict[str, list[str]]:
    """The demo's notable ImageIDs by trait (``exif_orientation``, ``grayscale``, ``png_as_jpg``,
    ``truncated_jpeg``, ``rotation_90``, ``rotation_nan``, ``no_boxes``, ``group_of``, ``depiction``,
    ``inside``, ``no_boat``), read from ``<ws>/demo/special.json``; empty dict when there is none."""
    return read_json(Path(root) / "demo" / "special.json", default={})


def _class_csv() -> str:
    return _csv_text([[mid, CLASSES[mid]] for mid in sorted(CLASSES)], None)


def _refuse_foreign_metadata(ws: Workspace) -> None:
    """Never overwrite real Open Images files with demo ones.

    Files count as the demo's own when the workspace carries the DEMO marker, or when its class
    list is the demo's (a generation interrupted before writing the marker).
    """
    ours = [CLASS_FILE, HIERARCHY_FILE, *BBOX_FILES.values(), *IMAGE_FILES.values(), *LABEL_FILES.values()]
    present = [name for name in ours if (ws.metadata_dir / name).exists()]
    classes = ws.metadata_dir / CLASS_FILE
    demo_classes = classes.is_file() and classes.read_bytes() == _class_csv().encode("utf-8")
    if present and not ws.is_demo and not demo_classes:
        raise UserError(f"{ws.metadata_dir} already holds Open Images files ({present[0]}, …) and is not a demo "
                        "workspace; choose another --workspace for the demo")


def generate(root: Path, images: int = DEFAULT_IMAGES, seed: int = 0, progress: ProgressFn = None) -> dict:
    """Write a complete deterministic demo workspace at ``root``; return a summary.

    Args:
        root: workspace folder (created if missing).
        images: number of pictures across train/validation/test (about 80/10/10).
        seed: same seed → byte-identical files.
        progress: ``progress(done, total, message)`` per picture.

    Returns:
        ``{"root", "seed", "images", "boxes", "subsets": {subset: {"images", "boxes", "boat_boxes",
        "no_boxes"}}, "metadata_dir", "originals_dir", "special": {trait: [ImageID]}}``.
    """
    images = numbers.whole(images, "--images", 1, MAX_IMAGES, " (pictures to draw)")
    seed = numbers.seed(seed)
    ws = Workspace(Path(root)).ensure()
    _refuse_foreign_metadata(ws)
    rng = np.random.default_rng(seed)
    plans = _plan_images(rng, images)
    _assign_specials(rng, plans)
    _clear_stale_originals(ws.root, {(p.subset, p.image_id) for p in plans})
    tables, special = _draw_all(ws, plans, seed, progress)
    _write_metadata(ws, tables)
    write_json(ws.root / "demo" / "special.json", special)
    # The marker goes last: a workspace without it is an unfinished generation.
    atomic_write_text(ws.root / DEMO_MARKER,
                      f"demo workspace generated by python -m pipeline demo, seed {seed}, {images} images\n")
    log.info("demo workspace: %d images at %s", images, ws.root)
    return _summary(ws, seed, plans, tables, special)


def _draw_all(ws: Workspace, plans: list[_ImagePlan], seed: int, progress: ProgressFn) -> tuple[dict, dict]:
    """Draw and write every picture; return the CSV rows per table and subset, and the traits."""
    tables = {name: {s: [] for s in SUBSETS} for name in ("boxes", "info", "labels")}
    special: dict[str, list[str]] = {k: [] for k in SPECIAL_TRAITS}
    for done, plan in enumerate(plans, 1):
        image_rng = np.random.default_rng([seed, plan.index])  # one stream per picture
        picture, objects = demo_scenes.render_scene(image_rng, plan.width, plan.height, plan.kind)
        data = _encode(picture, plan, image_rng)
        target = originals_dir(ws.root) / plan.subset / f"{plan.image_id}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_file(target, data)
        tables["boxes"][plan.subset] += _box_rows(plan, objects, image_rng)
        tables["info"][plan.subset].append(_image_info_row(plan, data, image_rng))
        tables["labels"][plan.subset] += _label_rows(plan, objects, image_rng)
        _note_traits(special, plan, objects)
        if progress:
            progress(done, len(plans), plan.image_id)
    return tables, {k: sorted(v) for k, v in special.items()}


def _note_traits(special: dict, plan: _ImagePlan, objects: list) -> None:
    if plan.special:
        special[plan.special].append(plan.image_id)
    if plan.rotation != "0.0":
        special["rotation_90" if plan.rotation == "90.0" else "rotation_nan"].append(plan.image_id)
    if not objects:
        special["no_boxes"].append(plan.image_id)
    if any(o.group_of for o in objects):
        special["group_of"].append(plan.image_id)
    if any(o.depiction for o in objects):
        special["depiction"].append(plan.image_id)
    if any(o.inside for o in objects):
        special["inside"].append(plan.image_id)
    if not any(o.name in demo_scenes.BOAT_STYLES for o in objects):
        special["no_boat"].append(plan.image_id)


def _clear_stale_originals(root: Path, keep: set[tuple[str, str]]) -> None:
    """Remove demo pictures left by an earlier generation with other ids (the folder is the demo's own)."""
    base = originals_dir(root)
    for path in sorted(base.glob("*/*")):
        if (path.parent.name, path.stem) not in keep or path.suffix != ".jpg":
            path.unlink()


def _write_metadata(ws: Workspace, tables: dict) -> None:
    meta = ws.metadata_dir
    atomic_write_text(meta / CLASS_FILE, _class_csv())
    atomic_write_text(meta / HIERARCHY_FILE, json.dumps(HIERARCHY) + "\n")
    for subset in SUBSETS:
        header = BBOX_COLUMNS + (XCLICK_COLUMNS if subset == "train" else [])
        atomic_write_text(meta / BBOX_FILES[subset], _csv_text(tables["boxes"][subset], header))
        atomic_write_text(meta / IMAGE_FILES[subset], _csv_text(tables["info"][subset], IMAGE_COLUMNS))
        atomic_write_text(meta / LABEL_FILES[subset], _csv_text(tables["labels"][subset], LABEL_COLUMNS))


def _summary(ws: Workspace, seed: int, plans: list, tables: dict, special: dict) -> dict:
    boat_mids = {MIDS[name] for name in demo_scenes.BOAT_STYLES}
    subsets = {}
    for subset in SUBSETS:
        boxes = tables["boxes"][subset]
        subsets[subset] = {"images": sum(p.subset == subset for p in plans), "boxes": len(boxes),
                           "boat_boxes": sum(row[2] in boat_mids for row in boxes),
                           "no_boxes": sum(p.subset == subset and p.image_id in special["no_boxes"] for p in plans)}
    return {"root": str(ws.root), "seed": seed, "images": len(plans),
            "boxes": sum(s["boxes"] for s in subsets.values()), "subsets": subsets,
            "metadata_dir": str(ws.metadata_dir), "originals_dir": str(originals_dir(ws.root)), "special": special}


def _run(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None), create=False)
    if args.if_missing and ws.is_demo:
        print(f"demo workspace already at {ws.root}; nothing to do")
        return 0
    summary = generate(ws.root, images=args.images, seed=args.seed,
                       progress=tqdm_progress("demo images", unit="img"))
    print(f"demo workspace written to {summary['root']} (seed {summary['seed']})")
    for subset, counts in summary["subsets"].items():
        print(f"  {subset:<10} {counts['images']:>5} images  {counts['boxes']:>5} boxes  "
              f"({counts['boat_boxes']} boat, {counts['no_boxes']} images without boxes)")
    for trait, ids in summary["special"].items():
        print(f"  {trait:<17} {len(ids)}")
    return 0


def register(subparsers) -> None:
    """``python -m pipeline demo [--images N] [--seed S] [--if-missing]``."""
    parser = subparsers.add_parser("demo", help="write the embedded Open Images demo workspace",
                                   description="Write a deterministic Open Images-format demo (metadata + pictures).")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                        help=f"pictures to draw (default {DEFAULT_IMAGES})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed → identical files (default 0)")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the workspace is already a demo")
    parser.set_defaults(func=_run)
