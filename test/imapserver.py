"""The old name of wire.py, the one test library, kept only for test files written against
it that have not moved over yet (new tests import wire; so should these): nothing is
defined here."""
from wire import *  # noqa: F401,F403
