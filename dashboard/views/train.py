"""Train: configure a run, preflight it, start/stop/resume darknet, watch it live, compare runs.

The page never owns the training process: darknet_runner.jobs launches it detached and every
status shown here is read from the run folder, so reloads and server restarts lose nothing.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from darknet_runner import cfg, jobs, logs, preflight, rundir, weights
from darknet_runner.binary import DarknetNotFound, find_darknet
from dashboard import charts, trainview, ui
from pipeline.cli import UserError

LIVE_EVERY_S = 1.0
SIZES = list(range(128, 640, 32))
TAIL_LINES = 15
RUNNING = "running"


@st.cache_resource(show_spinner=False, max_entries=64)
def _follower(log_path: str) -> dict:
    """One incremental log reader per run, shared by all sessions (it only ever reads new bytes)."""
    return {"follower": logs.LogFollower(Path(log_path)), "lock": threading.Lock(), "grew": None}


def parsed_log(run_dir: Path):
    """The run's parsed log brought up to date, and when its last new iteration was seen (or None)."""
    entry = _follower(str(rundir.RunDir(run_dir).log))
    with entry["lock"]:
        if entry["follower"].refresh():
            entry["grew"] = time.time()
        return entry["follower"].log, entry["grew"]


# --- new run -------------------------------------------------------------------------------


def _darknet():
    """The darknet binary the user points at (or the one found), or None with the reason shown."""
    text = st.text_input("Darknet binary (empty: search $DARKNET, PATH, /usr/bin/darknet)", key="darknet_setting")
    if text.strip():
        ui.show_path("The darknet binary", text)
    try:
        info = find_darknet(text.strip() or None)
    except DarknetNotFound as err:
        st.error(f"Darknet not found: {ui.md_escape(str(err))}")
        return None
    st.caption(f"Using {info.fork} darknet at {info.path} "
               f"(-map {'supported' if info.supports_map else 'not supported by this fork'}).")
    return info


def _pretrained(model: str) -> str | None:
    names = [n for n, p in weights.PRETRAINED.items() if model in p.models]
    default = weights.DEFAULT_FOR_MODEL.get(model)
    options = ["none"] + sorted(names, key=lambda n: n != default)
    choice = st.selectbox("Pretrained weights", options, key=f"pretrained::{model}",
                          format_func=lambda n: "none (random initialisation)" if n == "none" else n)
    if choice == "none":
        return None
    target, spec = ws.weights_dir / choice, weights.PRETRAINED[choice]
    if target.is_file():
        st.caption(f"{choice} is present ({ui.human_bytes(target.stat().st_size)}).")
        return choice
    if spec.url is None:
        st.warning(f"{choice} has no direct download ({spec.note}); put it in {ui.md_escape(str(ws.weights_dir))}.")
    elif st.button(f"Download {choice} ({ui.human_bytes(spec.bytes)})", icon=":material/download:"):
        try:
            weights.download(choice, ws.weights_dir, progress=ui.progress_callback(f"Downloading {choice}"))
            st.rerun()
        except weights.WeightsError as err:
            st.error(ui.md_escape(str(err)))
    return None


def _new_run(slug: str) -> None:
    with st.expander("New run", expanded=not ws.runs(), icon=":material/add:"):
        left, mid, right = st.columns(3)
        model = left.selectbox("Model", cfg.MODELS, index=cfg.MODELS.index("yolov3-tiny"), key="tr_model")
        size = mid.select_slider("Network size", SIZES, value=416, key="tr_size")
        max_batches = right.number_input("Iterations (max_batches; 0 = AlexeyAB's rule)", min_value=0,
                                         value=0, step=100, key="tr_iters")
        left, mid, right = st.columns(3)
        batch = left.number_input("Batch", min_value=1, value=64, key="tr_batch")
        subdivisions = mid.number_input("Subdivisions", min_value=1, value=16, key="tr_subdiv")
        gpus = right.text_input("GPUs (e.g. 0,1; empty = CPU or GPU 0)", key="tr_gpus")
        pretrained = _pretrained(model)
        info = _darknet()
        left, right = st.columns(2)
        use_map = left.checkbox("Compute mAP during training (-map)", key="tr_map",
                                disabled=info is None or not info.supports_map)
        # Multi-scale training resizes up to 608 px: right on a GPU, very slow on pjreddie's CPU build.
        random = right.checkbox("Multi-scale training (random=1)", key="tr_random",
                                value=info is not None and info.fork != "pjreddie")
        settings = dict(model=model, size=int(size), batch=int(batch), subdivisions=int(subdivisions),
                        max_batches=int(max_batches) or None, pretrained=pretrained, darknet=info,
                        gpus=gpus.strip() or None, use_map=use_map, random=random)
        st.button("Create run", type="primary", disabled=info is None, icon=":material/add_circle:",
                  on_click=_create_run, args=(slug, settings))


