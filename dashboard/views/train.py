"""Train: a run from a preset (every value visible before Create), preflight, start/stop/resume
darknet, the live panel, and all runs.

The page never owns the training process: darknet_runner.jobs launches it detached and every
status shown here is read from the run folder, so reloads and server restarts lose nothing.

Top to bottom: the selected run's header and Start/Stop/Resume, the live panel (one fragment:
status, progress, ETA, alerts, charts, log tail and the Runs table), then the New run form. Nothing
above the buttons changes size while a run is created or trains, so a click never lands on a
button that is moving (an animated expander above them once made Chromium's clicks miss).
"""
from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import pandas as pd
import streamlit as st

from darknet_runner import cfg, jobs, logs, preflight, presets, weights
from darknet_runner.binary import PJREDDIE, DarknetNotFound, find_darknet
from darknet_runner.pretrained import ensure_pretrained
from darknet_runner.rundir import RunDir, create_run
from dashboard import charts, trainview, ui
from pipeline.cli import UserError

LIVE_EVERY_S = 1.0     # how often the live panel looks at the run files (a few stat calls)
REDRAW_EVERY_S = 15    # a running run is redrawn at least this often (stall alerts count seconds)
CHART_EVERY_S = 5      # a running run's charts are built again at most this often
SIZES = list(range(32, 1024 + 32, 32))
TAIL_LINES = 20
RUNNING = "running"
# Command-line hints in library sentences, in this page's words.
GET_WORDS = {"run: python -m darknet_runner weights download yolov3-tiny.conv.15": "press Get again",
             "weights download NAME": "the Get button of the New run form"}
PRESET_HELP = {
    "quick": "for a CPU: values that train a detector within the time budget, at the size the dataset was "
             "prepared at",
    "gpu": "AlexeyAB's rules for a GPU: 416 px, batch 64/16, max(2000 × classes, images, 6000) iterations, "
           "multi-scale training",
    "custom": "the plain cfg rules; every value is yours",
}


# --- caches (shared by every session of this server) ----------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=64)
def _run_log(log_path: str, offsets: tuple[int, ...]) -> dict:
    """One reader per run log and segment layout: ended segments parsed once, the current one followed."""
    return {"log": trainview.RunLog(log_path, offsets), "lock": threading.Lock(), "grew": None}


@st.cache_resource(show_spinner=False, max_entries=128)
def _run_data(run_dir: str, stamp: tuple) -> dict:
    """Everything the page shows about one run, read once per :func:`trainview.run_stamp`."""
    run = RunDir(run_dir)
    try:
        manifest = run.load()
    except (UserError, ValueError, OSError) as err:
        return {"error": str(err)}
    entry = _run_log(str(run.log), trainview.segment_offsets(manifest))
    with entry["lock"]:  # frames copy the log's columns: no other session may append meanwhile
        runlog = entry["log"]
        if runlog.refresh():
            entry["grew"] = time.time()
        status = jobs.status(run.path, log=runlog.current)
        frame = logs.iterations_frame(runlog.segments)
        layers = logs.layers_frame(runlog.segments).dropna(subset=["iteration", "layer"])
        alerts = [] if status.state == "not-started" else logs.alerts(
            runlog.current, now=time.time(), last_growth=entry["grew"], process_alive=status.state == RUNNING,
            max_batches=status.max_batches)
        data = {"manifest": manifest, "status": status, "frame": frame, "layers": layers,
                "resumes": logs.resume_points(runlog.segments), "map": pd.DataFrame(runlog.current.map),
                "last": trainview.last_record(runlog.segments), "alerts": alerts}
    data["tail"] = trainview.log_tail(run.log, TAIL_LINES)
    data["stats"] = trainview.progress_stats(frame, status.max_batches, running=status.state == RUNNING)
    return data


