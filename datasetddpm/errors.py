"""User-facing errors: the CLI prints them as one line on stderr and exits non-zero."""

import os


def name_bytes(name) -> bytes:
    """A file name's own bytes (what to hash or compare): Python keeps undecodable bytes of a name as lone
    surrogates, which `str.encode()` refuses. For UTF-8 names these are the UTF-8 bytes."""
    return os.fsencode(name)


def printable(name) -> str:
    """A file name as text any terminal and JSON file takes: bytes that are not UTF-8 shown as \\xNN."""
    return name_bytes(str(name)).decode("utf-8", "backslashreplace")


class DatasetDDPMError(Exception):
    """A mistake in the user's input (a file, an option, a checkpoint) with a one-line explanation."""


class InputError(DatasetDDPMError):
    """A bad input file: names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{printable(path)}: {problem}")


class OptionError(DatasetDDPMError):
    """A bad option value: names the option, the value and what is allowed."""

    def __init__(self, option: str, problem: str):
        self.option = option
        super().__init__(f"{option}: {problem}")
