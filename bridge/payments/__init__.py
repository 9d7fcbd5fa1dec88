"""Payments: the pure state machine (``state``) and the watcher loop that feeds it."""