def _data(run_id: str) -> dict:
    run_dir = ws.run_dir(run_id)
    stamp = trainview.run_stamp(run_dir)
    if stamp[-1]:  # the runner lives: redraw now and then even when the log is quiet
        stamp += (int(time.time() // REDRAW_EVERY_S),)
    return _run_data(str(run_dir), stamp)


@st.cache_resource(show_spinner=False, max_entries=64)
def _chart_slot(run_dir: str) -> dict:
    """The charts last built for a run (shared by every session): key, build time, figures, points."""
    return {"key": None, "built": 0.0, "figures": None, "points": 0, "lock": threading.Lock()}


def _figures(run_dir: str, data: dict) -> tuple[dict, int]:
    """The charts of a run and the points the loss chart holds. Built again when an iteration (or mAP
    point) was added, at most every CHART_EVERY_S while the run trains: building the figures is most
    of a tick's cost, and an unchanged figure is sent to the browser as a reference to the one it has."""
    frame, layers = data["frame"], data["layers"]
    key = (len(frame), len(layers), len(data["map"]), tuple(data["resumes"]))
    slot = _chart_slot(run_dir)
    with slot["lock"]:
        fresh = slot["key"] == key or (data["status"].state == RUNNING and slot["figures"] is not None
                                       and time.monotonic() - slot["built"] < CHART_EVERY_S)
        if not fresh:
            figures = {"loss": charts.loss_figure(frame, resumes=data["resumes"]),
                       "iou": charts.per_layer_figure(layers, "iou", "IoU per [yolo] layer", "iou"),
                       "recall": charts.per_layer_figure(layers, "r50", "Recall (.5R) per [yolo] layer", "recall"),
                       "rate": charts.rate_figure(frame)}
            if not data["map"].empty:
                figures["map"] = charts.map_figure(data["map"])
            slot.update(key=key, built=time.monotonic(), figures=figures, points=len(frame))
        return slot["figures"], slot["points"]


@st.cache_data(show_spinner=False, max_entries=16)
def _default_preset(path: str, _mtime_ns: int) -> str:
    return presets.default_preset(find_darknet(path))


@st.cache_data(show_spinner=False, ttl=600, max_entries=64)
def _base(root: str, slug: str, preset: str, minutes: float, model: str, info, _stamp: tuple):
    return presets.make_preset(preset, ws, slug, info, minutes=minutes, model=model)


@st.cache_data(show_spinner=False, ttl=600, max_entries=256)
def _resolve(root: str, slug: str, preset: str, minutes: float, info, overrides: tuple, _stamp: tuple):
    return presets.resolve_settings(ws, slug, info, preset, minutes=minutes, **dict(overrides))


@st.cache_data(show_spinner=False, ttl=600, max_entries=64)
def _estimate(root: str, settings, info, train_images: int, _stamp: tuple) -> tuple[float, float]:
    """(seconds, seconds per iteration) of ``settings`` on this machine."""
    return (presets.estimate_seconds(settings, ws, info, train_images=train_images),
            presets.seconds_per_iteration(settings, ws, info))


# --- the selected run ------------------------------------------------------------------------------


def _show_preflight(problems: list) -> None:
    """The preflight result of a run that has not started (below the buttons: Start waits for it)."""
    for problem in problems:
        st.error(f"Preflight ({problem.kind}): {ui.md_escape(ui.in_page_words(problem.message, GET_WORDS))}")
    if not problems:
        st.success("Preflight passed: every listed image and label is where this darknet will look.")


def _controls(run_dir: Path, status) -> None:
    left, mid, right, extra = st.columns([1, 1, 1, 3], vertical_alignment="bottom")
    state = status.state
    problems = preflight.check(run_dir) if state == "not-started" else []
    resumable = state not in (RUNNING, "not-started")
    if resumable:
        # A finished run only resumes towards a higher target; stopped or failed ones keep theirs.
        extra.number_input("Resume until iteration", min_value=1, value=int(status.max_batches or 1), step=100,
                           key=f"resume_to::{run_dir.name}")
    buttons = [
        (left, "Start", ":material/play_arrow:", state == "not-started" and not problems, jobs.start),
        (mid, "Stop", ":material/stop:", state == RUNNING, jobs.stop),
        (right, "Resume", ":material/replay:", resumable, _resume),
    ]
    for column, label, icon, enabled, action in buttons:
        column.button(label, icon=icon, disabled=not enabled, key=f"{label}::{run_dir.name}",
                      on_click=_act, args=(label, action, run_dir))
    ui.show_flash()
    if state == "not-started":
        _show_preflight(problems)


def _resume(run_dir: Path) -> None:
    target = st.session_state.get(f"resume_to::{run_dir.name}")
    current = RunDir(run_dir).load().get("max_batches")
    jobs.resume(run_dir, max_batches=int(target) if target and target != current else None)


def _act(label: str, action, run_dir: Path) -> None:
    """Button callback: start, stop or resume; a refusal is shown on the next run."""
    try:
        action(run_dir)
    except (UserError, OSError, ValueError) as err:
        ui.flash(f"{label} failed: {err}")


def _describe(manifest: dict) -> str:
    dataset = manifest.get("dataset")
    slug = dataset.get("slug") if isinstance(dataset, dict) else dataset
    pretrained = Path(manifest["pretrained"]).name if manifest.get("pretrained") else "no pretrained weights"
    preset = f"{manifest['preset']} preset, " if manifest.get("preset") else ""
    return (f"{preset}{manifest.get('model')} {manifest.get('size')}×{manifest.get('size')}, batch "
            f"{manifest.get('batch')}/{manifest.get('subdivisions')}, {manifest.get('max_batches')} iterations, "
            f"{pretrained}, dataset {slug}, {manifest.get('fork')} darknet.")


def _run_panel(run_id: str, data: dict) -> None:
    st.header(f"Run {run_id}")
    if "error" in data:
        st.error(ui.md_escape(data["error"]))
        return
    st.caption(ui.md_escape(_describe(data["manifest"])))
    if RunDir(ws.run_dir(run_id)).is_baseline:
        st.info("This run is a ready-made detector, not a training: judge it on the Evaluate page.")
        return
    _controls(ws.run_dir(run_id), data["status"])
    st.session_state[f"_drawn_state::{run_id}"] = data["status"].state


# --- the live panel (one fragment) -----------------------------------------------------------------


def _live(run_id: str | None) -> None:
    """Status, progress, charts, log tail and the Runs table, all from the same reading of the files.

    Reruns every LIVE_EVERY_S while a run trains; each rerun costs a few ``stat`` calls unless a
    file changed. A state change (running → finished) reruns the whole page so the buttons follow.
    """
    runs = ws.runs()
    data = {r: _data(r) for r in runs}
    any_running = any("status" in d and d["status"].state == RUNNING for d in data.values())
    if run_id in data and "status" in data[run_id]:
        state = data[run_id]["status"].state
        drawn = f"_drawn_state::{run_id}"
        if st.session_state.get(drawn, state) != state or st.session_state.get("_drawn_running", any_running) != any_running:
            st.session_state[drawn], st.session_state["_drawn_running"] = state, any_running
            st.rerun()  # the buttons outside this fragment (and its timer) follow the new state
        _run_live(run_id, data[run_id])
    st.session_state["_drawn_running"] = any_running
    _runs_table(runs, data)


def _run_live(run_id: str, data: dict) -> None:
    status, stats = data["status"], data["stats"]
    text = f"**{status.state}**" + (f" — {ui.md_escape(status.reason)}" if status.reason else "")
    st.markdown(f"Status: {text}", help="Read from the run folder (pid, exit_code, log).")
    it = stats["iteration"]
    st.progress(stats["fraction"], text=f"iteration {it if it is not None else '—'} / {stats['max_batches']}")
    cols = st.columns(3)
    cols[0].metric("ETA", trainview.format_duration(stats["eta_seconds"]) if status.state == RUNNING else "—")
    speed, spi = stats["images_per_second"], stats["seconds_per_iteration"]
    cols[1].metric("Images / s", f"{speed:.1f}" if speed else "—")
    cols[2].metric("Seconds / iteration", f"{spi:.2f}" if spi else "—")
    for alert in data["alerts"]:
        st.warning(ui.md_escape(alert["message"]))
    _charts(run_id, data)
    st.caption("Last lines of train_log.txt")
    tail = data["tail"]
    st.code("\n".join(tail) if tail else ("(no log yet)" if tail is None else "(empty log)"), language=None,
            wrap_lines=True)


def _charts(run_id: str, data: dict) -> None:
    frame = data["frame"]
    if frame.empty:
        st.info("No iteration logged yet (darknet loads the network and data first).")
        return
    figures, points = _figures(str(ws.run_dir(run_id)), data)
    resumed = f"; resumed at {', '.join(map(str, data['resumes']))}" if data["resumes"] else ""
    st.caption(f"Loss chart: {points} points{resumed}")
    config = {"displaylogo": False}
    st.plotly_chart(figures["loss"], key=f"loss::{run_id}", width="stretch", config=config)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures["iou"], key=f"iou::{run_id}", width="stretch", config=config)
        st.plotly_chart(figures["rate"], key=f"rate::{run_id}", width="stretch", config=config)
    with right:
        st.plotly_chart(figures["recall"], key=f"recall::{run_id}", width="stretch", config=config)
        if "map" in figures:
            st.plotly_chart(figures["map"], key=f"map::{run_id}", width="stretch", config=config)
        else:
            st.caption("No mAP computed during this run (pjreddie never does; others need -map).")


def _runs_table(runs: list[str], data: dict) -> None:
    if not runs:
        return
    st.subheader("Runs")
    rows = []
    for run_id in runs:
        d = data[run_id]
        if "status" not in d:
            rows.append({"run": run_id, "state": "unreadable"})
            continue
        last = d["last"]
        rows.append({"run": run_id, "state": d["status"].state, "iteration": last["iteration"] if last else None,
                     "max_batches": d["status"].max_batches, "avg loss": last["avg_loss"] if last else None,
                     "preset": d["manifest"].get("preset"), "model": d["manifest"].get("model")})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    chosen = st.multiselect("Compare avg loss of", runs, key="compare_runs")
    frames = {r: data[r]["frame"] for r in chosen if "frame" in data[r] and not data[r]["frame"].empty}
    if frames:
        st.plotly_chart(charts.compare_figure(frames), key="compare", width="stretch", config={"displaylogo": False})


# --- New run ---------------------------------------------------------------------------------------


def _darknet():
    """The darknet binary the user points at (or the one found), or None with the reason shown.

    A typed path is run (``darknet version``) only when the user presses Check, never per keystroke.
    """
    left, right = st.columns([5, 1], vertical_alignment="bottom")
    text = left.text_input("Darknet binary (empty: search $DARKNET, PATH, /usr/bin/darknet)",
                           key="darknet_setting").strip()
    if right.button("Check", key="darknet_check", width="stretch"):
        st.session_state["_darknet_checked"] = text
    if text:
        ui.show_path("The darknet binary", text)
        if st.session_state.get("_darknet_checked") != text:
            st.info("Press Check to identify this darknet binary (it is run once, with `version`).")
            return None
    try:
        info = find_darknet(text or None)
    except DarknetNotFound as err:
        st.error(f"Darknet not found: {ui.md_escape(str(err))}")
        return None
    st.caption(f"Using {info.fork} darknet at {ui.md_escape(info.path)} "
               f"(-map {'supported' if info.supports_map else 'not supported by this fork'}).")
    return info


def _new_run(slug: str, expanded: bool) -> None:
    with st.expander("New run", expanded=expanded, icon=":material/add:"):
        info = _darknet()
        if info is None:
            st.button("Create run", type="primary", disabled=True, icon=":material/add_circle:")
            return
        try:
            _form(slug, info)
        except UserError as err:  # a dataset that is not prepared or split: nothing to fill in yet
            st.error(f"No run can be made from dataset {ui.md_escape(slug)} yet: {ui.md_escape(str(err))}")


def _form(slug: str, info) -> None:
    """The preset, then every value it fills in (editable), the estimate, and Create run."""
    dataset = ws.dataset(slug)
    stamp = (ui.mtime_ns(dataset.manifest_path), ui.mtime_ns(dataset.split_list("train")), tuple(ws.runs()))
    default = _default_preset(info.path, ui.mtime_ns(Path(info.path)))
    preset = st.radio("Preset", presets.PRESETS, index=presets.PRESETS.index(default), horizontal=True,
                      key=f"tr_preset::{slug}::{default}", captions=None,
                      help="quick: " + PRESET_HELP["quick"] + ". gpu: " + PRESET_HELP["gpu"] + ". custom: "
                           + PRESET_HELP["custom"] + ".")
    st.caption(f"{preset}: {PRESET_HELP[preset]}.")
    minutes = presets.QUICK_MINUTES
    if preset == "quick":
        minutes = float(st.number_input("Time budget (minutes)", min_value=1.0, max_value=24 * 60.0,
                                        value=presets.QUICK_MINUTES, step=1.0, key=f"tr_minutes::{slug}"))
    left, mid, right = st.columns(3)
    model = left.selectbox("Model", cfg.MODELS, index=cfg.MODELS.index("yolov3-tiny"), key=f"tr_model::{slug}::{preset}")
    base = _base(str(ws.root), slug, preset, minutes, model, info, stamp)
    for note in base.notes:
        if " iterations ≈ " not in note:  # the estimate below says that, for the values as edited
            st.caption(f"{preset} preset: {ui.md_escape(note)}.")
    values = _fields(base, preset, model, slug, minutes, info, dataset, (left, mid, right), stamp)
    _finish(slug, preset, minutes, info, values, dataset, stamp)


def _fields(base, preset: str, model: str, slug: str, minutes: float, info, dataset, columns, stamp) -> dict:
    """The editable values, filled from ``base`` and keyed by preset, dataset and model (a new preset
    fills them again; the quick preset's iterations follow its time budget). The warm-up and the
    anchors are filled from what the preset makes of the other values (a tenth of the iterations,
    k-means at the chosen size) and follow them until edited."""
    left, mid, right = columns
    sig = f"{slug}::{preset}::{model}::{base.size}"
    sizes = sorted(set(SIZES) | {base.size})
    size = mid.select_slider("Network size", sizes, value=base.size, key=f"tr_size::{sig}")
    iterations = right.number_input("Iterations (max_batches; 0 = AlexeyAB's rule)", min_value=0,
                                    value=int(base.max_batches or 0), step=100, key=f"tr_iters::{sig}::{minutes:g}")
    left, mid, right = st.columns(3)
    batch = left.number_input("Batch", min_value=1, value=base.batch, key=f"tr_batch::{sig}")
    subdivisions = mid.number_input("Subdivisions", min_value=1, value=base.subdivisions, key=f"tr_subdiv::{sig}")
    stock_rate = float(cfg.LEARNING_RATE[model])
    rate = right.number_input("Learning rate", min_value=0.0, value=float(base.learning_rate or stock_rate),
                              step=0.0005, format="%.5f", key=f"tr_rate::{sig}")
    with st.expander("Advanced", icon=":material/settings:"):
        left, mid, right = st.columns(3)
        width = left.number_input("Width multiplier (1 = stock filters)", value=float(base.width), step=0.25,
                                  format="%.2f", key=f"tr_width::{sig}")
        first = mid.number_input("Learning rate ×0.1 at (fraction)", value=float(base.steps[0]), step=0.05,
                                 format="%.2f", key=f"tr_step1::{sig}")
        second = right.number_input("and again at (fraction)", value=float(base.steps[1]), step=0.05,
                                    format="%.2f", key=f"tr_step2::{sig}")
        left, mid, right = st.columns(3)
        pretrained = _pretrained_choice(left, model, base.pretrained if model == base.model else None, sig)
        random_default = base.random if base.random is not None else info.fork != PJREDDIE
        random = mid.checkbox("Multi-scale training (random=1)", value=bool(random_default), key=f"tr_random::{sig}",
                              help="Resizes the network up to 608 px: right on a GPU, very slow on a CPU.")
        use_map = right.checkbox("Compute mAP during training (-map)", value=bool(base.use_map) and info.supports_map,
                                 disabled=not info.supports_map, key=f"tr_map::{sig}")
        values = {"model": model, "size": int(size), "batch": int(batch), "subdivisions": int(subdivisions),
                  "max_batches": int(iterations) or None, "learning_rate": float(rate),
                  "steps": (float(first), float(second)), "width": float(width), "random": bool(random),
                  "pretrained": pretrained, "use_map": bool(use_map)}
        follow = _follow(slug, preset, minutes, info, values, stamp) or base
        effective = int(iterations) or cfg.default_max_batches(len(dataset.class_names()),
                                                               len(dataset.split_lines("train")))
        burn_default = follow.burn_in if follow.burn_in is not None else cfg.default_burn_in(effective)
        left, right = st.columns([1, 2])
        values["burn_in"] = int(left.number_input("Warm-up iterations (burn_in)", min_value=0, value=int(burn_default),
                                                  key=f"tr_burn::{sig}::{burn_default}"))
        anchors_default = trainview.format_anchors(follow.anchors)
        values["anchors"] = right.text_input("Anchors (width,height pairs in network pixels, or stock)",
                                             value=anchors_default,
                                             key=f"tr_anchors::{sig}::{zlib.crc32(anchors_default.encode())}")
        st.caption(f"Default anchors: k-means of this dataset's boxes at {follow.size} px." if follow.anchors
                   else "Default anchors: the model's stock anchors.")
        values["gpus"] = st.text_input("GPUs (e.g. 0,1; empty = CPU or GPU 0)", key="tr_gpus").strip() or None
    return values


def _follow(slug: str, preset: str, minutes: float, info, values: dict, stamp: tuple):
    """What the preset makes of ``values`` (warm-up and anchors left to it), or None when they do not validate."""
    try:
        return _resolve(str(ws.root), slug, preset, minutes, info, tuple(sorted(values.items())), stamp)
    except UserError:
        return None


def _pretrained_choice(column, model: str, default: str | None, sig: str) -> str:
    names = [n for n, p in weights.PRETRAINED.items() if model in p.models]
    options = ["none"] + sorted(names, key=lambda n: (n != default, n))
    return column.selectbox("Pretrained weights", options, index=options.index(default) if default in options else 0,
                            key=f"tr_pretrained::{sig}",
                            format_func=lambda n: "none (random initialisation)" if n == "none" else n)


def _finish(slug: str, preset: str, minutes: float, info, values: dict, dataset, stamp: tuple) -> None:
    """Validate (one sentence), show the estimate and the pretrained file, and the Create run button."""
    gpus = values.pop("gpus")
    settings, problem = None, None
    try:
        values["anchors"] = trainview.parse_anchors(values["anchors"])
        settings = _resolve(str(ws.root), slug, preset, minutes, info, tuple(sorted(values.items())), stamp)
    except UserError as err:
        problem = str(err)
    if settings is None:
        st.error(f"Cannot create this run: {ui.md_escape(problem)}")
    else:
        train_images = len(dataset.split_lines("train"))
        seconds, per_iteration = _estimate(str(ws.root), settings, info, train_images, stamp)
        iterations = settings.max_batches or cfg.default_max_batches(len(dataset.class_names()), train_images)
        st.markdown(f"**Estimated duration: {trainview.format_duration(seconds)}** "
                    f"({iterations} iterations × {per_iteration:.2f} s/iteration on this machine)")
        _pretrained_status(settings.pretrained, info)
    if st.button("Create run", type="primary", disabled=settings is None, icon=":material/add_circle:",
                 key="create_run"):
        _create(slug, settings, info, gpus)


def _pretrained_status(name: str | None, info) -> None:
    """Say whether the pretrained file is here; offer to get it when it is not."""
    if not name:
        return
    if presets.pretrained_ready(ws, name):
        st.caption(f"{name} is in the workspace's weights folder.")
        return
    source = trainview.pretrained_source(name)
    if source is None:
        note = weights.PRETRAINED[name].note if name in weights.PRETRAINED else "not a known file"
        st.warning(f"{name} is not in {ui.md_escape(str(ws.weights_dir))} and cannot be fetched here "
                   f"({ui.md_escape(note)}): put it there, or choose other pretrained weights under Advanced.")
        return
    st.warning(f"{name} is not in the workspace yet: get it now, or Create run gets it first.")
    if st.button(f"Get {name} ({source})", icon=":material/download:", key=f"get::{name}") \
            and _get_pretrained(name, source, info):
        st.rerun()


def _get_pretrained(name: str, source: str, info) -> bool:
    """Run ``ensure_pretrained`` (as the ``train`` command does) with a status panel; True when it is here."""
    with st.status(f"Getting {name} ({source})…", expanded=True) as box:
        try:
            ensure_pretrained(ws, name, progress=ui.progress_callback(f"Getting {name}"), darknet=info.path)
        except (UserError, OSError) as err:
            ui.failed(box, f"Could not get {name}", f"Could not get {name}: {err}", GET_WORDS)
            return False
        box.update(label=f"{name} is ready", state="complete", expanded=False)
    return True


def _create(slug: str, settings, info, gpus: str | None) -> None:
    """Create the run (getting its pretrained file first, like ``train``) and select it."""
    if settings is None:  # the values did not validate: the button was disabled
        return
    name = settings.pretrained
    if name and not presets.pretrained_ready(ws, name):
        source = trainview.pretrained_source(name)
        if source is None or not _get_pretrained(name, source, info):
            return
    try:
        run_dir = create_run(ws, slug, model=settings.model, pretrained=name, darknet=info, gpus=gpus,
                             use_map=settings.use_map, preset=settings.preset, **settings.cfg_options())
    except (UserError, ValueError, FileExistsError) as err:
        st.error(f"Could not create the run: {ui.md_escape(str(err))}")
        return
    ui.select("run", Path(run_dir).name)
    st.rerun()


ws = ui.workspace()
st.title("Train")
slug = ui.current_dataset()
run_ids = ws.runs()
run_id = ui.current_run() if run_ids else None
if run_id in run_ids:
    _run_panel(run_id, _data(run_id))
else:
    ui.show_flash()
if run_ids:
    running = any(d.get("status") and d["status"].state == RUNNING for d in map(_data, run_ids))
    st.session_state["_drawn_running"] = running
    st.fragment(_live, run_every=LIVE_EVERY_S if running else None)(run_id)
if slug:
    _new_run(slug, expanded=not run_ids)
else:
    st.info("No dataset yet: build, prepare and split one before training.")
