"""Training presets: settings that give a working detector on the machine at hand, all visible and
editable before Start, with an estimated duration.

- ``quick`` (the default for a CPU build of darknet): the size the dataset was prepared at (at most
  192), no multi-scale training, a quarter-width yolov3-tiny from random initialisation, small batches
  with a high learning rate, warm-up and steps fitted to a short run, anchors fitted to the dataset at
  that size, and as many iterations as fit in the minutes asked for. Measured on the demo (Debian's
  darknet computes on one core): the stock-width network from the pretrained backbone costs 3.3 s per
  iteration and reached mAP@0.5 0.30 after 200; the quarter-width one costs 0.75 s at 192 px and
  reached 0.72 (test) after 600 — per CPU-second the narrow network learns faster, so that is the
  default and the backbone stays one choice away (it needs width 1).
- ``gpu``: AlexeyAB's rules for a GPU: 416, batch 64/16, max(2000 × classes, images, 6000)
  iterations, multi-scale, mAP during training where the fork can.

The seconds per iteration come from this workspace's earlier runs with the same network on the same
darknet (median of their logged iterations) when there are any, else from :data:`CPU_SECONDS`, a
measurement on 2 cores scaled by pixels and batch.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from darknet_runner import cfg as cfgmod
from darknet_runner.binary import DarknetInfo
from darknet_runner.rundir import RunDir
from darknet_runner.weights import PRETRAINED
from pipeline.cli import UserError
from pipeline.workspace import Workspace

PRESETS = ("quick", "gpu", "custom")  # custom: the plain cfg rules, every value yours
QUICK_MINUTES = 8.0          # the default time budget of the quick preset
SAVE_EVERY = 100             # pjreddie saves weights every 100 iterations: runs end on a multiple
QUICK_BACKBONE = "yolov3-tiny.conv.15"
QUICK_MAX_SIZE = 192         # above this a CPU trains too few iterations in minutes to detect anything
QUICK_WIDTH = 0.25
# Measured with Debian's darknet (it computes on one core): seconds per iteration of yolov3-tiny at
# 128 px, batch 16, by width multiplier. Other sizes and batches scale with pixels × images.
CPU_SECONDS = {1.0: 3.3, 0.5: 0.94, 0.25: 0.33}
CPU_REFERENCE = (128, 16)


@dataclass(frozen=True)
class TrainSettings:
    """Everything the cfg and the launch need; ``None`` means the rule's default."""

    preset: str = "custom"
    model: str = "yolov3-tiny"
    size: int = 416
    batch: int = 64
    subdivisions: int = 16
    max_batches: int | None = None
    learning_rate: float | None = None
    burn_in: int | None = None
    steps: tuple[float, float] = (0.8, 0.9)
    width: float = 1.0
    random: bool | None = None
    anchors: tuple[tuple[float, float], ...] | None = None
    pretrained: str | None = None
    use_map: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)

    def cfg_options(self) -> dict:
        """The keyword arguments of :func:`darknet_runner.cfg.generate_cfg` (and ``create_run``)."""
        return {"size": self.size, "batch": self.batch, "subdivisions": self.subdivisions,
                "max_batches": self.max_batches, "learning_rate": self.learning_rate, "burn_in": self.burn_in,
                "steps": tuple(self.steps), "width": self.width, "random": self.random,
                "anchors": [tuple(a) for a in self.anchors] if self.anchors else None}

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "notes"}

    def validate(self) -> "TrainSettings":
        """Raise :class:`darknet_runner.cfg.CfgError` (one sentence) for a value darknet cannot train with."""
        cfgmod.generate_cfg(self.model, 1, **{**self.cfg_options(), "max_batches": self.max_batches or 1000,
                                              "burn_in": self.burn_in if self.max_batches else None})
        if self.width != 1.0 and self.pretrained:
            raise cfgmod.CfgError(f"pretrained weights need the stock width: use width 1 with {self.pretrained}, "
                                  f"or no pretrained weights with width {self.width:g}")
        return self


