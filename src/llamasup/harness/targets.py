"""Targets and variants: ``model``, ``model@agent``, and the cross product of load-time flag
values to try on each (``--vary spec-type=none|ngram-simple --vary ub=256|512``).

A variant is one sidecar: its target's profile flags with the variant's flags laid over them
(the last layer, like an ``X-Agent-Flags`` overlay). The first variant of a target is the
baseline its ratios are computed against.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llamasup.errors import FlagError, LlamasupError
from llamasup.flags.flagset import FlagSet, lookup, merge, parse, tokenize
from llamasup.flags.vocabulary import Kind, Layer

#: separates the values of one ``--vary`` flag (a value may itself hold commas:
#: ``--spec-type ngram-simple,ngram-mod`` is one value)
VALUE_SEPARATOR = "|"


class VariantError(LlamasupError):
    """A ``--vary``/``--variant``/``--flags`` value that cannot be used."""


@dataclass(frozen=True)
class Variant:
    """One sidecar to measure: a target and the ad-hoc flags laid over its profile flags.

    Attributes:
        target: ``model`` or ``model@agent`` as the user named it.
        label: a short name for tables (``spec-type=ngram-simple ub=512``; ``base`` for none).
        flags: the ad-hoc llama-server flags (``--flags`` and the variant's own, merged and
            normalised: ``-ub 512`` is ``--ubatch-size 512``).
    """

    target: str
    label: str
    flags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.target} [{self.label}]"

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "label": self.label, "flags": list(self.flags)}


@dataclass(frozen=True)
class Axis:
    """One ``--vary`` flag and the values to try, in order (the first is the baseline)."""

    spelled: str  # as shown in labels: ``spec-type``
    flag: str  # as passed to llama-server: ``--spec-type``
    values: tuple[str, ...]


_VARY = re.compile(r"^\s*(?P<flag>-{0,2}[A-Za-z][\w-]*)\s*(?:=|\s)\s*(?P<values>.+?)\s*$")


def parse_axis(text: str) -> Axis:
    """``spec-type=none|ngram-simple``, ``--spec-type none|ngram-simple`` or ``-ub=256|512``.

    Raises:
        VariantError: not that shape, an unknown flag, or a flag that is not load-time.
    """
    match = _VARY.match(text)
    if match is None:
        raise VariantError(f"--vary {text!r}: expected FLAG=V1{VALUE_SEPARATOR}V2...")
    written = match.group("flag")
    values = tuple(v.strip() for v in match.group("values").split(VALUE_SEPARATOR))
    if not all(values):
        raise VariantError(f"--vary {text!r}: an empty value")
    if len(set(values)) != len(values):
        raise VariantError(f"--vary {text!r}: a value is given twice")
    candidates = [written] if written.startswith("-") else [f"--{written}", f"-{written}"]
    flag = next((c for c in candidates if lookup(c) is not None), None)
    if flag is None:
        raise VariantError(f"--vary {text!r}: llama-server has no flag {candidates[0]}")
    definition = lookup(flag)
    assert definition is not None
    if definition.kind is Kind.REQUEST:
        raise VariantError(
            f"--vary {text!r}: {flag} is a request-time flag (a sampling default), which "
            "does not change the sidecar; vary load-time flags"
        )
    for value in values:
        check_flags([flag, value], f"--vary {text!r}")
    return Axis(written.lstrip("-"), flag, values)


def check_flags(tokens: Sequence[str], where: str) -> FlagSet:
    """Parse ad-hoc flags as the operator's own (model-args trust); raise the first problem."""
    try:
        return parse(tokens, Layer.MODEL).raise_first()
    except FlagError as exc:
        raise VariantError(f"{where}: {exc}") from exc


def parse_named(text: str) -> tuple[str, tuple[str, ...]]:
    """``--variant 'LABEL=FLAGS...'``: a named variant of several flags at once."""
    label, sep, flags = text.partition("=")
    label = label.strip()
    if not sep or not label or any(c.isspace() for c in label):
        raise VariantError(f"--variant {text!r}: expected LABEL=FLAGS (a label without blanks)")
    tokens = tuple(tokenize(flags))
    check_flags(tokens, f"--variant {label}")
    return label, tokens


def expand(
    targets: Sequence[str],
    *,
    common: Sequence[str] = (),
    named: Sequence[tuple[str, tuple[str, ...]]] = (),
    axes: Sequence[Axis] = (),
) -> list[Variant]:
    """Every target x every named variant (or none) x the cross product of the axes.

    ``common`` flags (``--flags``) go on every variant, before the variant's own.

    Raises:
        VariantError: no target, a target named twice, or two variants of one target that
            would be the same sidecar.
    """
    if not targets:
        raise VariantError("name at least one target (model or model@agent)")
    if len(set(targets)) != len(targets):
        raise VariantError("a target is named twice")
    common_flags = check_flags(tuple(common), "--flags")
    choices: list[tuple[str, tuple[str, ...]]] = list(named) or [("", ())]
    grid = list(itertools.product(*(axis.values for axis in axes)))
    variants: list[Variant] = []
    for target in targets:
        seen: dict[tuple[str, ...], str] = {}
        for label, flags in choices:
            for values in grid:
                parts = [label] if label else []
                tokens = list(flags)
                for axis, value in zip(axes, values, strict=True):
                    parts.append(f"{axis.spelled}={value}")
                    tokens += [axis.flag, value]
                shown = " ".join(parts) or "base"
                # a variant's own flags win over --flags, as a later layer does
                canonical = merge(common_flags, check_flags(tokens, shown)).argv()
                if canonical in seen:
                    raise VariantError(
                        f"{target}: variants {seen[canonical]!r} and {shown!r} are the same flags"
                    )
                seen[canonical] = shown
                variants.append(Variant(target, shown, canonical))
    return variants
