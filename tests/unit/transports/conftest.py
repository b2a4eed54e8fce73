"""The fake services fixture for the transport's unit tests."""

from tests.unit.transports.fakes import fake_accounts, fake_services

__all__ = ["fake_accounts", "fake_services"]
