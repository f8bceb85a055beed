"""The command tree shell completion is generated from: every (sub)command of the parser, its
options with the kind of value each takes, and the kinds of its positionals."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

#: value kinds the scripts complete from somewhere other than a fixed word list
FILE, MODEL, AGENT, TARGET, ANY = "@file", "@model", "@agent", "@target", "@any"

_FILE_DESTS = {"path", "config", "env_file", "sdist", "out"}
_MODEL_DESTS = {"model", "name"}


@dataclass(frozen=True)
class OptionSpec:
    """An option: its spellings, and what its value is (None: it takes none)."""

    flags: tuple[str, ...]
    value: tuple[str, ...] | None  # choices, or one of the kinds above
    help: str


@dataclass(frozen=True)
class CommandSpec:
    """A (sub)command: its options, its positionals' kinds, and its own subcommands."""

    path: tuple[str, ...]
    help: str
    options: tuple[OptionSpec, ...]
    positionals: tuple[tuple[str, ...], ...]  # each: choices, or one kind
    subcommands: tuple[CommandSpec, ...]

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def walk(self) -> list[CommandSpec]:
        """This command and every subcommand below it, depth first."""
        return [self, *(command for sub in self.subcommands for command in sub.walk())]

    def takes_value(self) -> list[str]:
        return [
            flag for option in self.options if option.value is not None for flag in option.flags
        ]


def _value_kind(action: argparse.Action) -> tuple[str, ...] | None:
    if action.nargs == 0 or (action.option_strings and action.nargs == "?"):
        return None  # a switch, or an optional value (`status -w [SECONDS]`): nothing to skip
    if action.choices is not None:
        return tuple(str(choice) for choice in action.choices)
    if action.dest == "agent":
        return (AGENT,)
    if action.dest == "target":
        return (TARGET,)
    if not action.option_strings and action.dest in _MODEL_DESTS:
        return (MODEL,)
    if action.type is Path or action.dest in _FILE_DESTS:
        return (FILE,)
    return (ANY,)


def command_tree(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = (), help_text: str = ""
) -> CommandSpec:
    """The commands, options and positionals of ``parser``; ``__``-named commands are hidden."""
    options: list[OptionSpec] = []
    positionals: list[tuple[str, ...]] = []
    subcommands: list[CommandSpec] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not name.startswith("__"):
                    subcommands.append(command_tree(sub, (*path, name), helps.get(name, "")))
        elif action.option_strings:
            help_line = "" if action.help in (None, argparse.SUPPRESS) else str(action.help)
            options.append(OptionSpec(tuple(action.option_strings), _value_kind(action), help_line))
        else:
            positionals.append(_value_kind(action) or (ANY,))
    return CommandSpec(path, help_text, tuple(options), tuple(positionals), tuple(subcommands))
