"""``python -m darknet_runner COMMAND``: train, watch and predict without a browser."""
import sys

from pipeline.cli import main

# Modules that own a sub-command (each has ``register(subparsers)``), in help order.
COMMAND_MODULES = [
    "darknet_runner.jobs",       # train | status | stop | resume | runs
    "darknet_runner.preflight",  # preflight
    "darknet_runner.pretrained",  # weights download | info (darknet_runner.weights + --from registry)
    "darknet_runner.logs.command",  # parse-log
    "darknet_runner.follow",     # follow
    "darknet_runner.predict",    # predict
    "darknet_runner.evaluate",   # evaluate
    "darknet_runner.baseline",   # baseline
    "darknet_runner.summary",    # summary
]

if __name__ == "__main__":
    sys.exit(main("python -m darknet_runner", "Darknet training and prediction.", COMMAND_MODULES))
