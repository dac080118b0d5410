"""SQL for LanceDB filters: literals, ``IN`` lists, and a user's filter checked before it runs.

LanceDB filters are SQL strings; every filter this project builds goes through ``sql_str`` /
``sql_in`` (quotes doubled, an empty list a false condition), and every filter a user types goes
through ``check_filter`` (see there for why) and, when LanceDB refuses it, ``explain_filter_error``.
"""
from __future__ import annotations

import re

from .errors import InputError


def sql_str(value: str) -> str:
    """A SQL string literal (LanceDB filters are SQL)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_in(column: str, values) -> str:
    values = list(values)
    if not values:
        return "false"
    return f"{column} IN ({', '.join(sql_str(v) for v in values)})"


def check_filter(where: str) -> str:
    """A user's SQL filter, made safe to hand to LanceDB, or ``InputError``.

    LanceDB reads the first complete expression of a filter and silently ignores the rest
    (``path LIKE '%x%' garbage`` and ``1=1; DROP TABLE x`` both ran as their first part). Wrapped
    in parentheses the parser must reach the closing one, so anything left over is a parse
    error instead; that holds only if the filter's own parentheses balance, which is checked
    here (outside string literals, quoted names and comments), with ``;`` refused outright."""
    text = str(where)
    depth, i, n = 0, 0, len(text)
    while i < n:
        char = text[i]
        if char in "'\"`":  # a string literal or a quoted name; doubled quotes stay inside
            end = i + 1
            while True:
                end = text.find(char, end)
                if end < 0:
                    raise InputError(f"unterminated {'string' if char == chr(39) else 'quoted name'} starting at "
                                     f"{text[i:i + 20]!r}")
                if end + 1 < n and text[end + 1] == char:
                    end += 2
                    continue
                break
            i = end + 1
            continue
        if text.startswith("--", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise InputError("unterminated /* comment")
            i = close + 2
            continue
        if char == ";":
            raise InputError("a filter is one SQL expression: ';' is not allowed")
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InputError(f"unbalanced parentheses: ')' at position {i + 1} closes nothing")
        i += 1
    if depth:
        raise InputError(f"unbalanced parentheses: {depth} '(' not closed")
    return f"({text}\n)"


def explain_filter_error(where: str, exc: Exception) -> str:
    """LanceDB's parse error for a filter (it quotes a whole SQL statement) in a few words."""
    text = str(exc)
    found = re.search(r"Expected: (.*?), found: (\S+?)(?: at Line: \d+, Column: \d+)?\)*\s*$", text, re.S)
    if found:
        expected, what = found.group(1).strip(), found.group(2).strip()
        if what in ("EOF", ")"):  # the closing parenthesis is ours: the user's filter stopped short
            return "not a complete SQL expression: it ends too early"
        if expected == ")":
            return f"not one SQL expression: {what!r} follows a complete expression (join conditions with AND / OR)"
        return f"not one SQL expression: {what!r} is unexpected there (expected {expected})"
    message = re.sub(r"^.*?(Error during planning|Schema error|Invalid user input): ", "", text.strip().splitlines()[0])
    return message.split(" { ")[0][:200]
