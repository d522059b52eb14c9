"""Errors that imgen reports to the user as one clear message."""


class UserError(Exception):
  """A mistake the user can fix: bad config, missing data. No traceback."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work, with what to use instead."""


class DataError(UserError):
  """A dataset that is unknown, unprepared or unreadable."""


def one_line(error: BaseException, limit: int = 200) -> str:
  """An error's message on one line, cut to `limit` characters, for a warning."""
  return " ".join(str(error).split())[:limit]
