"""Shared pytest fixtures. Integration fixtures live in tests/integration/conftest.py."""
