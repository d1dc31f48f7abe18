"""User-facing errors: one clear line, exit status 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input from the user (a file, a setting, an argument).

    The message is a complete sentence naming the file or setting and what is wrong;
    command-line entry points print it on one line and exit with status 2.
    """


def find_user_error(err: BaseException | None) -> UserError | None:
    """The :class:`UserError` behind ``err``: Hydra and Lightning wrap exceptions raised in our code."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def raises_user_errors(func: F) -> F:
    """Decorate a task so that a :class:`UserError` wrapped by Hydra or Lightning surfaces as itself."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as err:
            user = find_user_error(err)
            if user is None or user is err:
                raise
            raise user from None

    return wrapper  # type: ignore[return-value]


def cli_main(func: F) -> F:
    """Decorate a command-line ``main``: a :class:`UserError` (wrapped or not) becomes one line on stderr
    and exit status 2; Ctrl-C one line and exit status 130."""
    task = raises_user_errors(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
