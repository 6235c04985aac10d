"""Kernel lifecycle transitions and guest page ownership (mixed into Engine).

A guest page has an owner in the running kernel - (kernel generation, purpose, cpu), e.g.
(1, "vp_assist", 1) - set by the ``alloc`` op and written through the one journaled path.
A *kernel generation* is one kernel image's view of memory: generation 1 boots first; a
kexec or a power cycle starts a new one; restoring a hibernation image returns to the
image's. Transitions change the guest side only: hypervisor state (the MSRs that point at
guest pages, overlays, leases) survives kexec and hibernation resume unless the guest tears
it down - that is the crux of the bug class (domain-facts §7). A power cycle resets the
partition (the VM's hypervisor state too).

Transitions (ops in ops.py):

* ``kexec`` - the executing vCPU jumps into a new kernel generation (start role ``bsp``,
  IRQs off); kernel variables return to their initial values except the scenario's
  ``persist`` list; no page is owned any more (the new kernel's allocator may hand out any
  page, starting again at the scenario's ``alloc_base``); the other vCPUs are parked as
  the old kernel's reboot IPI leaves them (halted, IRQs off, offline) until the new kernel sends
  INIT/SIPI; every local APIC is reset (the old kernel's shutdown disables it; assumption:
  pending and in-service vectors are dropped). Whether the jumping vCPU's LAPIC timer is
  armed is hardware state and survives the jump (``%timer`` keeps its value: the program's
  shutdown path disarms it, as lapic_shutdown does, and the new kernel arms it again).
* ``power_cycle`` - the VM powers off and boots again: the partition is reset (MSRs to
  their reset values, overlays and hypervisor leases gone, LAPICs and in-flight IPIs
  cleared), a new kernel generation boots on every vCPU as at the start (roles bsp / ap).
  Guest RAM contents are kept (assumption; pages are allocated afresh anyway).
* ``save_image`` - the running kernel's image is saved (its variables, page owners and
  the contents of the pages it owns, its allocator cursor): what swsusp writes to disk.
* ``restore_image ROUTINE`` - the image's kernel is restored over the running one (pages,
  owners, variables, generation) and the executing vCPU continues at ROUTINE with IRQs
  off, as restore_registers returns into create_image; the other vCPUs are untouched
  (the boot kernel has taken them offline).

The `hv-writes-owned` invariant (a scenario declares it, with the page purpose each shared
structure must have): every write a hypervisor model makes into guest-visible memory must
land in a page the running kernel owns, for that purpose, for that vCPU. A violation ends
the run as ``corruption``.
"""
from __future__ import annotations

from .defs import OFFLINE, ONLINE, PAGE_SHIFT
from .machine import F_FRAMES, F_HALT, F_IF, F_IRR, F_ISR, F_PC, F_R0, F_RT, F_TPR

LIFECYCLE_GLOBALS = ["kgen", "kgen_next", "image"]


