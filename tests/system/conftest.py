# ped.testing's fixtures, as an integrator's conftest would get them with
# `pytest_plugins = ["ped.testing"]` (allowed only in a root conftest, so imported here;
# test_testing_fixture.py checks the plugin form in a project of its own).
from ped.testing import remote_ped, remote_ped_options, remote_ped_pin_file

__all__ = ["remote_ped", "remote_ped_options", "remote_ped_pin_file"]
