"""Darknet ``.cfg`` files: a reader/writer and a generator for custom YOLO configs.

The reader follows darknet's own parser (``src/parser.c:read_cfg`` + ``utils.c:strip``): every
line loses **all** whitespace, ``#`` and ``;`` lines are comments, ``[name]`` opens a section and
``key=value`` adds an option. Comments are therefore always dropped, so ``write(read(x))`` is a
fixpoint and two files compare equal when darknet would build the same network from them.

The generator builds the networks from in-code layer tables (no /usr/share/darknet at runtime:
users' GPU machines may not have it) and applies the AlexeyAB custom-training rules (facts §12).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.cli import UserError

MODELS = ("yolov3", "yolov3-tiny", "yolov4-tiny")
COORDS = 4  # x, y, w, h; filters = (classes + coords + 1) * masks

# Stock anchors (network pixels at the stock size), as width,height pairs.
ANCHORS = {
    "yolov3": [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326)],
    "yolov3-tiny": [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)],
    "yolov4-tiny": [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)],
}

# [net] keys shared by every template, in the stock order; the training keys are filled in later.
NET_COMMON = [("channels", "3"), ("momentum", "0.9"), ("decay", "0.0005"), ("angle", "0"),
              ("saturation", "1.5"), ("exposure", "1.5"), ("hue", ".1")]
LEARNING_RATE = {"yolov3": "0.001", "yolov3-tiny": "0.001", "yolov4-tiny": "0.00261"}

# Keys that differ between a training cfg and Debian's stock files; comparisons set them aside.
TRAINING_KEYS = frozenset({"batch", "subdivisions", "width", "height", "learning_rate", "burn_in",
                           "max_batches", "policy", "steps", "scales", "random"})

# [yolo] keys besides mask/anchors/classes/num; yolov4-tiny adds AlexeyAB's CIoU settings.
YOLO_V3_KEYS = [("jitter", ".3"), ("ignore_thresh", ".7"), ("truth_thresh", "1")]
YOLO_V4_KEYS = [("jitter", ".3"), ("scale_x_y", "1.05"), ("cls_normalizer", "1.0"),
                ("iou_normalizer", "0.07"), ("iou_loss", "ciou"), ("ignore_thresh", ".7"),
                ("truth_thresh", "1")]
YOLO_V4_TAIL = [("resize", "1.5"), ("nms_kind", "greedynms"), ("beta_nms", "0.6")]


class CfgError(UserError, ValueError):
    """A training setting darknet cannot use (one sentence; a ValueError for older callers)."""


@dataclass
class Section:
    """One ``[name]`` block; ``options`` keeps file order (the first of a repeated key wins, as in darknet)."""

    name: str
    options: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)


def read_cfg(text: str) -> list[Section]:
    """Parse cfg text into sections, the way darknet does (comments dropped, whitespace removed).

    Raises:
        ValueError: an option appears before any section, or a line is neither section nor option.
    """
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append(Section(line.strip("[]")))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options.setdefault(key, value)
        else:
            raise ValueError(f"line {number} of the cfg is not a [section] or key=value option: {raw.strip()!r}")
    return sections


def write_cfg(sections: list[Section]) -> str:
    """Render sections as cfg text (one blank line between sections)."""
    blocks = []
    for section in sections:
        lines = [f"[{section.name}]"] + [f"{key}={value}" for key, value in section.options.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# --- layer builders -------------------------------------------------------------------------

def _conv(filters: int, size: int = 3, stride: int = 1, linear: bool = False) -> Section:
    if linear:  # the detection conv before [yolo]: no batch norm, filters set later
        return Section("convolutional", {"size": str(size), "stride": str(stride), "pad": "1",
                                         "filters": str(filters), "activation": "linear"})
    return Section("convolutional", {"batch_normalize": "1", "filters": str(filters), "size": str(size),
                                     "stride": str(stride), "pad": "1", "activation": "leaky"})


def _route(layers: str, **extra: str) -> Section:
    return Section("route", {"layers": layers, **extra})


def _yolo(mask: str, num: int, v4: bool = False) -> Section:
    opts = {"mask": mask, "anchors": "", "classes": "80", "num": str(num)}
    opts.update(YOLO_V4_KEYS if v4 else YOLO_V3_KEYS)
    opts["random"] = "1"
    if v4:
        opts.update(YOLO_V4_TAIL)
    return Section("yolo", opts)


def _residual(inner: int, outer: int) -> list[Section]:
    return [_conv(inner, 1), _conv(outer, 3), Section("shortcut", {"from": "-3", "activation": "linear"})]


def _yolov3_layers() -> list[Section]:
    layers = [_conv(32)]
    for width, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        layers.append(_conv(width, 3, 2))  # downsample
        for _ in range(blocks):
            layers += _residual(width // 2, width)
    for index, (width, mask, skip) in enumerate(((512, "6,7,8", None), (256, "3,4,5", 61), (128, "0,1,2", 36))):
        if skip is not None:
            layers += [_route("-4"), _conv(width, 1), Section("upsample", {"stride": "2"}),
                       _route(f"-1,{skip}")]
        for _ in range(3):
            layers += [_conv(width, 1), _conv(width * 2, 3)]
        layers += [_conv(255, 1, linear=True), _yolo(mask, 9)]
    return layers


def _yolov3_tiny_layers() -> list[Section]:
    layers: list[Section] = []
    for width in (16, 32, 64, 128, 256, 512):
        layers += [_conv(width), Section("maxpool", {"size": "2", "stride": "1" if width == 512 else "2"})]
    layers += [_conv(1024), _conv(256, 1), _conv(512), _conv(255, 1, linear=True), _yolo("3,4,5", 6),
               _route("-4"), _conv(128, 1), Section("upsample", {"stride": "2"}), _route("-1,8"),
               _conv(256), _conv(255, 1, linear=True), _yolo("0,1,2", 6)]
    return layers


def _csp_block(width: int) -> list[Section]:
    """yolov4-tiny's CSP block: split the channels in two ([route] groups), two convs, concat."""
    return [_conv(width), _route("-1", groups="2", group_id="1"), _conv(width // 2), _conv(width // 2),
            _route("-1,-2"), _conv(width, 1), _route("-6,-1"), Section("maxpool", {"size": "2", "stride": "2"})]


def _yolov4_tiny_layers() -> list[Section]:
    layers = [_conv(32, 3, 2), _conv(64, 3, 2)] + _csp_block(64) + _csp_block(128) + _csp_block(256)
    layers += [_conv(512), _conv(256, 1), _conv(512), _conv(255, 1, linear=True), _yolo("3,4,5", 6, v4=True),
               _route("-4"), _conv(128, 1), Section("upsample", {"stride": "2"}), _route("-1,23"),
               _conv(256), _conv(255, 1, linear=True), _yolo("1,2,3", 6, v4=True)]
    return layers


TEMPLATES = {"yolov3": _yolov3_layers, "yolov3-tiny": _yolov3_tiny_layers, "yolov4-tiny": _yolov4_tiny_layers}


# --- training values ------------------------------------------------------------------------

def default_max_batches(classes: int, train_images: int = 0) -> int:
    """AlexeyAB's rule: ``max(2000 × classes, train images, 6000)``."""
    return max(2000 * classes, train_images, 6000)


def default_burn_in(max_batches: int) -> int:
    """The stock 1000, scaled down to a tenth of a short run (so a 40-iteration run still learns)."""
    return min(1000, max_batches // 10)


def format_anchors(anchors: list[tuple[float, float]]) -> str:
    """``[(10, 14), (23, 27)]`` → ``"10,14, 23,27"`` (rounded to whole pixels, as darknet prints them)."""
    return ", ".join(f"{round(w)},{round(h)}" for w, h in anchors)


def _net_section(model: str, size: int, batch: int, subdivisions: int, max_batches: int,
                 burn_in: int, learning_rate: float | None, steps: tuple[float, float]) -> Section:
    opts = {"batch": str(batch), "subdivisions": str(subdivisions), "width": str(size), "height": str(size)}
    opts.update(NET_COMMON)
    opts.update({
        "learning_rate": str(learning_rate) if learning_rate is not None else LEARNING_RATE[model],
        "burn_in": str(burn_in), "max_batches": str(max_batches), "policy": "steps",
        "steps": ",".join(str(max(1, int(max_batches * s))) for s in steps), "scales": ".1,.1",
    })
    return Section("net", opts)


def _validate(model: str, classes: int, size: int, batch: int, subdivisions: int) -> None:
    if model not in TEMPLATES:
        raise CfgError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    if classes < 1:
        raise CfgError(f"a detector needs at least one class, not {classes}")
    if not 32 <= size <= 4096 or size % 32:
        raise CfgError(f"the network size must be a multiple of 32 between 32 and 4096 (e.g. 416), not {size}")
    if not 1 <= batch <= 4096 or subdivisions < 1 or batch % subdivisions:
        raise CfgError(f"batch ({batch}) must be a positive multiple of subdivisions ({subdivisions}), at most 4096")


def validate_training(*, max_batches: int | None = None, burn_in: int | None = None,
                      learning_rate: float | None = None, width: float = 1.0,
                      steps: tuple[float, float] = (0.8, 0.9)) -> None:
    """Refuse training numbers darknet would accept and then train nonsense with (NaN loss, "17/-5").

    Raises:
        CfgError: one sentence naming the value.
    """
    if max_batches is not None and not (isinstance(max_batches, int) and 1 <= max_batches <= 10_000_000):
        raise CfgError(f"iterations (max_batches) must be a whole number from 1 to 10,000,000, not {max_batches!r}")
    if burn_in is not None and not (isinstance(burn_in, int) and 0 <= burn_in <= (max_batches or 10_000_000)):
        raise CfgError(f"burn_in must be a whole number from 0 to the iterations, not {burn_in!r}")
    if learning_rate is not None and not (math.isfinite(learning_rate) and 0 < learning_rate <= 1):
        raise CfgError(f"the learning rate must be above 0 and at most 1 (e.g. 0.001), not {learning_rate!r}")
    if not (math.isfinite(width) and 0.0625 <= width <= 4):
        raise CfgError(f"the width multiplier must be between 0.0625 and 4 (1 = the stock filters), not {width!r}")
    if len(steps) != 2 or not all(math.isfinite(s) for s in steps) or not 0 < steps[0] < steps[1] <= 1:
        raise CfgError(f"the learning-rate steps must be two fractions 0 < a < b <= 1 of the iterations, "
                       f"not {list(steps)!r}")


def generate_sections(model: str, classes: int, *, size: int = 416, batch: int = 64, subdivisions: int = 16,
                      max_batches: int | None = None, train_images: int = 0,
                      anchors: list[tuple[float, float]] | None = None, random: bool | int | None = None,
                      burn_in: int | None = None, learning_rate: float | None = None, width: float = 1.0,
                      steps: tuple[float, float] = (0.8, 0.9)) -> list[Section]:
    """Build the sections of a custom training cfg; see :func:`generate_cfg`."""
    _validate(model, classes, size, batch, subdivisions)
    validate_training(max_batches=max_batches, burn_in=burn_in, learning_rate=learning_rate, width=width,
                      steps=steps)
    layers = TEMPLATES[model]()
    wanted = len(ANCHORS[model])
    chosen = anchors if anchors is not None else ANCHORS[model]
    if len(chosen) != wanted:
        raise CfgError(f"{model} needs {wanted} anchors (width,height pairs), not {len(chosen)}")
    if not all(math.isfinite(v) and 0 < v <= 8 * size for pair in chosen for v in pair):
        raise CfgError(f"anchors must be positive sizes in network pixels (at most {8 * size}), not {chosen!r}")
    if width != 1.0:
        _scale_filters(layers, width)
    max_batches = max_batches if max_batches is not None else default_max_batches(classes, train_images)
    burn_in = burn_in if burn_in is not None else default_burn_in(max_batches)
    for index, layer in enumerate(layers):
        if layer.name != "yolo":
            continue
        layer.options.update(anchors=format_anchors(chosen), classes=str(classes))
        if random is not None:
            layer.options["random"] = str(int(bool(random)))
        layers[index - 1].options["filters"] = str((classes + COORDS + 1) * len(layer.options["mask"].split(",")))
    return [_net_section(model, size, batch, subdivisions, max_batches, burn_in, learning_rate, steps)] + layers


def _scale_filters(layers: list[Section], width: float) -> None:
    """Multiply the filters of every batch-normalised conv by ``width`` (a multiple of 8, at least 8).

    A narrower network trains several times faster on a CPU; it cannot start from pretrained
    weights of the stock width (their shapes differ).
    """
    for layer in layers:
        if layer.name == "convolutional" and layer.options.get("batch_normalize") == "1":
            filters = int(layer.options["filters"])
            layer.options["filters"] = str(max(8, int(round(filters * width / 8)) * 8))


def generate_cfg(model: str, classes: int, *, size: int = 416, batch: int = 64, subdivisions: int = 16,
                 max_batches: int | None = None, train_images: int = 0,
                 anchors: list[tuple[float, float]] | None = None, random: bool | int | None = None,
                 burn_in: int | None = None, learning_rate: float | None = None, width: float = 1.0,
                 steps: tuple[float, float] = (0.8, 0.9)) -> str:
    """A custom training cfg for ``model`` ("yolov3" | "yolov3-tiny" | "yolov4-tiny").

    Args:
        classes: number of classes; filters before each [yolo] become ``(classes + 5) × masks``.
        size: network width and height, a multiple of 32.
        batch, subdivisions: images per iteration and how many pieces it is split into on the GPU.
        max_batches: iterations; default ``max(2000 × classes, train_images, 6000)``.
        train_images: number of training images (only for the default max_batches).
        anchors: width,height pairs in network pixels (from the dataset health step); stock otherwise.
        random: multi-resolution training in every [yolo] (stock: on).
        burn_in: warm-up iterations; default ``min(1000, max_batches // 10)``.
        learning_rate: default the stock value of the model.
        width: multiplier of the batch-normalised convs' filters (0.5 = half as wide; 1 = stock).
        steps: where the learning rate drops ×0.1, as fractions of max_batches.

    Raises:
        CfgError (a ValueError and a UserError): unknown model, a number out of range, bad
            batch/subdivisions, anchors or steps.
    """
    return write_cfg(generate_sections(
        model, classes, size=size, batch=batch, subdivisions=subdivisions, max_batches=max_batches,
        train_images=train_images, anchors=anchors, random=random, burn_in=burn_in, learning_rate=learning_rate,
        width=width, steps=steps))


# --- inspection (used by preflight and the run directory) -----------------------------------

def net_options(sections: list[Section]) -> dict[str, str]:
    """The ``[net]`` (or ``[network]``) options; empty when there is none."""
    for section in sections:
        if section.name in ("net", "network"):
            return section.options
    return {}


def yolo_classes(sections: list[Section]) -> list[int]:
    """``classes=`` of every [yolo] layer, in order."""
    return [int(s.get("classes", "20")) for s in sections if s.name == "yolo"]


def filter_mismatches(sections: list[Section]) -> list[str]:
    """One sentence per [yolo] layer whose preceding convolution has the wrong ``filters``."""
    problems = []
    layer_index = -1
    for position, section in enumerate(sections):
        if section.name in ("net", "network"):
            continue
        layer_index += 1
        if section.name != "yolo":
            continue
        classes = int(section.get("classes", "20"))
        masks = len(section.get("mask", "").split(",")) if section.get("mask") else int(section.get("num", "1"))
        wanted = (classes + COORDS + 1) * masks
        before = sections[position - 1] if position > 0 else None
        have = before.get("filters") if before is not None and before.name == "convolutional" else None
        if have is None or int(have) != wanted:
            problems.append(f"the convolution before [yolo] layer {layer_index} has filters={have} but "
                            f"classes={classes} with {masks} masks needs filters={wanted}")
    return problems


def layer_keys(sections: list[Section], skip: frozenset[str] = TRAINING_KEYS) -> list[tuple[str, dict[str, str]]]:
    """(section name, options without ``skip`` keys) per section: what two cfgs compare on."""
    return [(s.name, {k: v for k, v in s.options.items() if k not in skip}) for s in sections]


# Layers that keep their input's channels and save no weights (every fork's save_weights_upto).
_PASSTHROUGH = frozenset({"maxpool", "max", "avgpool", "avg", "upsample", "yolo", "region", "detection",
                          "dropout", "softmax", "soft", "cost", "crop", "logistic", "l2norm", "normalization",
                          "lrn", "activation", "gaussian_yolo"})


def weight_floats(sections: list[Section]) -> int | None:
    """How many float32 values darknet's ``save_weights`` writes after the header for this network.

    Per layer, as ``src/parser.c:save_convolutional_weights`` / ``save_batchnorm_weights`` write them:
    a [convolutional] (or [deconvolutional]) with ``n`` filters of ``size``×``size`` on ``c`` input
    channels in ``groups`` writes ``n`` biases, ``3n`` batch-norm values (scales, rolling mean and
    variance) when ``batch_normalize=1``, then ``c/groups × n × size²`` weights; a [batchnorm] writes
    ``3c``. Channels follow the network ([route] concatenates, with AlexeyAB's ``groups`` splitting;
    [shortcut], pooling and [yolo] keep them; [reorg] multiplies them by stride²).

    Returns None for a layer whose saved size this does not know ([connected], recurrent layers, …).
    """
    net = net_options(sections)
    channels = int(net.get("channels", "3"))
    outputs: list[int] = []  # output channels per layer index
    total = 0
    try:
        for section in (s for s in sections if s.name not in ("net", "network")):
            name, opt = section.name, section.options
            if name in ("convolutional", "conv", "deconvolutional", "deconv"):
                filters, size = int(opt.get("filters", "1")), int(opt.get("size", "1"))
                groups = int(opt.get("groups", "1")) if name.startswith("conv") else 1
                saved = "share_index" not in opt and opt.get("dontsave", "0") == "0"
                if saved:
                    total += filters * (4 if opt.get("batch_normalize", "0") != "0" else 1)
                    total += channels // max(1, groups) * filters * size * size
                channels = filters
            elif name == "batchnorm":
                total += 3 * channels if opt.get("dontsave", "0") == "0" else 0
            elif name == "route":
                index = len(outputs)
                refs = [int(v) for v in opt.get("layers", "").split(",") if v.strip()]
                picked = [outputs[r + index if r < 0 else r] for r in refs]
                channels = sum(picked) // max(1, int(opt.get("groups", "1")))
            elif name == "reorg":
                if opt.get("extra", "0") != "0" or opt.get("flatten", "0") != "0":
                    return None
                stride = int(opt.get("stride", "1"))
                channels = channels // (stride * stride) if opt.get("reverse", "0") != "0" else channels * stride * stride
            elif name == "shortcut":
                if opt.get("weights_type", "none") != "none":
                    return None
            elif name in _PASSTHROUGH:
                if name in ("maxpool", "max") and opt.get("maxpool_depth", "0") != "0":
                    return None
            else:
                return None
            outputs.append(channels)
    except (ValueError, IndexError):
        return None
    return total
