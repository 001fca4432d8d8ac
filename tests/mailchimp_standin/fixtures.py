"""pytest fixtures for the Mailchimp stand-in.

Register them from a conftest with `pytest_plugins = ["tests.mailchimp_standin.fixtures"]`
(or import the names). One stand-in serves the whole session; `mailchimp` hands it to a
test freshly reset, so tests never see each other's audiences, faults or requests.
"""

import pytest

from .server import MailchimpStandin, start_mailchimp_standin


@pytest.fixture(scope="session")
def mailchimp_standin():
    standin = start_mailchimp_standin()
    yield standin
    standin.stop()


@pytest.fixture
def mailchimp(mailchimp_standin: MailchimpStandin) -> MailchimpStandin:
    mailchimp_standin.reset()
    return mailchimp_standin
