"""``python -m darknet_runner parse-log FILE [--json]``: a parsed log as a few lines or one JSON object."""
from __future__ import annotations

import argparse
import json
import math
from typing import Any

from darknet_runner.logs.alerts import log_alerts
from darknet_runner.logs.follower import parse_file
from darknet_runner.logs.records import ParsedLog


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the result is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def as_json(log: ParsedLog, alerts: list[dict] | None = None) -> dict:
    """The JSON object of ``parse-log --json``: the records and the alerts (default: the log-only ones).

    NaN/inf become null.
    """
    if alerts is None:
        alerts = log_alerts(log)
    return _finite({"fork": log.fork, "iterations": log.iterations, "layers": log.layers, "map": log.map,
                    "weights": log.weights, "errors": log.errors, "alerts": alerts})


def summary(log: ParsedLog) -> str:
    """A few human lines about a parsed log."""
    lines = [f"fork: {log.fork or 'unknown'}",
             f"iterations: {log.iteration_count}" + (f" (last {log.last_iteration}" + (
                 f" of {log.max_batches})" if log.max_batches else ")") if log.iteration_count else "")]
    if log.iteration_count:
        last = log.iteration(-1)
        lines.append(f"last loss: {last['loss']:.4f}, avg loss: {last['avg_loss']:.4f}")
    for event in log.map:
        value = "n/a" if event["map50"] is None else f"{event['map50'] * 100:.2f} %"
        lines.append(f"mAP@0.5 at iteration {event['iteration']}: {value}")
    lines += [f"saved: {w['path']} (iteration {w['iteration']})" for w in log.weights]
    lines += [f"{'error' if e['fatal'] else 'warning'} (line {e['line']}, x{e['count']}): {e['message']}"
              for e in log.errors]
    lines += [f"alert: {a['message']}" for a in log_alerts(log)]
    return "\n".join(lines)


def _cmd_parse_log(args: argparse.Namespace) -> int:
    parsed = parse_file(args.file)
    if args.json:
        print(json.dumps(as_json(parsed), allow_nan=False))
    else:
        print(summary(parsed))
    return 0


def register(subparsers) -> None:
    """Add ``parse-log FILE [--json]``."""
    p = subparsers.add_parser("parse-log", help="parse a darknet training log (any fork)")
    p.add_argument("file", help="the log file (e.g. runs/<id>/train_log.txt)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=_cmd_parse_log)