def is_gpu_build(info: DarknetInfo) -> bool:
    """True when the darknet binary is linked against CUDA (read from the file, nothing is run)."""
    try:
        with open(info.path, "rb") as handle:
            return b"libcudart.so" in handle.read(64 << 20)
    except OSError:
        return False


def default_preset(info: DarknetInfo | None) -> str:
    """``gpu`` for a CUDA build, else ``quick``."""
    return "gpu" if info is not None and is_gpu_build(info) else "quick"


def make_preset(name: str, ws: Workspace, slug: str, info: DarknetInfo | None = None, *,
                minutes: float = QUICK_MINUTES, model: str = "yolov3-tiny") -> TrainSettings:
    """The settings of preset ``name`` for dataset ``slug``.

    Raises:
        UserError: unknown preset, a dataset that is not prepared, or minutes out of range.
    """
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    dataset = ws.dataset(slug)
    dataset.require()
    if name == "gpu":
        return _gpu(ws, slug, model, info)
    if name == "custom":
        return TrainSettings(preset="custom", model=model)
    if not (math.isfinite(minutes) and 1 <= minutes <= 24 * 60):
        raise UserError(f"the time budget must be between 1 minute and a day, not {minutes!r} minutes")
    return _quick(ws, slug, info, minutes)


def resolve_settings(ws: Workspace, slug: str, info: DarknetInfo | None, preset: str | None = None, *,
                     minutes: float | None = None, **overrides) -> TrainSettings:
    """A preset (``None``/``"auto"``: :func:`default_preset`) with the values the user gave on top, validated.

    ``overrides`` are :class:`TrainSettings` fields; ``None`` values are "not given". Choosing
    another model than the preset's drops the preset's pretrained file unless one is given.
    """
    name = default_preset(info) if preset in (None, "auto") else preset
    given = {k: v for k, v in overrides.items() if v is not None}
    base = make_preset(name, ws, slug, info, minutes=QUICK_MINUTES if minutes is None else minutes,
                       model=given.get("model", "yolov3-tiny"))
    if given.get("model", base.model) != base.model and "pretrained" not in given:
        given["pretrained"] = None
    if given.get("pretrained") == "none":
        given["pretrained"] = None
    if given.get("anchors") == "stock":
        given["anchors"] = None
    elif "anchors" in given:
        given["anchors"] = tuple(tuple(float(v) for v in pair) for pair in given["anchors"])
    merged = replace(base, **given)
    if "max_batches" in given and "burn_in" not in given and base.burn_in is not None:
        merged = replace(merged, burn_in=_burn_in(merged.max_batches))  # the warm-up follows the run's length
    if "anchors" not in given and base.anchors and (merged.size, merged.model) != (base.size, base.model):
        # fitted anchors are network pixels of one size and one anchor count: fit them again
        merged = replace(merged, anchors=_fitted_anchors(ws, slug, merged.size, len(cfgmod.ANCHORS[merged.model])))
    return merged.validate()


