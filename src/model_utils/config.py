"""Configuration: `default_config.yaml` plus an optional recipe file plus command-line overrides.

The model-zoo pattern. `default_config.yaml` holds four YAML documents: the values, a help text for
every key, the allowed choices for some keys, and the allowed ranges of numbers (conditions such
as ">= 1", "> 0, <= 1" or ">= 2, even"). Every key becomes a `--key=value` flag. A recipe
(`--config_path configs/xxx.yaml`) holds values only, for any subset of the keys, and is applied
over the defaults; the command line is applied last. Values are parsed with `yaml.safe_load` and
must have the type of the default (an int is accepted where a float is expected). Unknown keys,
values of the wrong type, outside the choices or outside the range raise `UserError` naming the
key, when the configuration is loaded: before any script starts its work or goes to the background.
"""
import argparse
import operator
import os
import re
import sys

import yaml

from src.model_utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(ROOT, "default_config.yaml")


class Config:
    """Attribute access to a flat dict of settings: `cfg.lr`, `cfg.to_dict()`."""

    def __init__(self, values, command_line=()):
        self.__dict__.update(values)
        self.__dict__["_command_line"] = frozenset(command_line)

    def to_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "_command_line"}

    def on_command_line(self, key):
        """True when `key` was given as a flag (not taken from the defaults or the recipe)."""
        return key in self._command_line

    def __repr__(self):
        return "\n".join(f"{k}: {v!r}" for k, v in sorted(self.to_dict().items()))


def _read_yaml_docs(path):
    if not os.path.isfile(path):
        raise UserError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f)]
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    docs = [d if d is not None else {} for d in docs]
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise UserError(f"{path}: expected YAML mappings of key: value")
    return docs


def check_value(key, value, default, choices=None, source="command line"):
    """Return `value` converted to the type of `default`, or raise UserError naming `key`."""
    if default is None or value is None:
        converted = value
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r} ({source})")
        converted = value
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r} ({source})")
        converted = float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {value!r} ({source})")
        converted = value
    elif isinstance(default, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a path or name that looks like a number
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r} ({source})")
        converted = value
    elif isinstance(default, list):
        if not isinstance(value, list):
            value = [value]
        converted = value
    else:
        converted = value
    if choices and converted not in choices:
        raise UserError(f"{key}: expected one of {choices}, got {converted!r} ({source})")
    return converted


_COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_CONDITION = re.compile(r"^(>=|>|<=|<)\s*(-?[0-9.e+-]+)$|^even$")


def check_range(key, value, condition, source="command line"):
    """Raise UserError naming `key` when the number `value` breaks `condition` (e.g. "> 0, <= 1").

    Lists are checked item by item; None (a key without a default) is not checked.
    """
    if value is None:
        return
    for item in (value if isinstance(value, list) else [value]):
        for part in str(condition).split(","):
            part = part.strip()
            match = _CONDITION.match(part)
            if match is None:
                raise ValueError(f"default_config.yaml: range of {key}: bad condition {part!r}")
            ok = item % 2 == 0 if part == "even" else \
                _COMPARISONS[match.group(1)](item, float(match.group(2)))
            if not ok:
                raise UserError(f"{key}: expected {condition}, got {value!r} ({source})")


_UNSET = object()


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(message)


def _parse_cli_value(text):
    if text == "-":
        return text  # standard input or output, not a YAML list
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(argv=None, description=None):
    """Build the configuration for a script.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).
        description: the script's one-line description, shown by `--help`.
    Returns:
        Config with every key of default_config.yaml, plus `config_path`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    docs = _read_yaml_docs(DEFAULT_CONFIG)
    defaults, helps, choices, ranges = (docs + [{}, {}, {}])[:4]

    pre = _Parser(add_help=False)
    pre.add_argument("--config_path", default=DEFAULT_CONFIG)
    known, _ = pre.parse_known_args(argv)
    values = dict(defaults)
    config_path = os.path.abspath(known.config_path)
    recipe = {}
    if config_path != DEFAULT_CONFIG:
        recipe = _read_yaml_docs(config_path)[0]
        for key, value in recipe.items():
            if key not in defaults:
                raise UserError(f"{config_path}: unknown key '{key}'")
            values[key] = check_value(key, value, defaults[key], choices.get(key),
                                      source=os.path.basename(config_path))

    parser = _Parser(description=description,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config_path", default=DEFAULT_CONFIG,
                        help="recipe YAML applied over default_config.yaml")
    for key, value in values.items():
        parser.add_argument(f"--{key}", type=_parse_cli_value, default=value,
                            help=str(helps.get(key, "")).replace("%", "%%"))
    args = parser.parse_args(argv)
    for key in values:
        given = getattr(args, key)
        if given is not values[key]:
            values[key] = check_value(key, given, defaults[key], choices.get(key))
    # Parsed again with every default unset: the keys that are still set came from argv.
    parser.set_defaults(**dict.fromkeys([*values, "config_path"], _UNSET))
    command_line = {k for k, v in vars(parser.parse_args(argv)).items() if v is not _UNSET}
    for key, condition in ranges.items():
        source = "command line" if key in command_line else \
            (os.path.basename(config_path) if key in recipe else "default_config.yaml")
        check_range(key, values[key], condition, source)
    values["config_path"] = config_path
    return Config(values, command_line)
