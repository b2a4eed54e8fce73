"""Runnable example workflows used by the demo and the docs."""