def _create_run(slug: str, settings: dict) -> None:
    """Button callback (runs before the next script run, so the new run can be selected at once)."""
    try:
        run_dir = rundir.create_run(ws, slug, **settings)
    except (UserError, ValueError, FileExistsError) as err:
        ui.flash(f"Could not create the run: {err}")
        return
    st.session_state["run"] = run_dir.name


# --- one run -------------------------------------------------------------------------------


def _preflight_ok(run_dir: Path) -> bool:
    """Show the preflight result of a run that has not started; True when nothing blocks Start."""
    problems = preflight.check(run_dir)
    for problem in problems:
        st.error(f"Preflight ({problem.kind}): {ui.md_escape(problem.message)}")
    if not problems:
        st.success("Preflight passed: every listed image and label is where this darknet will look.")
    return not problems


def _controls(run_dir: Path, status) -> None:
    left, mid, right, extra = st.columns([1, 1, 1, 3])
    state = status.state
    can_start = state == "not-started" and _preflight_ok(run_dir)
    resumable = state not in (RUNNING, "not-started")
    target_key = f"resume_to::{run_dir.name}"
    if resumable:
        # A finished run only resumes towards a higher target; stopped or failed ones keep theirs.
        extra.number_input("Resume until iteration", min_value=1, value=int(status.max_batches or 1), step=100,
                           key=target_key)
    actions = [
        (left, "Start", ":material/play_arrow:", can_start, jobs.start),
        (mid, "Stop", ":material/stop:", state == RUNNING, jobs.stop),
        (right, "Resume", ":material/replay:", resumable, _resume),
    ]
    for column, label, icon, enabled, action in actions:
        column.button(label, icon=icon, disabled=not enabled, key=f"{label}::{run_dir.name}",
                      on_click=_act, args=(label, action, run_dir))


def _resume(run_dir: Path) -> None:
    target = st.session_state.get(f"resume_to::{run_dir.name}")
    current = rundir.RunDir(run_dir).load().get("max_batches")
    jobs.resume(run_dir, max_batches=int(target) if target and target != current else None)


def _act(label: str, action, run_dir: Path) -> None:
    """Button callback: start, stop or resume; a refusal is shown on the next run."""
    try:
        action(run_dir)
    except (UserError, OSError, ValueError) as err:
        ui.flash(f"{label} failed: {err}")


def _state_line(status) -> str:
    text = f"**{status.state}**"
    if status.reason:
        text += f" — {ui.md_escape(status.reason)}"
    return text


def _live_panel(run_dir: Path) -> None:
    """Everything that changes while darknet trains; redrawn alone every LIVE_EVERY_S seconds."""
    status = jobs.status(run_dir)
    seen_key = f"_seen_state::{run_dir.name}"
    if st.session_state.get(seen_key, status.state) != status.state:
        st.session_state[seen_key] = status.state
        st.rerun()  # a status change re-enables/disables buttons outside this fragment
    st.session_state[seen_key] = status.state
    log, grew = parsed_log(run_dir)
    frame = logs.iterations_frame(log)
    max_batches = status.max_batches
    stats = trainview.progress_stats(frame, max_batches)
    _progress(status, stats)
    if status.state != "not-started":
        for alert in logs.alerts(log, now=time.time(), last_growth=grew, process_alive=status.state == RUNNING,
                                 max_batches=max_batches):
            st.warning(ui.md_escape(alert["message"]))
    _charts(run_dir.name, frame, log)
    tail = trainview.log_tail(rundir.RunDir(run_dir).log, TAIL_LINES)
    with st.expander("Last lines of train_log.txt", expanded=status.state != RUNNING):
        st.code("\n".join(tail) if tail else ("(no log yet)" if tail is None else "(empty log)"), language=None)


