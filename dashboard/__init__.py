"""The Streamlit studio: ``streamlit run dashboard/app.py`` (router in app.py, one file per page)."""
