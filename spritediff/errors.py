"""The one exception type for user errors (bad input, bad files); the CLI prints it as one line."""


class SpriteDiffError(Exception):
    """A user error: the message is one line that says what is wrong and, where it helps, what to do."""


class ReportedElsewhere(SpriteDiffError):
    """This process of a torchrun job stops for an error that another process prints (once for the whole job)."""
