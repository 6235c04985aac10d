"""The panes: Static widgets that re-render from the session when told to (attributes down)."""
from __future__ import annotations

from textual.widgets import Static

from . import views


class Pane(Static):
    """A pane showing a pure view function of the session."""

    def __init__(self, session, **kw):
        super().__init__("", **kw)
        self.session = session

    def refresh_view(self) -> None:
        # every pane has a fixed size (app.tcss), so new content never needs a new layout
        self.update(self.render_view(), layout=False)

    def render_view(self):  # pragma: no cover - overridden
        return ""


class VcpuPane(Pane):
    def __init__(self, session, cpu: int, **kw):
        super().__init__(session, **kw)
        self.cpu = cpu

    def render_view(self):
        width = self.size.width or 60
        sel = getattr(self.app, "selection", ("byte",)) if self.is_mounted else ("byte",)
        return views.vcpu_pane(self.session, self.cpu, width=max(40, width - 2),
                               reg=sel[1] if sel[0] == "reg" else None)


class VcpuListPane(Pane):
    def render_view(self):
        return views.vcpu_list(self.session)


class HexdumpPane(Pane):
    COMPARE = ("previous step", "mark", "branch")

    def __init__(self, session, **kw):
        super().__init__(session, **kw)
        self.view = "ram"
        self.cursor = 0
        self.bit = 0
        self.compare = "previous step"

    def base(self):
        s = self.session
        tl = s.tl
        if self.compare == "mark" and s.marks:
            name, step = list(s.marks.items())[-1]
            return (f"mark {name} (step {step})", views.page_at(tl, tl.focus, self.view, step))
        if self.compare == "branch":
            others = [n for n in s.branches if n != s.current]
            if others:
                other = s.branches[others[0]]
                if tl.focus < other.e.n:
                    return (f"branch {others[0]} at step {min(tl.pos, other.length)}",
                            views.page_at(other, tl.focus, self.view, tl.pos))
        return None

    def render_view(self):
        return views.hexdump(self.session, self.session.tl.focus, self.view, rows=6, cursor=self.cursor, bit=self.bit,
                             width=(self.size.width or 80) - 2, against=self.base())

    def address(self) -> int:
        tl = self.session.tl
        if self.view == "overlay":
            return self.cursor
        _, gpa = views.primary_structure(tl.view(), tl.focus)
        return max(gpa, 0) + self.cursor

    def space_word(self) -> str:
        return "ram" if self.view == "ram" else f"overlay:cpu{self.session.tl.focus}"


class MsrPane(Pane):
    def render_view(self):
        sel = getattr(self.app, "selection", ("byte",)) if self.is_mounted else ("byte",)
        return views.msr_table(self.session, self.session.tl.focus, selected=sel[1] if sel[0] == "msr" else None)


class IrqPane(Pane):
    def render_view(self):
        sel = getattr(self.app, "selection", ("byte",)) if self.is_mounted else ("byte",)
        return views.irq_queue(self.session, selected=sel[1] if sel[0] == "vector" else None)


class EventLogPane(Pane):
    def render_view(self):
        rows = max(1, (self.size.height or 9) - 2)
        return views.event_log(self.session, n=max(1, rows - 1))


class StatusLine(Pane):
    def render_view(self):
        return views.status_line(self.session)
