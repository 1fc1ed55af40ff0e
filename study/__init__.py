"""Runnable entry points: ``python -m study.<name>``."""