class Lifecycle:
    # ---------- ownership ----------
    def set_owner(self, pfn: int, purpose: str, cpu: int) -> None:
        self.m.set_owner(pfn, (self.generation(), purpose, cpu))

    def generation(self) -> int:
        """The running kernel's generation (1 at the first boot)."""
        return self.m.S[self._g_kgen]

    def on_hv_write(self, cpu: int, structure: str, gpa: int, size: int) -> None:
        """A hypervisor model wrote guest-visible memory at `gpa` for its `structure` of `cpu`:
        check the `hv-writes-owned` invariant (when the scenario declares it)."""
        inv = self._hv_owned
        if inv is None or gpa < 0:
            return
        want = inv.get(structure)
        if want is None:
            return
        pfn = gpa >> PAGE_SHIFT
        own = self.m.own.get(pfn)
        gen = self.generation()
        if own is not None and own[0] == gen and own[1] == want and own[2] == cpu:
            return
        self.note("violation", "hv-writes-owned", cpu, structure, gpa, own, gen, want)
        if self._violation is None:
            self._violation = (cpu, structure, gpa, own, gen, want)

    # ---------- kernel state ----------
    def _kernel_var_slots(self) -> list[int]:
        """Slots of the kernel's variables (globals not in `persist`, every per-CPU variable)."""
        L = self.L
        keep = set(getattr(self.scn, "persist", ()))
        out = [i for name, i in L.gvar.items() if name not in keep]
        out.append(L.gindex["alloc_next"])
        for c in range(self.n):
            b = L.base(c)
            out += [b + off for off in L.pvar.values()]
        return out

    def _initial_kernel_values(self) -> dict:
        """Initial values of the kernel variables (as _init_state sets them)."""
        L = self.L
        vals = {i: 0 for i in self._kernel_var_slots()}
        vals[L.gindex["alloc_next"]] = self.scn.alloc_base >> PAGE_SHIFT
        for name, v in self.scn.init_vars.items():
            if name in L.gvar:
                vals[L.gvar[name]] = v
        if "nr_cpus" in L.gvar:
            vals[L.gvar["nr_cpus"]] = self.n
        if "nr_online" in L.gvar:
            vals[L.gvar["nr_online"]] = self.n
        for c in range(self.n):
            b = L.base(c)
            for name, v in self.scn.init_pcpu.items():
                vals[b + L.pvar[name]] = v
            vals[b + L.P_HP] = ONLINE
            vals[b + L.P_ONLINE] = 1
            vals[b + L.P_TIMER] = 1
        keep = set(getattr(self.scn, "persist", ()))
        for name in keep:
            vals.pop(L.gvar.get(name, -1), None)
        return vals

    def _new_generation(self) -> int:
        S, m = self.m.S, self.m
        gen = S[self._g_kgen_next]
        m.set(self._g_kgen_next, gen + 1)
        m.set(self._g_kgen, gen)
        for pfn in list(m.own):
            m.set_owner(pfn, None)
        for slot, v in self._initial_kernel_values().items():
            m.set(slot, v)
        return gen

    def _reset_vcpu(self, c: int, rt: int, halted: int, IF: int) -> None:
        m, b = self.m, self.L.base(c)
        for f, v in ((F_IRR, 0), (F_ISR, 0), (F_TPR, 0), (F_IF, IF), (F_HALT, halted), (F_FRAMES, ()),
                     (F_R0, 0), (F_R0 + 1, 0), (F_R0 + 2, 0), (F_R0 + 3, 0), (F_RT, rt), (F_PC, 0)):
            m.set(b + f, v)
        self.hv.on_reset(c)

    # ---------- transitions ----------
    def _kexec(self, c: int) -> None:
        """kexec on vCPU c: a new kernel generation starts on c (module doc)."""
        m = self.m
        L = self.L
        timer = m.S[L.base(c) + L.P_TIMER]     # LAPIC state is hardware: the jump keeps it
        gen = self._new_generation()
        for t in range(self.n):
            b = L.base(t)
            if t == c:
                self._reset_vcpu(t, self.start_routine("bsp"), 0, 0)
                m.set(b + L.P_TIMER, timer)
            else:
                self._reset_vcpu(t, self.start_routine("ap_restart"), 1, 0)
                m.set(b + L.P_HP, OFFLINE)
                m.set(b + L.P_ONLINE, 0)
                m.set(b + L.P_TIMER, 0)
        if "nr_online" in L.gvar:
            m.set(L.gvar["nr_online"], 1)
        m.set(0, ())
        self.note("transition", "kexec", gen, c)

    def _power_cycle(self, c: int) -> None:
        """The VM powers off and boots again: a new generation on a reset partition."""
        m = self.m
        gen = self._new_generation()
        self.hv.partition_reset()
        for t in range(self.n):
            m.reset_cpu_msrs(t)
            self._reset_vcpu(t, self.start_routine("bsp" if t == 0 else "ap"), 0, 1)
        m.set(0, ())
        self.note("transition", "power_cycle", gen, c)

    def _save_image(self, c: int) -> None:
        """swsusp: the running kernel's variables, page owners and owned pages' contents."""
        m, S = self.m, self.m.S
        gen = self.generation()
        slots = self._kernel_var_slots()
        owned = sorted(m.own.items())
        pages = tuple((pfn, bytes(m.ram[pfn])) for pfn, o in owned if o[0] == gen and pfn in m.ram)
        image = (gen, tuple((i, S[i]) for i in slots), tuple(owned), pages)
        m.set(self._g_image, image)
        self.note("transition", "save_image", gen, c)

    def _restore_image(self, c: int, rt: int) -> None:
        """The saved image's kernel is restored and continues on vCPU c at routine rt."""
        m = self.m
        image = m.S[self._g_image]
        if not image:
            self.note("fault", "restore_image without a saved image")
            m.set(self.L.base(c) + F_IF, 0)
            m.set(self.L.base(c) + F_HALT, 1)
            return
        gen, vals, owned, pages = image
        for pfn, content in pages:
            m.new_page(pfn, content)
        for pfn in list(m.own):
            m.set_owner(pfn, None)
        for pfn, o in owned:
            m.set_owner(pfn, o)
        for i, v in vals:
            m.set(i, v)
        m.set(self._g_kgen, gen)
        b = self.L.base(c)
        for f, v in ((F_IF, 0), (F_HALT, 0), (F_FRAMES, ()), (F_RT, rt), (F_PC, 0)):
            m.set(b + f, v)
        self.note("transition", "restore_image", gen, c)

