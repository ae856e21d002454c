"""The MLflow store: its URI, the pre-run check, authentication, the UI server."""
