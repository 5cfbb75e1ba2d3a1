"""`loraops serve`: an OpenAI-compatible HTTP server; see command.py (the command) and app.py (the API)."""
