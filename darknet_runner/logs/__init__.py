"""darknet's training log, parsed incrementally for every fork (pjreddie, AlexeyAB, hank-ai).

The log is ``stdbuf -oL -eL darknet … 2>&1`` written to ``train_log.txt`` (facts/darknet.md §1–7,
§10). One module per idea, dependencies pointing down the list:

- :mod:`.patterns`: what darknet prints, as data (regexes, markers, error rules, messages, ANSI).
- :mod:`.records`: :class:`ParsedLog`, the records kept as typed columns.
- :mod:`.parser`: :class:`LogParser`, pure and incremental (bytes in, records out).
- :mod:`.follower`: files: :class:`LogFollower` (new bytes only), :func:`parse_file`, :func:`parse_tail`.
- :mod:`.alerts`: what a parsed log means (alerts, the failure reason).
- :mod:`.frames`: pandas DataFrames for charts.
- :mod:`.command`: the ``parse-log`` CLI command and its JSON object (:func:`as_json`).

Callers import from this package (``from darknet_runner import logs`` or
``from darknet_runner.logs import LogFollower``), not from its modules.
"""
from darknet_runner.logs.alerts import alerts, failure_reason, log_alerts
from darknet_runner.logs.command import as_json
from darknet_runner.logs.follower import LogFollower, parse_file, parse_tail
from darknet_runner.logs.frames import iterations_frame, layers_frame, resume_points
from darknet_runner.logs.parser import LogParser
from darknet_runner.logs.patterns import strip_ansi
from darknet_runner.logs.records import ParsedLog

__all__ = ["LogFollower", "LogParser", "ParsedLog", "alerts", "as_json", "failure_reason", "iterations_frame",
           "layers_frame", "log_alerts", "parse_file", "parse_tail", "resume_points", "strip_ansi"]
