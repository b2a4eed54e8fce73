"""Operator tools: metrics, the run view, queue listings and the webhook server."""
