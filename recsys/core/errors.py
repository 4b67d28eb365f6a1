"""Errors the CLI turns into one clear line and exit code 2 (no traceback)."""


class RecsysInputError(Exception):
    """Bad input the user can fix: a wrong file, a missing column, an unknown name.

    The message says what was wrong, where (file, row, field) and what was expected.
    """
