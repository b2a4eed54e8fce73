"""Operator tools: metrics, the run view, queue listings, broker inspection and the webhook server."""
