"""``python -m pipeline COMMAND``: every dataset step without a browser."""
import sys

from pipeline.cli import main

# Modules that own a sub-command (each has ``register(subparsers)``), in help order.
COMMAND_MODULES = [
    "pipeline.demo.generate",           # demo
    "pipeline.openimages.metadata",     # metadata download | link
    "pipeline.openimages.classes",      # classes
    "pipeline.openimages.build",        # build
    "pipeline.images.fetch",            # fetch-images
    "pipeline.images.sync",             # push | pull
    "pipeline.yolo.prepare",            # prepare
    "pipeline.yolo.split",              # split
    "pipeline.yolo.health",             # health
]

if __name__ == "__main__":
    sys.exit(main("python -m pipeline", "Open Images → Darknet dataset steps.", COMMAND_MODULES))
