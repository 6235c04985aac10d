"""The TUI's modal screens: help (generated from the key table), why chains, the what-if
menu, the vCPU picker."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from ..commands import COMMANDS


class HelpScreen(ModalScreen):
    """Every key (from keys.KEYMAP, with the user's rebindings) and, with `commands`, every
    command. `text` is plain text or a rich Text."""
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def __init__(self, text, commands: bool = True):
        super().__init__()
        self.text = text
        self.commands = commands

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="helpbox"):
            yield Static(self.text if isinstance(self.text, Text) else Text(self.text))
            if not self.commands:
                return
            lines = "\n".join(f"  {c.usage or c.name:<46} {c.help}" for c in COMMANDS.values())
            yield Static(Text("\nCommands (`:` line and the ctrl+p palette):\n" + lines))

    def on_mount(self) -> None:
        self.query_one("#helpbox").focus()


class WhyScreen(ModalScreen):
    """A causal chain or a `why` answer: enter on a link goes to its step (the position
    right after the event the link is about); `Y` shows the outcome's chain instead."""
    BINDINGS = [Binding("escape,q", "app.pop_screen", "close"), Binding("Y", "chain", "the outcome's chain")]

    def __init__(self, title: str, links: list[dict]):
        super().__init__()
        self.title_text = title
        self.links = links

    def compose(self) -> ComposeResult:
        with Vertical(id="whybox"):
            yield Static(Text(self.title_text, style="bold"))
            yield OptionList(*[Option(Text(f"{i + 1}. step {lk['step']}: {lk['text']}"
                                           if lk.get("step") is not None and f"step {lk['step']}" not in lk["text"]
                                           else lk["text"]), id=str(i)) for i, lk in enumerate(self.links)],
                             id="whylist")
            yield Static(Text("enter: go to the step (just after that event)   Y: the outcome's chain   "
                              "escape: close", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#whylist").focus()

    def on_option_list_option_selected(self, event) -> None:
        lk = self.links[int(event.option.id)]
        self.app.pop_screen()
        if lk.get("step") is not None:
            self.app.run_line(f"goto {min(lk['step'], self.app.session.tl.length)}")

    def action_chain(self) -> None:
        self.app.pop_screen()
        self.app.action_why_chain()


class WhatIfScreen(ModalScreen):
    """The `!` menu: what-if edits that do not sit on a gdb key. Entries with arguments open
    the `:` line filled in; the others run at once (each makes a branch). Every list comes
    from a registry: the pack's fixes, the hypervisor models and their options."""
    BINDINGS = [Binding("escape,q", "app.pop_screen", "close")]

    def __init__(self, cpu: int, session):
        super().__init__()
        from ..core import hypervisors
        e = session.tl.e
        program, cfg = e.scn.program, e.cfg
        pack = e.pack
        self.entries = [
            (f"inject cpu{cpu} RESCHEDULE", "prompt", "inject a vector into the focused vCPU's IRR"),
            (f"drop irr cpu{cpu} ", "prompt", "drop a pending vector"),
            ("drop ipi ", "prompt", "drop an in-flight IPI (SRC DST VECTOR)"),
        ]
        for fx in ("none", *sorted(program.variants)):
            doc = (pack.fixes.get(fx, "") if pack is not None else "") or \
                ("the code as the bug shipped" if fx == "none" else "a fix variant")
            self.entries.append((f"fix {fx}", "run", doc))
        for name, spec in hypervisors.HYPERVISORS.items():
            if name != cfg.hypervisor:
                self.entries.append((f"hypervisor {name}", "run", spec.description[:70]))
        spec = hypervisors.HYPERVISORS.get(cfg.hypervisor)
        for opt, values in (spec.options.items() if spec else ()):
            for v, doc in values.items():
                self.entries.append((f"{opt} {v}", "run", doc[:70]))

    def compose(self) -> ComposeResult:
        with Vertical(id="whatifbox"):
            yield Static(Text("what if ... (enter: choose, escape: close)", style="bold"))
            yield OptionList(*[Option(Text(f"{line:<28} {help_}"), id=str(i))
                               for i, (line, _, help_) in enumerate(self.entries)], id="whatiflist")

    def on_mount(self) -> None:
        self.query_one("#whatiflist").focus()

    def on_option_list_option_selected(self, event) -> None:
        line, how, _ = self.entries[int(event.option.id)]
        self.app.pop_screen()
        if how == "run":
            self.app.run_line(line)
        else:
            self.app.action_prompt(line)


class VcpuPicker(ModalScreen):
    """Every vCPU in a filterable list (type to filter: a number, a hotplug state, a routine,
    a vector name); enter focuses it."""
    BINDINGS = [Binding("escape", "app.pop_screen", "close")]

    def __init__(self, rows: list[tuple[int, str]]):
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="pickerbox"):
            yield Static(Text("vCPUs (type to filter, enter: focus, escape: close)", style="bold"))
            yield Input(placeholder="filter: 17, dying, do_idle, RESCHEDULE ...", id="pickerfilter")
            yield OptionList(*self._options(""), id="pickerlist")

    def _options(self, text: str) -> list[Option]:
        words = text.lower().split()
        return [Option(Text(line), id=str(c)) for c, line in self.rows
                if all(w in f"cpu{c} {line}".lower() for w in words)]

    def on_mount(self) -> None:
        self.query_one("#pickerfilter").focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        ol = self.query_one("#pickerlist", OptionList)
        ol.clear_options()
        ol.add_options(self._options(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        ol = self.query_one("#pickerlist", OptionList)
        if ol.option_count:
            self._pick(ol.get_option_at_index(ol.highlighted or 0).id)

    def on_option_list_option_selected(self, event) -> None:
        self._pick(event.option.id)

    def _pick(self, cpu: str) -> None:
        self.app.pop_screen()
        self.app.run_line(f"focus cpu{cpu}")
