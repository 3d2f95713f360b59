"""The one exception type for mistakes a user can fix.

`main.py` turns a `UserError` into a single line on stderr and a non-zero exit
code, without a traceback. Anything else that escapes is a bug and keeps its
traceback.
"""


class UserError(Exception):
  """A problem with the user's input: one line naming the problem and the fix."""
