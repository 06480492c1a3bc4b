"""What darknet prints, as data: regexes, substring markers, error rules and their messages.

Every fork's formats (facts/darknet.md §1–7, §10) live here and nowhere else; the parser, the
dashboard and the jobs read the log through them. :func:`strip_ansi` is the one ANSI/BEL filter.
"""
from __future__ import annotations

import re

# -- preprocessing (facts §7) -------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]?|\x07")
HANK_OSC_TITLE = re.compile(r"\x1b\]2;\d+/(\d+):")

# -- hot-path patterns: numbers as "anything up to a comma", validated by float() later ----------
ITER_CLASSIC = re.compile(  # pjreddie + AlexeyAB, all years
    r"\s*(\d+): +([^,\s]+), +([^,\s]+) avg(?: loss)?, +([^,\s]+) rate, +([^,\s]+) seconds,"
    r" +(\d+) images(?:, +([^,\s]+) (?:hours|time) left)?\s*$")
ITER_CLASSIC_ALL = re.compile(  # the same over a feed's iteration lines joined by \n
    r"^[ \t]*(\d+): +([^,\s]+), +([^,\s]+) avg(?: loss)?, +([^,\s]+) rate, +([^,\s]+) seconds,"
    r" +(\d+) images(?:, +([^,\s]+) (?:hours|time) left)?[ \t\r]*$", re.M)
LAYER_V3_PATTERN = (  # AlexeyAB 2019-06 → now, hank -verbose; never crosses a newline
    r"v3 \(?\w+ loss, Normalizer: \(iou: [^,\n]*, (?:obj: [^,\n]*, )?cls: [^)\n]*\) Region (\d+)"
    r" Avg \(IOU: ([^,)\n]*)(?:, GIOU: [^)\n]*)?\),(?: Class: ([^,\n]*), Obj: ([^,\n]*), No Obj: ([^,\n]*),"
    r" \.5R: ([^,\n]*), \.75R: ([^,\n]*),)? count: (\d+)(?:, loss = ([^,\s]*))?"
    r"(?:, class_loss ?[:=] ?([^,\s]*), iou_loss ?[:=] ?([^,\s]*))?(?:, total_loss ?[:=] ?([^,\s]*))?[ \t\r]*$")
LAYER_V3 = re.compile(LAYER_V3_PATTERN)
LAYER_V3_ALL = re.compile("^" + LAYER_V3_PATTERN, re.M)  # findall over a feed's layer lines joined by \n
LAYER_V3_NOW = re.compile(  # AlexeyAB 2020-12 → now, on lines known to start with "v3 ": few groups and a
    # literal start (") Region "), so the regex engine skips most of each line; much faster in bulk
    r"\) Region (\d+) Avg \(IOU: ([^,)\n]*)\), count: (\d+), class_loss = ([^,\s]*), iou_loss = ([^,\s]*), "
    r"total_loss = ([^,\s]*)[ \t\r]*$", re.M)
REGION_V3_OLD = re.compile(  # pjreddie, AlexeyAB ≤ 2019-05
    r"Region (\d+) Avg IOU: ([^,]+), Class: ([^,]+), Obj: ([^,]+), No Obj: ([^,]+), \.5R: ([^,]+),"
    r" \.75R: ([^,]+),\s+count: (\d+)\s*$")
REGION_V2 = re.compile(
    r"Region Avg IOU: ([^,]+), Class: ([^,]+), Obj: ([^,]+), No Obj: ([^,]+), Avg Recall: ([^,]+),"
    r"\s+count: (\d+)\s*$")

# -- rarer lines: the facts' regexes ---------------------------------------------------------------
NUM = r"[-+]?(?:nan|inf|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|1\.#(?:IND|QNAN|INF)0*)"
ITER_HANK = re.compile(
    r"\s*(?P<it>\d+): loss=(?P<loss>NUM), avg loss=(?P<avg>NUM),(?: last=(?:none|NUM%), "
    r"best=(?:none|NUM%), (?:next|mAP)=(?:\d+|DISABLED),)? rate=(?P<rate>NUM), (?:load \d+=[^,]+, "
    r"train=(?P<train>[^,]+)|(?P<t>[^,]+)), (?P<imgs>\d+) images, time remaining=(?P<left>.+?)\s*$"
    .replace("NUM", NUM))
