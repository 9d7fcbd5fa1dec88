"""The gateway's HTTP API: ``create_app`` (app.py), handlers, rate limiting, metrics and the
one problem-response middleware (problems.py)."""
