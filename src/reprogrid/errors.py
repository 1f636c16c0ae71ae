"""One exception type for every problem the user can fix.

The CLI prints ``error: <message>`` on one line and exits with code 2; no traceback.
Messages name the field (or file) and say what is expected.
"""


class UserError(Exception):
    """Bad input (config, claims file, table, grid) or an environment the study cannot run in."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)
