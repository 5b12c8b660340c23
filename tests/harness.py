"""The tests' name for the process harness, which lives in devharness/ (shared with bench/ and
tools/demo.py); import from either. Everything the tests imported from here still is."""

from devharness import *  # noqa: F403 - every public name of the harness, one list of them
from devharness import __all__  # noqa: F401
