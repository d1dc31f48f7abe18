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


def cli_main(func: F) -> F:
    """Decorate a command-line ``main``: a :class:`UserError` becomes one line on stderr and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as err:
            user = find_user_error(err)
            if user is None:
                raise
            print(f"error: {user}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
