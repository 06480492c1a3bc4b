"""``python -m pipeline COMMAND``: every dataset step without a browser."""
import sys

from pipeline.cli import main

# Modules that own a sub-command (each has ``register(subparsers)``), in help order.
COMMAND_MODULES = [
    "pipeline.demo",        # demo
    "pipeline.metadata",    # metadata download | link
    "pipeline.classes",     # classes
    "pipeline.build",       # build
    "pipeline.fetch",       # fetch-images
    "pipeline.sync",        # push | pull
    "pipeline.prepare",     # prepare
    "pipeline.split",       # split
    "pipeline.health",      # health
    "pipeline.evaluate",    # evaluate
]

if __name__ == "__main__":
    sys.exit(main("python -m pipeline", "Open Images → Darknet dataset steps.", COMMAND_MODULES))
