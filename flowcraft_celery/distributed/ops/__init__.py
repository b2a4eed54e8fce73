"""Operator tools: what a deployment's operator looks at and acts on."""