TITLE = re.compile(r"(?:^|\s)(\d+)/(\d+): loss=" + NUM + r"(?: map=" + NUM + " best=" + NUM + r")? (?:hours left|time)=")
DURATION = re.compile(r"(" + NUM + r") ?(microsecond|millisecond|second|minute|hour|day)s?\b")
DURATION_HOURS = {"microsecond": 1 / 3.6e9, "millisecond": 1 / 3.6e6, "second": 1 / 3600,
                  "minute": 1 / 60, "hour": 1.0, "day": 24.0}
MAP_CLASS = re.compile(r"class(?:_id)? = (\d+), name = (.*?),.*?\bap = (" + NUM + r") ?%"
                       r"(?:.*?\(TP = (\d+), FP = (\d+)\))?")
MAP_HANK_ROW = re.compile(r"\s*(\d+) (.+?)\s+(" + NUM + r")\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(" + NUM
                          + r")\s+(" + NUM + r")\s*$")
MAP_PRF = re.compile(r"for (?:conf_)?thresh ?= ?" + NUM + r", precision ?= ?(" + NUM + r"), recall ?= ?("
                     + NUM + r"), F1[- ]score ?= ?(" + NUM + ")")
MAP_TPFP = re.compile(r"for (?:conf_)?thresh ?= ?" + NUM + r", TP ?= ?(\d+), FP ?= ?(\d+), FN ?= ?(\d+),"
                      r" average IoU ?= ?(" + NUM + ") ?%")
MAP_MEAN = re.compile(r"mean average precision \(mAP(?:@(" + NUM + r"))?\) ?= ?(" + NUM + r")(?:, or ("
                      + NUM + r") %| ?%)")
MAP_TRAIN = re.compile(r"mean_average_precision(?: \(mAP(?:@(" + NUM + r"))?\))? = (" + NUM + ")")
SAVING = re.compile(r"Saving weights to (.+?)\s*$")
WEIGHTS_ITER = re.compile(r"_(\d+)\.weights$")
RESIZE = re.compile(r"Resizing(?:, random_coef ?= ?" + NUM + r")?(?:, batch=\d+, (\d+)x(\d+))?\s*$")
RESIZE_TO = re.compile(r"Resizing to initial size: (\d+) x (\d+)")
RESIZE_DIMS = re.compile(r"\s*(\d+) x (\d+)\s*(?:\(batch = \d+\))?\s*$|(\d{2,4})$")
MAX_LIMIT = re.compile(r"max batch limit of (\d+)")

# Lines that are frequent and never a record: skipped before the dispatch table.
SKIP_PREFIXES = (" total_bbox", "total_bbox", "Loaded: ", " Detection layer", "   layer",
                 "Loading weights from", " seen ", "Done!")
STDERR_LINE_PREFIXES = ("Saving weights to", "Loading weights from")

# -- fork detection: strong markers decide, weak ones only guess -----------------------------------
STRONG_MARKERS = (("Darknet V", "hank"), ("Darknet is compiled to use", "hank"), ("* Error message:", "hank"),
                  ("Calculating mAP (mean average precision) with", "hank"), ("GPU isn't used", "alexeyab"),
                  ("OpenCV isn't used", "alexeyab"), ("Darknet error location", "alexeyab"),
                  ("calculation mAP (mean average precision)", "alexeyab"), ("avg_outputs = ", "alexeyab"),
                  ("permanent cpu-threads", "alexeyab"), ("mini_batch = ", "alexeyab"))
WEAK_MARKERS = (("BFLOPs", "pjreddie"), ("darknet: ./src/", "pjreddie"))

