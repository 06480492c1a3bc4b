"""Router of the studio: shared sidebar, persisted choices, one explicit URL per page.

Run from the repository root: ``streamlit run dashboard/app.py [-- --workspace W]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

# ``streamlit run`` puts dashboard/ on sys.path, not the repository root that holds the packages.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

# Not "pages/": a folder of that name next to the entrypoint switches Streamlit (and AppTest) to
# its v1 multipage mode, which runs a deep-linked page without this router.
PAGES_DIR = Path(__file__).resolve().parent / "views"

# (file, title, material icon, url_path) in journey order; the first page is the default one.
PAGES = [
    ("home.py", "Home", ":material/home:", "home"),
    ("dataset.py", "Dataset", ":material/dataset:", "dataset"),
    ("images.py", "Images", ":material/image:", "images"),
    ("prepare.py", "Prepare", ":material/tune:", "prepare"),
    ("split.py", "Split", ":material/call_split:", "split"),
    ("train.py", "Train", ":material/model_training:", "train"),
    ("evaluate.py", "Evaluate", ":material/analytics:", "evaluate"),
]


def _navigation() -> st.navigation:
    pages = [
        st.Page(PAGES_DIR / file, title=title, icon=icon, url_path=url, default=(i == 0))
        for i, (file, title, icon, url) in enumerate(PAGES)
    ]
    return st.navigation(pages)


st.set_page_config(page_title="Open Images → Darknet studio", page_icon=":material/directions_boat:", layout="wide")
ui.keep_choices()
page = _navigation()
ui.sidebar()
page.run()
