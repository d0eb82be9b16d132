"""Makes the `two_hosts` fixture of `tests.netns.harness` available to every test here."""

from tests.netns.harness import two_hosts_fixture  # noqa: F401
