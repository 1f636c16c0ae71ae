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

    def in_file(self, where: str) -> "UserError":
        """This error located in a file (or a table named by its file): ``<file>: <field>: <message>``."""
        text = str(self)
        if text == where or text.startswith(f"{where}: "):
            return self
        located = UserError(text, field=where)
        located.exit_code = self.exit_code
        return located
