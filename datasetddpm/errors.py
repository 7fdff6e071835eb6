"""User-facing errors: the CLI prints them as one line on stderr and exits non-zero."""


class DatasetDDPMError(Exception):
    """A mistake in the user's input (a file, an option, a checkpoint) with a one-line explanation."""


class InputError(DatasetDDPMError):
    """A bad input file: names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class OptionError(DatasetDDPMError):
    """A bad option value: names the option, the value and what is allowed."""

    def __init__(self, option: str, problem: str):
        self.option = option
        super().__init__(f"{option}: {problem}")
