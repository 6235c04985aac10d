"""Every key of the TUI, defined once: the bindings, the footer and the help screen are
generated from KEYMAP, and a user's config file can rebind any entry by its name
(config.py). Uppercase = reverse, gdb single-key mode where it has a meaning (design §6)."""
from __future__ import annotations

from dataclasses import dataclass, replace



@dataclass(frozen=True)
class Key:
    name: str          # stable id (config.toml [keys] name = "key")
    keys: str          # Textual key names, comma separated
    action: str        # app action
    label: str         # footer / help label
    help: str          # one line for the help screen
    group: str         # movement | inspect | selection | what-if | panes | app
    footer: bool = False


def _cmd(line: str) -> str:
    return f"cmd({line!r})"


KEYMAP: tuple[Key, ...] = (
    # movement on the focused vCPU
    Key("step", "s,f11", _cmd("step"), "step", "step: run until the focused vCPU has executed its next op", "movement", True),
    Key("rstep", "S,shift+f11", _cmd("rstep"), "rstep", "reverse-step", "movement"),
    Key("next", "n,f10", _cmd("next"), "next", "next: step over calls and interrupt handlers", "movement", True),
    Key("rnext", "N", _cmd("rnext"), "rnext", "reverse-next", "movement"),
    Key("finish", "f", _cmd("finish"), "finish", "finish the current routine or handler", "movement"),
    Key("rfinish", "F", _cmd("rfinish"), "rfinish", "reverse-finish", "movement"),
    Key("continue", "c,f5", _cmd("continue"), "cont", "continue to a breakpoint or watchpoint", "movement", True),
    Key("rcontinue", "C,shift+f5", _cmd("rcontinue"), "rcont", "reverse-continue", "movement"),
    Key("event", "e", _cmd("event"), "event", "one raw event forward (any vCPU)", "movement"),
    Key("revent", "E", _cmd("revent"), "revent", "one raw event back (any vCPU)", "movement"),
    Key("goto", "g", "prompt('goto ')", "goto", "goto a step (opens the command line)", "movement"),
    # inspecting
    Key("why", "y", "why", "why", "why: the selected byte / vector / MSR, else the outcome's causal chain", "inspect", True),
    Key("chain", "Y", "why_chain", "chain", "the outcome's causal chain (also from a selection's why)", "inspect"),
    Key("up", "u", _cmd("up"), "up", "select the next outer frame (gdb up)", "inspect"),
    Key("down", "d", _cmd("down"), "down", "select the next inner frame (gdb down)", "inspect"),
    Key("where", "w", _cmd("bt"), "where", "backtrace of the focused vCPU", "inspect"),
    Key("mark", "m", _cmd("mark"), "mark", "mark this step (for diff and the hexdump's compare)", "inspect"),
    Key("branches", "t", _cmd("branch list"), "timelines", "list the branches (timelines)", "inspect"),
    Key("layout", "L", "cycle_layout", "layout", "source view: asm / src / split (gdb's layout)", "inspect"),
    # the selection: a byte (default), an MSR, a vector, a register
    Key("select_msr", "M", "select('msr')", "MSR", "select an MSR of the focused vCPU (arrows move it)", "selection"),
    Key("select_vector", "V", "select('vector')", "vector", "select a pending or in-service vector", "selection"),
    Key("select_reg", "R", "select('reg')", "register", "select a register", "selection"),
    Key("select_next", "plus", "select_move(1)", "next", "move the MSR / vector / register selection forward",
        "selection"),
    Key("select_prev", "minus", "select_move(-1)", "previous", "move the selection back", "selection"),
    Key("break", "b", "break_here", "break", "breakpoint on the selection (MSR access, vector delivery) or the pc",
        "selection"),
    Key("watch", "a", "watch_selection", "watch", "watch the selected byte, MSR or IRR/ISR bit", "selection"),
    Key("view", "v", "toggle_view", "RAM/overlay", "hexdump: guest RAM / the overlay page", "selection"),
    Key("compare", "equals_sign", "compare_base", "compare", "hexdump highlights changes vs the previous step / "
        "the last mark / another branch", "selection"),
    # what-if
    Key("flip", "x", "flip_bit", "flip bit", "what-if: flip the selected bit (a new branch)", "what-if", True),
    Key("edit", "i", "edit_selection", "edit", "what-if: edit the selected byte, MSR or register; inject or drop "
        "the selected vector", "what-if"),
    Key("whatif", "exclamation_mark", "whatif_menu", "what-if", "what-if menu: inject / drop / fix / hypervisor / "
        "overlay policy", "what-if"),
    # panes
    Key("zoom", "z", "zoom", "zoom", "enlarge the focused pane to the whole screen (again: back)", "panes"),
    Key("next_cpu", "greater_than_sign", "focus_cpu_delta(1)", "next vCPU", "focus the next vCPU", "panes"),
    Key("prev_cpu", "less_than_sign", "focus_cpu_delta(-1)", "prev vCPU", "focus the previous vCPU", "panes"),
    Key("pick_cpu", "p", "pick_cpu", "vCPUs", "vCPU picker (a filterable list of every vCPU)", "panes"),
    Key("group_cpus", "f2", "focus_group('cpus')", "vCPUs", "focus the vCPU panes (narrow terminals: their tab)",
        "panes"),
    Key("group_code", "f3", "focus_group('code')", "source", "focus the source view and breakpoints", "panes"),
    Key("group_side", "f4", "focus_group('side')", "memory", "focus the hexdump, interrupts and MSRs", "panes"),
    Key("group_log", "f6", "focus_group('log')", "log", "focus the event log and the output", "panes"),
    Key("events", "ctrl+e", "focus_pane('events')", "event log", "focus the event log (/ search, enter goto)", "panes"),
    Key("transcript", "ctrl+o", "focus_pane('transcript')", "output", "focus the output transcript", "panes"),
    Key("breaks", "ctrl+b", "focus_pane('breaks')", "breakpoints", "focus the breakpoints pane", "panes"),
    # the app
    Key("command", "colon", "prompt('')", "cmd", "command line: every command, Tab completes, Up/Down history",
        "app", True),
    Key("help", "question_mark", "help", "help", "this help", "app", True),
    Key("cancel", "escape", "cancel", "cancel", "cancel running work; close the command line; drop the selection",
        "app"),
    Key("quit", "q", "quit_app", "quit", "quit (twice when branches are unsaved)", "app", True),
) + tuple(Key(f"cpu{i}", str(i), f"focus_cpu({i})", f"cpu{i}", f"focus vCPU {i}", "panes") for i in range(10))