def _progress(status, stats: dict) -> None:
    st.markdown(f"Status: {_state_line(status)}", help="Read from the run folder (pid, exit_code, log).")
    it = stats["iteration"]
    st.progress(stats["fraction"], text=f"iteration {it if it is not None else '—'} / {stats['max_batches']}")
    cols = st.columns(3)
    cols[0].metric("ETA", trainview.format_duration(stats["eta_seconds"]))
    speed = stats["images_per_second"]
    cols[1].metric("Images / s", f"{speed:.1f}" if speed else "—")
    spi = stats["seconds_per_iteration"]
    cols[2].metric("Seconds / iteration", f"{spi:.2f}" if spi else "—")


def _charts(run_id: str, frame: pd.DataFrame, log) -> None:
    if frame.empty:
        st.info("No iteration logged yet (darknet loads the network and data first).")
        return
    st.caption(f"Loss chart: {len(frame)} points")
    st.plotly_chart(charts.loss_figure(frame), key=f"loss::{run_id}", width="stretch")
    layers = logs.layers_frame(log).dropna(subset=["iteration", "layer"])
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.per_layer_figure(layers, "iou", "IoU per [yolo] layer", "iou"),
                        key=f"iou::{run_id}", width="stretch")
        st.plotly_chart(charts.rate_figure(frame), key=f"rate::{run_id}", width="stretch")
    with right:
        st.plotly_chart(charts.per_layer_figure(layers, "r50", "Recall (.5R) per [yolo] layer", "recall"),
                        key=f"recall::{run_id}", width="stretch")
        points = pd.DataFrame(log.map)
        if points.empty:
            st.caption("No mAP computed during this run (pjreddie never does; others need -map).")
        else:
            st.plotly_chart(charts.map_figure(points), key=f"map::{run_id}", width="stretch")


def _run_panel(run_id: str) -> None:
    run_dir = ws.run_dir(run_id)
    info = rundir.RunDir(run_dir).load()
    st.header(f"Run {run_id}")
    dataset = info.get("dataset", {})
    st.caption(f"{info.get('model')} {info.get('size')}×{info.get('size')}, batch {info.get('batch')}/"
               f"{info.get('subdivisions')}, {info.get('max_batches')} iterations, dataset "
               f"{dataset.get('slug') if isinstance(dataset, dict) else dataset}, {info.get('fork')} darknet.")
    status = jobs.status(run_dir)
    _controls(run_dir, status)
    every = LIVE_EVERY_S if status.state == RUNNING else None
    st.fragment(_live_panel, run_every=every)(run_dir)


# --- all runs --------------------------------------------------------------------------------


def _runs_table() -> None:
    runs = ws.runs()
    if not runs:
        return
    st.header("Runs")
    rows, frames = [], {}
    for run_id in runs:
        status = jobs.status(ws.run_dir(run_id))
        log, _ = parsed_log(ws.run_dir(run_id))
        frame = logs.iterations_frame(log)
        frames[run_id] = frame
        rows.append({"run": run_id, "state": status.state, "iteration": status.iteration,
                     "max_batches": status.max_batches,
                     "avg loss": float(frame["avg_loss"].iloc[-1]) if not frame.empty else None})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    chosen = st.multiselect("Compare avg loss of", runs, key="compare_runs")
    if chosen:
        st.plotly_chart(charts.compare_figure({r: frames[r] for r in chosen if not frames[r].empty}),
                        key="compare", width="stretch")


ws = ui.workspace()
st.title("Train")
ui.show_flash()
slug = ui.current_dataset()
if slug:
    _new_run(slug)
else:
    st.info("No dataset yet: build, prepare and split one before training.")
run_id = ui.current_run()
if run_id:
    _run_panel(run_id)
_runs_table()