# -- errors: (needle, kind, fatal, how to read the detail) — first match wins ---------------------
# fatal is True/False, or the set of forks where the run stops there (AlexeyAB carries on with a
# blank image, pjreddie exits 0 — exit codes lie, facts §6).
MESSAGES = {
    "cuda_oom": "The GPU ran out of memory: raise subdivisions in the cfg (16 → 32 or 64), or lower "
                "width/height or batch.",
    "filters_mismatch": "filters= in the [convolutional] layer before a [yolo] layer does not match classes: "
                        "set it to (classes + 5) × 3 (18 for one class).",
    "missing_label": "Label file {path} is missing: write it next to its image (run prepare again) or drop the "
                     "image from the list.",
    "missing_image": "Image {path} could not be loaded: check that it exists and is a readable JPEG, or drop it "
                     "from the list.",
    "missing_file": "darknet could not open {path}: check the paths in obj.data and the list files (relative to "
                    "the run folder, no spaces).",
    "wrong_annotation": "Wrong annotation in {path}: {detail}; class ids must be below classes and coordinates "
                        "within 0..1.",
    "nan": "The loss became NaN at iteration {path}: training diverged; lower learning_rate, lengthen burn_in or "
           "check the labels.",
    "crash": "darknet crashed ({detail}).",
    "cfg_layer": "model.cfg has a layer type darknet does not know: {detail} (a typo? e.g. [maxpool], "
                 "[convolutional], [route]).",
    "write_failed": "darknet could not create {path}: the disk is full or the backup folder is not writable.",
    "config": "The cfg cannot train: {detail}.",
    "cuda": "CUDA error ({detail}): check the GPU driver and the -gpus list.",
    "fatal": "darknet stopped with an error: {detail}.",
}
ERROR_RULES = (
    ("l.outputs == params.inputs", "filters_mismatch", True, None),
    ("does not match either the classes or the mask", "filters_mismatch", True, None),
    ("out of memory", "cuda_oom", True, None),
    ("CUDA memory allocation failed", "cuda_oom", True, None),
    ("Try to set subdivisions", "cuda_oom", True, None),
    ("try to set subdivisions", "cuda_oom", True, None),
    ("used slow CUDNN algo without Workspace", "cuda_oom", False, None),  # a warning: it goes on, slower
    ("CUDA Error", "cuda", True, re.compile(r"CUDA Error:?\s*(.+)")),
    ("CUDA status Error", "cuda", True, re.compile(r"(CUDA status Error.*)")),
    ("Couldn't open file: ", "open", True, re.compile(r"Couldn't open file: (.+?)\s*$")),
    ("Can't open label file", "missing_label", False, re.compile(r"Can't open label file\..*?: (\S.*?)\s*$")),
    ("failed to open annotation file", "missing_label", True, re.compile(r'annotation file "?([^"]+?)"?\s*$')),
    ("unexpected error while reading annotations from", "missing_label", False,
     re.compile(r"annotations from (.+?)\s*$")),
    ("Failed to infer label file name", "missing_label", False, re.compile(r"supported\)?: ?(.+?)\s*$")),
    ("Cannot load image", "missing_image", frozenset({"pjreddie", None}), re.compile(r'Cannot load image "([^"]+)"')),
    ("failed to load image file", "missing_image", True, re.compile(r'image file "?([^"]+?)"?\s*$')),
    ("Wrong annotation: ", "wrong_annotation", False, re.compile(r"Wrong annotation: (.*?),? file: (.+?)\s*$")),
    ("Warning: in txt-labels class_id", "wrong_annotation", False, re.compile(r"(class_id.*?)\s*$")),
    ("invalid class ID", "wrong_annotation", True, re.compile(r"(invalid class ID \S+) in (.+?)\s*$")),
    ("invalid coordinate in", "wrong_annotation", True, re.compile(r"(invalid coordinate) in (.+?)\s*$")),
    ("file for mAP calculation", "missing_file", True, re.compile(r"There is no (.+?) file for mAP")),
    ("Type not recognized: ", "cfg_layer", True, re.compile(r"Type not recognized: (.+?)\s*$")),
    ("incorrect value batch=", "config", True, re.compile(r"(You set incorrect value batch=\S+ for Training)")),
    ("batch size should not be set to 1", "config", True, re.compile(r"(batch size should not be set to 1)")),
    ("compile Darknet with OpenCV for using mosaic", "config", True, re.compile(r"(mosaic=1) - compile")),
    ("double free or corruption", "crash", True, re.compile(r"(double free or corruption.*?)\s*$")),
    ("Segmentation fault", "crash", True, re.compile(r"(Segmentation fault)")),
    ("core dumped", "crash", True, re.compile(r"(\w[^()]*core dumped)")),
    ("free(): invalid", "crash", True, re.compile(r"(free\(\): invalid.*?)\s*$")),
    ("Assertion `", "crash", True, re.compile(r"Assertion `(.*)' failed")),
)
ALPHABET_PNG = "data/labels/"  # AlexeyAB `detector test` looks for its font here; harmless (facts §9)
FATAL_KIND_ORDER = ("cuda_oom", "filters_mismatch", "cfg_layer", "write_failed", "missing_file", "missing_label",
                    "missing_image", "wrong_annotation", "config", "cuda", "nan", "crash", "fatal")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI CSI/OSC sequences and BEL (colour codes, clear-screen, window title)."""
    if "\x1b" in text:
        text = ANSI.sub("", text)
    return text.replace("\x07", "") if "\x07" in text else text
