"""Plotly figures for the Train and Evaluate pages (pure: frames in, figures out).

Every live figure has a fixed ``uirevision`` so a user's zoom survives the fragment's redraws.
SVG traces (``go.Scatter``), not WebGL: headless and GPU-less browsers draw them too.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from pipeline.images.draw import OKABE_ITO

MAX_POINTS = 2000  # a line with more points is thinned for drawing: the browser gets a bounded figure
HEIGHT = 320
LEGEND_HEIGHT = 30  # room under the x axis for a one-line legend
LINE = {"loss": "rgba(86,180,233,0.45)", "avg_loss": "rgb(0,114,178)", "rate": "rgb(204,121,167)",
        "resume": "rgb(213,94,0)"}


def css(rgb: tuple[int, int, int]) -> str:
    """(230, 159, 0) → "rgb(230,159,0)" (plotly wants CSS colours)."""
    return "rgb({},{},{})".format(*rgb)


PALETTE = [css(c) for c in list(OKABE_ITO.values())[1:]]  # black left out


def _layout(fig: go.Figure, title: str, x: str, y: str, revision: str) -> go.Figure:
    # The legend goes under the plot: at the top right, plotly's toolbar (shown on hover) covered it.
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=HEIGHT, uirevision=revision,
                      margin=dict(l=50, r=20, t=40, b=40),
                      legend=dict(orientation="h", x=0, xanchor="left", y=-0.3, yanchor="top"))
    if len(fig.data) > 1:
        fig.update_layout(height=HEIGHT + LEGEND_HEIGHT, margin=dict(b=40 + LEGEND_HEIGHT))
    return fig


def thin(frame: pd.DataFrame, max_points: int | None = None) -> pd.DataFrame:
    """Every k-th row so at most ``max_points`` (default ``MAX_POINTS``) remain, the last row kept."""
    max_points = max_points or MAX_POINTS
    if len(frame) <= max_points:
        return frame
    step = -(-len(frame) // max_points)
    keep = frame.iloc[::step]
    return keep if keep.index[-1] == frame.index[-1] else pd.concat([keep, frame.iloc[[-1]]])


def loss_figure(iterations: pd.DataFrame, revision: str = "loss", resumes: list[int] | tuple = ()) -> go.Figure:
    """Loss (thin, light) and avg loss (bold) against iteration, a dashed vertical line where training
    resumed (``resumes``: first iterations of the later segments, see ``logs.resume_points``)."""
    fig = go.Figure()
    rows = thin(iterations)
    fig.add_trace(go.Scatter(x=rows["iteration"], y=rows["loss"], name="loss", mode="lines",
                             line=dict(color=LINE["loss"], width=1)))
    fig.add_trace(go.Scatter(x=rows["iteration"], y=rows["avg_loss"], name="avg loss", mode="lines",
                             line=dict(color=LINE["avg_loss"], width=2)))
    for iteration in resumes:
        fig.add_vline(x=iteration, line=dict(color=LINE["resume"], width=1, dash="dash"),
                      annotation_text=f"resumed at {iteration}", annotation_position="top right",
                      annotation_font_size=11)
    return _layout(fig, "Loss", "iteration", "loss", revision)


def rate_figure(iterations: pd.DataFrame, revision: str = "rate") -> go.Figure:
    """Learning rate against iteration (burn-in ramp, then steps)."""
    rows = thin(iterations)
    fig = go.Figure(go.Scatter(x=rows["iteration"], y=rows["rate"], name="learning rate",
                               mode="lines", line=dict(color=LINE["rate"])))
    return _layout(fig, "Learning rate", "iteration", "rate", revision)


def per_layer_figure(layers: pd.DataFrame, column: str, title: str, revision: str) -> go.Figure:
    """One line per [yolo] layer: the mean of ``column`` over each iteration's lines."""
    fig = go.Figure()
    if not layers.empty and column in layers:
        means = layers.groupby(["layer", "iteration"], sort=True)[column].mean().reset_index()
        for i, (layer, rows) in enumerate(means.groupby("layer")):
            rows = thin(rows)
            fig.add_trace(go.Scatter(x=rows["iteration"], y=rows[column], name=f"layer {layer}", mode="lines",
                                     line=dict(color=PALETTE[i % len(PALETTE)])))
    return _layout(fig, title, "iteration", column, revision)


def map_figure(points: pd.DataFrame, revision: str = "map") -> go.Figure:
    """mAP@0.5 (``map50``, a fraction, drawn in percent) at the iterations where darknet computed it."""
    points = points.dropna(subset=["iteration", "map50"]) if len(points) else points
    fig = go.Figure(go.Scatter(x=points.get("iteration", []), y=points.get("map50", pd.Series(dtype=float)) * 100,
                               name="mAP@0.5", mode="lines+markers", line=dict(color=css(OKABE_ITO["bluish_green"]))))
    return _layout(fig, "mAP@0.5", "iteration", "mAP %", revision)


def compare_figure(frames: dict[str, pd.DataFrame], revision: str = "compare") -> go.Figure:
    """Avg loss of several runs overlaid, one colour each."""
    fig = go.Figure()
    for i, (name, frame) in enumerate(frames.items()):
        rows = thin(frame)
        fig.add_trace(go.Scatter(x=rows["iteration"], y=rows["avg_loss"], name=name, mode="lines",
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    return _layout(fig, "Avg loss by run", "iteration", "avg loss", revision)


def pr_figure(recall: list[float], precision: list[float], threshold_point: tuple[float, float] | None,
              title: str = "Precision–recall", revision: str = "pr") -> go.Figure:
    """A PR curve with the point of the chosen confidence threshold marked."""
    fig = go.Figure(go.Scatter(x=recall, y=precision, name="PR curve", mode="lines",
                               line=dict(color=css(OKABE_ITO["blue"]))))
    if threshold_point is not None:
        fig.add_trace(go.Scatter(x=[threshold_point[0]], y=[threshold_point[1]], name="threshold",
                                 mode="markers", marker=dict(size=12, color=css(OKABE_ITO["vermillion"]))))
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, title, "recall", "precision", revision)


def box_size_figure(table: pd.DataFrame) -> go.Figure:
    """Box width against height in network pixels (a ``pipeline.yolo.health.box_table``)."""
    fig = go.Figure(go.Scatter(x=table["WidthPx"], y=table["HeightPx"], mode="markers",
                               marker=dict(size=4, color=css(OKABE_ITO["blue"]), opacity=0.5), name="boxes"))
    return _layout(fig, "Box size (network pixels)", "width", "height", "health_sizes")


def boxes_per_image_figure(histogram: pd.DataFrame) -> go.Figure:
    """Bars of ``pipeline.yolo.health.boxes_per_image``: images having 0, 1, 2, … boxes."""
    fig = go.Figure(go.Bar(x=histogram["boxes"], y=histogram["images"], marker_color=css(OKABE_ITO["orange"]),
                           name="images"))
    return _layout(fig, "Boxes per image", "boxes", "images", "health_per_image")


def aspect_figure(table: pd.DataFrame) -> go.Figure:
    """Histogram of box aspect ratios (width / height) of a ``pipeline.yolo.health.box_table``."""
    fig = go.Figure(go.Histogram(x=table["Aspect"].dropna(), marker_color=css(OKABE_ITO["reddish_purple"]),
                                 name="boxes"))
    return _layout(fig, "Aspect ratio (w / h)", "w / h", "boxes", "health_aspect")