def _quick(ws: Workspace, slug: str, info: DarknetInfo | None, minutes: float) -> TrainSettings:
    dataset = ws.dataset(slug)
    size = dataset.prepared_size()
    if size is None:
        raise UserError(f"dataset {slug!r} is not prepared: prepare it (at 128 or 160 px for a CPU) first")
    notes = []
    if size > QUICK_MAX_SIZE:  # darknet resizes every image to the network size as it loads it
        notes.append(f"the dataset was prepared at {size} px; the quick preset trains at {QUICK_MAX_SIZE} px "
                     f"(prepare at {QUICK_MAX_SIZE} to match)")
        size = QUICK_MAX_SIZE
    base = TrainSettings(preset="quick", model="yolov3-tiny", size=size, batch=16, subdivisions=4,
                         learning_rate=0.01, steps=(0.8, 0.9), width=QUICK_WIDTH, random=False,
                         anchors=_fitted_anchors(ws, slug, size, 6), pretrained=None)
    per_iteration = seconds_per_iteration(base, ws, info)
    iterations = max(SAVE_EVERY, int(minutes * 60 / per_iteration) // SAVE_EVERY * SAVE_EVERY)
    notes.append(f"{iterations} iterations ≈ {minutes:g} min at {per_iteration:.2f} s/iteration")
    return replace(base, max_batches=iterations, burn_in=_burn_in(iterations), notes=tuple(notes))


def _burn_in(iterations: int) -> int:
    """A tenth of the run (at least 10 iterations, never more than the run) warms the learning rate up."""
    return min(iterations, max(10, iterations // 10))


def _gpu(ws: Workspace, slug: str, model: str, info: DarknetInfo | None) -> TrainSettings:
    dataset = ws.dataset(slug)
    classes = len(dataset.class_names())
    train_images = len(dataset.split_lines("train"))
    backbone = {"yolov3": "darknet53.conv.74", "yolov3-tiny": QUICK_BACKBONE, "yolov4-tiny": "yolov4-tiny.conv.29"}
    return TrainSettings(preset="gpu", model=model, size=416, batch=64, subdivisions=16,
                         max_batches=cfgmod.default_max_batches(classes, train_images), random=True,
                         pretrained=backbone.get(model), use_map=bool(info and info.supports_map))


def _fitted_anchors(ws: Workspace, slug: str, size: int, k: int) -> tuple[tuple[float, float], ...] | None:
    """k-means anchors of the written labels at ``size`` (stock anchors when there are too few boxes)."""
    from pipeline.yolo.health import anchors_for, written_labels

    table = written_labels(ws, slug, size)
    if len(table) < k:
        return None
    anchors, _ = anchors_for(table, k, seed=0)
    return tuple((round(float(w), 1), round(float(h), 1)) for w, h in anchors)


def seconds_per_iteration(settings: TrainSettings, ws: Workspace | None, info: DarknetInfo | None) -> float:
    """Median logged seconds/iteration of earlier runs like this one here, else the measured table."""
    measured = _measured(settings, ws, info) if ws is not None else None
    if measured:
        return measured
    ref_size, ref_batch = CPU_REFERENCE
    table = CPU_SECONDS.get(settings.width) or CPU_SECONDS[1.0] * settings.width ** 2
    return table * (settings.size / ref_size) ** 2 * settings.batch / ref_batch


def _measured(settings: TrainSettings, ws: Workspace, info: DarknetInfo | None) -> float | None:
    from darknet_runner.logs import parse_file

    samples = []
    for run_id in ws.runs()[:20]:
        run = RunDir(ws.run_dir(run_id))
        try:
            manifest = run.load()
        except UserError:
            continue
        same = (manifest.get("model"), manifest.get("size"), manifest.get("batch"),
                float(manifest.get("width") or 1.0)) == (settings.model, settings.size, settings.batch, settings.width)
        if not same or (info is not None and (manifest.get("darknet") or {}).get("path") != info.path):
            continue
        if not run.log.is_file():
            continue
        seconds = [it["seconds"] for it in parse_file(run.log).iterations[5:] if it["seconds"] and it["seconds"] > 0]
        if len(seconds) >= 10:
            samples.append(statistics.median(seconds))
    return statistics.median(samples) if samples else None


def estimate_seconds(settings: TrainSettings, ws: Workspace | None = None, info: DarknetInfo | None = None,
                     train_images: int | None = None) -> float:
    """Expected training time of ``settings`` in seconds (iterations × seconds/iteration)."""
    iterations = settings.max_batches or cfgmod.default_max_batches(1, train_images or 0)
    return iterations * seconds_per_iteration(settings, ws, info)


def pretrained_ready(ws: Workspace, name: str | None) -> bool:
    """True when the pretrained file is in the workspace's weights folder."""
    return bool(name) and name in PRETRAINED and (ws.weights_dir / name).is_file()


def weights_path(ws: Workspace, name: str) -> Path:
    return ws.weights_dir / name
