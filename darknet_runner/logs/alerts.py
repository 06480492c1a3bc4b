"""What a parsed log means for a run: alerts (divergence, rising loss, stall, early exit) and the failure reason."""
from __future__ import annotations

import math

from darknet_runner.logs.patterns import FATAL_KIND_ORDER
from darknet_runner.logs.records import ParsedLog

RISING_K = 100  # darknet's avg loss is a 0.9/0.1 moving average: rising this long is not noise
FIRST_PATHS = 3  # how many of the images darknet could not load an alert names


def log_alerts(log: ParsedLog, rising_k: int = RISING_K) -> list[dict]:
    """Alerts that need only the log: non-finite loss, avg loss rising for ``rising_k`` iterations."""
    alerts = []
    c = log.columns()
    for i in range(len(c["loss"])):
        if not (math.isfinite(c["loss"][i]) and math.isfinite(c["avg_loss"][i])):
            alerts.append({"kind": "nan", "iteration": c["iteration"][i],
                           "message": f"Loss is {c['loss'][i]} / avg {c['avg_loss'][i]} at iteration "
                                      f"{c['iteration'][i]}: training diverged."})
            break
    missing = log.error_paths("missing_image")
    if missing:  # AlexeyAB trains on with a blank image, pjreddie exits: say it either way, with the files
        lines = log.error_count("missing_image")
        first = ", ".join(missing[:FIRST_PATHS]) + (", …" if len(missing) > FIRST_PATHS else "")
        alerts.append({"kind": "missing_images", "iteration": log.last_iteration, "count": len(missing),
                       "paths": missing[:FIRST_PATHS],
                       "message": f"darknet could not load {len(missing)} image{'s' if len(missing) != 1 else ''} "
                                  f"({lines} error line{'s' if lines != 1 else ''} in the log), first {first}: "
                                  f"they were removed or are unreadable; restore them or drop them from the list."})
    avg = c["avg_loss"]
    if rising_k > 0 and len(avg) > rising_k:
        tail = avg[-rising_k - 1:]
        if all(a < b for a, b in zip(tail, tail[1:])):
            alerts.append({"kind": "rising", "iteration": c["iteration"][-1],
                           "message": f"avg loss rose for {rising_k} iterations in a row "
                                      f"({tail[0]:.4g} → {tail[-1]:.4g})."})
    return alerts


def alerts(log: ParsedLog, *, now: float, last_growth: float | None, process_alive: bool,
           max_batches: int | None, stall_seconds: float = 120, rising_k: int = RISING_K) -> list[dict]:
    """All alerts for a run: the log's own, a stall while the process lives, an early exit.

    Args:
        now: the current time (``time.time()``).
        last_growth: when the last new iteration was seen (None: none yet).
        process_alive: whether darknet still runs; False means it has ended.
        max_batches: the run's target (None: take the log's, if it printed one).
    """
    found = log_alerts(log, rising_k)
    last = log.last_iteration
    if process_alive and last_growth is not None and now - last_growth > stall_seconds:
        found.append({"kind": "stalled", "iteration": last,
                      "message": f"No new iteration for {now - last_growth:.0f} s while darknet runs."})
    target = max_batches or log.max_batches
    if not process_alive and target and (last or 0) < target:
        found.append({"kind": "early_exit", "iteration": last,
                      "message": f"darknet ended at iteration {last or 0} of {target}."})
    return found


def failure_reason(log: ParsedLog) -> str | None:
    """Why a run failed, read from its log (exit codes lie); None when the log shows no fatal error."""
    fatal = [e for e in log.errors if e["fatal"]]
    if not fatal:
        return None
    order = {kind: i for i, kind in enumerate(FATAL_KIND_ORDER)}
    return min(fatal, key=lambda e: (order.get(e["kind"], len(order)), e["line"] or 0))["message"]
