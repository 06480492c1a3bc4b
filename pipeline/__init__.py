"""Dataset building and evaluation for the Open Images → Darknet studio.

Never imports streamlit: every function here is called by the CLI and by the dashboard alike.
"""
