"""Hypervisor models, by name. A model registers itself once - its name, its options (for
Hyper-V the overlay content policy) and the MSRs and shared structures it implements - and
every list in the program (CLI choices, scenario validation, REPL completion, the TUI's
what-if menu, views) is derived from this registry. The engine never branches on a name:
it calls the model's hooks (base.HypervisorModel).

Add a hypervisor: write a module with a HypervisorModel subclass and call :func:`register`
(see kvm.py); nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .base import HypervisorModel, SharedPage, Structure


@dataclass
class HypervisorSpec:
    name: str
    factory: Callable          # (engine, config) -> HypervisorModel
    description: str = ""
    # option name (a Config field) -> {value: what it means}; the first value is the default
    options: dict[str, dict[str, str]] = field(default_factory=dict)


HYPERVISORS: dict[str, HypervisorSpec] = {}


def register(spec: HypervisorSpec) -> HypervisorSpec:
    HYPERVISORS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    HYPERVISORS.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(HYPERVISORS)


def get(name: str) -> HypervisorSpec:
    try:
        return HYPERVISORS[name]
    except KeyError:
        raise ValueError(f"unknown hypervisor {name!r} (known: {', '.join(HYPERVISORS)})") from None


def option_values(option: str) -> tuple[str, ...]:
    """Every value any model accepts for `option` (e.g. the overlay policies)."""
    out: list[str] = []
    for spec in HYPERVISORS.values():
        for v in spec.options.get(option, {}):
            if v not in out:
                out.append(v)
    return tuple(out)


def models_with(option: str) -> tuple[str, ...]:
    return tuple(n for n, s in HYPERVISORS.items() if option in s.options)


def default_option(option: str) -> str:
    vals = option_values(option)
    return vals[0] if vals else ""


def make_hypervisor(eng, cfg) -> HypervisorModel:
    return get(cfg.hypervisor).factory(eng, cfg)


from . import hyperv as _hyperv  # noqa: E402,F401  (built-in models register themselves)
from . import kvm as _kvm  # noqa: E402,F401

__all__ = ["HYPERVISORS", "HypervisorSpec", "HypervisorModel", "SharedPage", "Structure", "register", "unregister",
           "names", "get", "option_values", "models_with", "default_option", "make_hypervisor"]
