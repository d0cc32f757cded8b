"""Option checks shared by the document steps: every error names the step,
the option and the bad value, and a JSON null counts as an absent option
(the SQL option builders pass NULL for "use the default")."""

import json

from ...errors import InvalidInput


class OptionChecker:
    """Reads one step's options; `known` lists the option names it accepts."""

    def __init__(self, step, options, known, builder):
        self.step = step
        self.builder = builder
        if not isinstance(options, dict):
            raise self.invalid(f"options must be a JSON object, not {show_value(options)}")
        unknown = sorted(str(key) for key in options if key not in known)
        if unknown:
            names = ", ".join(f'"{key}"' for key in unknown)
            raise self.invalid(f"unknown option{'s' if len(unknown) > 1 else ''} {names}",
                               hint="Known options: " + ", ".join(known) + ".")
        self.options = options

    def invalid(self, message, hint=None):
        """An InvalidInput naming this step; the default hint names the SQL builder."""
        return InvalidInput(f"{self.step}: {message}",
                            hint=hint or f"Build the options with {self.builder}.")

    def choice(self, key, allowed, default):
        value = self.options.get(key)
        if value is None:
            return default
        if value not in allowed:
            raise self.invalid(f'"{key}" ({show_value(value)}) must be one of: ' + ", ".join(allowed))
        return value

    def boolean(self, key, default):
        value = self.options.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.invalid(f'"{key}" ({show_value(value)}) must be true or false')
        return value

    def integer(self, key, default=None, minimum=None, maximum=None):
        value = self.options.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.invalid(f'"{key}" ({show_value(value)}) must be an integer')
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.invalid(f'"{key}" ({value}) must be from {minimum} to {maximum}'
                               if maximum is not None else
                               f'"{key}" ({value}) must be at least {minimum}')
        return value

    def text(self, key, default=None, required=False):
        value = self.options.get(key)
        if value is None:
            if required:
                raise self.invalid(f'the option "{key}" is required')
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.invalid(f'"{key}" ({show_value(value)}) must be a non-empty string')
        return value


def show_value(value, limit=40):
    """`value` as it looks in JSON, shortened for an error message."""
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."
