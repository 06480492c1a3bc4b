"""``python -m darknet_runner COMMAND``: train, watch and predict without a browser."""
import sys

from pipeline.cli import main

# Modules that own a sub-command (each has ``register(subparsers)``), in help order.
COMMAND_MODULES = [
    "darknet_runner.jobs",       # train | status | stop | resume | runs
    "darknet_runner.preflight",  # preflight
    "darknet_runner.weights",    # weights download | info
    "darknet_runner.logparse",   # parse-log
    "darknet_runner.follow",     # follow
    "darknet_runner.predict",    # predict
]

if __name__ == "__main__":
    sys.exit(main("python -m darknet_runner", "Darknet training and prediction.", COMMAND_MODULES))
