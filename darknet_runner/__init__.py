"""Everything that knows darknet: binary, cfg, run directories, preflight, processes, logs, prediction.

Never imports streamlit.
"""
