"""Home: what the workspace holds, what is ready, and the next step to take."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from darknet_runner import binary
from dashboard import journey, ui
from pipeline.images import stores

DARKNET_HELP = (
    "Install Debian's package (`sudo apt-get install darknet`, pjreddie's CPU build) or build "
    "AlexeyAB's / hank-ai's fork with GPU support and point the Train page at its binary."
)


def _demo_notice(ws) -> None:
    if ws.is_demo:
        st.info(
            "**DEMO workspace.** This workspace holds a small, synthetic Open Images–format data set "
            "(procedural boat scenes, real class names and MIDs) written by `python -m pipeline demo`. "
            "Everything works offline on it; point `STUDIO_WORKSPACE` at a real workspace for real data.",
            icon=":material/science:",
        )


def _tools_column() -> None:
    st.subheader("Darknet")
    try:
        info = binary.find_darknet(st.session_state.get("darknet_setting") or None)
        st.success(f"Found **{info.fork}** darknet.")
        st.code(str(info.path), language=None)
    except binary.DarknetNotFound as err:
        st.warning(f"Darknet not found: {ui.md_escape(str(err))}")
        st.markdown(DARKNET_HELP)
    st.subheader("Google Cloud Storage")
    st.markdown(stores.credential_status())


def _datasets_table(ws) -> None:
    st.subheader("Datasets")
    rows = []
    for slug in ws.datasets():
        meta = ui.manifest(ws, slug)
        stages = journey.stage_labels(ws, slug)  # "trained" means weights saved, not "a run exists"
        counts = meta.get("counts", {})
        rows.append({
            "dataset": slug,
            "classes": ", ".join(c.get("name", "") for c in meta.get("classes", [])),
            "images": sum(int(c.get("images", 0)) for c in counts.values()),
            "boxes": sum(int(c.get("boxes", 0)) for c in counts.values()),
            **{stage: label for stage, label in stages.items() if stage != "built"},
        })
    if rows:  # a plain table: a handful of rows, and its text is what a reader (or a test) reads
        st.table(pd.DataFrame(rows).set_index("dataset"))
    else:
        st.caption("No dataset yet.")


def _runs_table(ws) -> None:
    st.subheader("Runs")
    rows = []
    for run_id in journey.training_runs(ws):  # zero-shot baselines are not trained runs
        progress = journey.run_progress(ws, run_id)
        rows.append({"run": run_id, "status": progress.state,
                     "iteration": f"{progress.iteration or 0}/{progress.max_batches or '?'}",
                     "saved weights": "none yet" if not progress.has_weights else f"iteration {progress.weights_iteration}"})
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    else:
        st.caption("No training run yet.")


ws = ui.workspace()
st.title("Open Images → Darknet studio")
_demo_notice(ws)
step = journey.next_step(ws, ui.current_dataset())
st.markdown(f"**Next step:** {step.message}")
if step.page:
    st.page_link(f"views/{step.page.lower()}.py", label=f"Go to {step.page}", icon=":material/arrow_forward:")

left, right = st.columns([2, 1])
with left:
    st.subheader("Metadata")
    missing = journey.missing_metadata(ws)
    present = len(journey.METADATA_FILES) - len(missing)
    st.write(f"{present} of {len(journey.METADATA_FILES)} official files present in the metadata folder.")
    if missing:
        st.warning("Missing: " + ", ".join(missing))
    _datasets_table(ws)
    _runs_table(ws)
with right:
    _tools_column()