GROUPS = {"movement": "Moving in time", "inspect": "Inspecting", "selection": "The selection",
          "what-if": "What-if", "panes": "Panes and vCPUs", "app": "The app"}

DEVIATIONS = """Deviations from gdb
  - reverse commands are uppercase letters (gdb's single-key mode has no reverse keys);
  - `w` prints the backtrace; `u`/`d` move between frames as gdb's up/down do;
  - `y`, `a`, `x`, `i`, `!`, `M`, `V`, `R`, `=`, `v`, `z`, `p`, `L` are hvdbg's own (gdb's `v` is
    `info locals`, `r` is `run`); what-if edits never sit on a gdb key.
In a focused pane, arrows / PgUp / PgDn / Home / End scroll or move its cursor; Tab moves the focus
between panes; ctrl+p opens the palette with every command."""


def keymap(overrides: dict[str, str] | None = None) -> tuple[Key, ...]:
    """KEYMAP with a user's rebindings applied (name -> Textual key names)."""
    if not overrides:
        return KEYMAP
    return tuple(replace(k, keys=overrides[k.name]) if k.name in overrides else k for k in KEYMAP)


def _display(keys: str) -> str:
    names = {"greater_than_sign": ">", "less_than_sign": "<", "equals_sign": "=", "exclamation_mark": "!",
             "colon": ":", "question_mark": "?", "escape": "esc", "plus": "+", "minus": "-"}
    return " / ".join(names.get(k, k) for k in keys.split(","))


def help_text(keys: tuple[Key, ...]) -> str:
    """The help screen, generated from the key table (markup-free: names are escaped by Text)."""
    out = ["hvdbg keys (gdb single-key mode where it has a meaning; uppercase = reverse)", ""]
    for group, title in GROUPS.items():
        rows = [k for k in keys if k.group == group and not (k.name.startswith("cpu") and k.name != "cpu0")]
        if not rows:
            continue
        out.append(title)
        for k in rows:
            shown = "0-9" if k.name == "cpu0" else _display(k.keys)
            text = "focus vCPU 0..9" if k.name == "cpu0" else k.help
            out.append(f"  {shown:<16} {text}" + ("" if k.name == "cpu0" else f"  [{k.name}]"))
        out.append("")
    out.append(DEVIATIONS)
    return "\n".join(out)
