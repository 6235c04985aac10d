"""Field decoders: the text after ``EVENT:`` as the kernel's TP_printk prints it.

Sources (read from torvalds/linux; docs/import.md cites them):

* ``arch/x86/kvm/trace.h`` (stored copy at commit 029e8c8ad655): kvm_entry
  ``"vcpu %u, rip 0x%lx"`` (newer kernels append ``[immediate exit]``), kvm_exit
  ``"vcpu %u reason %s%s%s rip 0x%lx info1 0x%016llx info2 0x%016llx intr_info 0x%08x
  error_code 0x%08x"`` (older kernels: ``"reason %s rip 0x%lx info %llx %llx"``),
  kvm_inj_virq ``"irq %u"`` (newer: ``"%s 0x%x%s"`` = ``IRQ 0xec`` / ``Soft/INTn 0x..``
  ``[reinjected]``), kvm_apic ``"apic_%s %s = 0x%x"``, kvm_msr ``"msr_%s %x = 0x%llx%s"``,
  kvm_pic_set_irq ``"chip %u pin %u (%s%s)%s"``, kvm_apic_ipi ``"dst %x vec %u
  (%s|%s|%s|%s|%s)"``, kvm_apic_accept_irq ``"apicid %x vec %u (%s|%s)"`` (older kernels
  append `` (coalesced)``), kvm_eoi / kvm_pv_eoi ``"apicid %x vector %d"``, the kvm_hv_*
  events (``key value`` pairs: ``vcpu_id %d sint %u vector %u ...``).
* ``include/trace/events/kvm.h`` (stored copy at commit 0730388b97d2): kvm_set_irq
  ``"gsi %u level %d source %d"``, kvm_ioapic_set_irq ``"pin %u dst %x vec=%u
  (%s|%s|%s%s)%s"`` (older: ``vec %u``), kvm_msi_set_irq ``"dst %u vec %x (%s|%s|%s%s)"``.
* guest: ``arch/x86/include/asm/trace/irq_vectors.h`` ``"vector=%d"``,
  ``arch/x86/include/asm/trace/msr.h`` ``"%x, value %llx%s"`` (`` #GP``), ``include/trace/events/cpuhp.h``
  ``"cpu: %04u target: %3d step: %3d (%ps)"`` / ``"cpu: %04u  state: %3d step: %3d ret: %d"``.

Each decoder returns a tuple of values or raises ValueError (the line is then kept as an
opaque event and reported as garbled). Numbers are range-checked by their digit counts in
the patterns (at most 16 hex or 18 decimal digits: every value fits 64 bits).
"""
from __future__ import annotations

import re

H = r"([0-9a-fA-F]{1,16})"
D = r"(-?\d{1,18})"      # 18 digits: every value fits a signed 64-bit int (an .hvt stores it)

_ENTRY = re.compile(r"vcpu (\d{1,10}), rip 0x" + H)
_EXIT = re.compile(r"(?:vcpu (\d{1,10}) )?reason (.{1,80}?) rip 0x" + H)
_INJ_OLD = re.compile(r"irq (\d{1,3})\b")
_INJ_NEW = re.compile(r"(IRQ|Soft/INTn) 0x" + H + r"( \[reinjected\])?")
_APIC = re.compile(r"apic_(read|write) (\S{1,40}) = 0x" + H)
_MSR = re.compile(r"msr_(read|write) " + H + r" = 0x" + H + r"( \(#GP\))?")
_IPI = re.compile(r"dst " + H + r" vec (\d{1,3}) \((\w{1,10})\|(\w{1,10})\|[\w-]{1,10}\|(\w{1,6})\|([\w-]{1,14})\)")
_ACCEPT = re.compile(r"apicid " + H + r" vec (\d{1,3}) \((\w{1,10})\|(\w{1,6})\)( \(coalesced\))?")
_EOI = re.compile(r"apicid " + H + r" vector (-?\d{1,4})")
_SET_IRQ = re.compile(r"gsi (\d{1,10}) level " + D + r" source " + D)
_IOAPIC = re.compile(r"pin (\d{1,4}) dst " + H + r" vec[ =](\d{1,3}) \((\w{1,10})\|(\w{1,10})\|(\w{1,6})(\|masked)?\)"
                     r"( \(coalesced\))?")
_MSI = re.compile(r"dst (\d{1,10}) vec " + H)
_PIC = re.compile(r"chip (\d{1,3}) pin (\d{1,3}) \((level|edge)(\|masked)?\)( \(coalesced\))?")
_KV = re.compile(r"([a-z_]{1,24})[ =](0x[0-9a-fA-F]{1,16}|-?\d{1,18})\b")
_VEC = re.compile(r"vector=(\d{1,3})\b")
_GMSR = re.compile(H + r", value " + H + r"( #GP)?")
_CPUHP_ENTER = re.compile(r"cpu: (\d{1,6}) target: +(-?\d{1,4}) step: +(-?\d{1,4}) \((.{0,120})\)")
_CPUHP_EXIT = re.compile(r"cpu: (\d{1,6}) +state: +(-?\d{1,4}) step: +(-?\d{1,4}) ret: (-?\d{1,10})")


_HEX = "0123456789abcdefABCDEF"


def kvm_entry(rest):
    # fast path for the common shape (the rip's hex digits, 1..16, end at a space or the end:
    # what the pattern takes there); anything else is decided by the pattern
    if rest.startswith("vcpu "):
        v, sep, r = rest[5:].partition(", rip 0x")
        if sep and v.isdecimal() and len(v) <= 10 and v.isascii():
            h = r.partition(" ")[0]
            if 0 < len(h) <= 16 and not h.strip(_HEX):
                return int(v), int(h, 16)
    m = _ENTRY.match(rest)
    if m is None:
        raise ValueError
    v, rip = m.groups()
    return int(v), int(rip, 16)


def kvm_exit(rest):
    if rest.startswith("vcpu "):
        v, _, r = rest[5:].partition(" ")
        if r.startswith("reason ") and v.isdecimal() and len(v) <= 10 and v.isascii():
            reason, sep, r = r[7:].partition(" rip 0x")
            if sep and 0 < len(reason) <= 80 and "\n" not in reason:
                h = r.partition(" ")[0]
                if 0 < len(h) <= 16 and not h.strip(_HEX):
                    return int(v), reason.strip(), int(h, 16)
    m = _EXIT.match(rest)
    if m is None:
        raise ValueError
    v, reason, rip = m.groups()
    return (int(v) if v is not None else None), reason.strip(), int(rip, 16)


def kvm_inj_virq(rest):
    m = _INJ_NEW.match(rest)
    if m:
        return int(m.group(2), 16), m.group(1) != "IRQ", m.group(3) is not None
    m = _INJ_OLD.match(rest)
    if m is None:
        raise ValueError
    (v,) = m.groups()
    return int(v), False, False


def kvm_apic(rest):
    m = _APIC.match(rest)
    if m is None:
        raise ValueError
    rw, reg, val = m.groups()
    return rw == "write", reg, int(val, 16)


def kvm_msr(rest):
    m = _MSR.match(rest)
    if m is None:
        raise ValueError
    rw, msr, val, gp = m.groups()
    return rw == "write", int(msr, 16), int(val, 16), gp is not None


def kvm_apic_ipi(rest):
    m = _IPI.match(rest)
    if m is None:
        raise ValueError
    dst, vec, dm, destmode, trig, sh = m.groups()
    return int(dst, 16), int(vec) & 0xff, dm, destmode, sh


def kvm_apic_accept_irq(rest):
    m = _ACCEPT.match(rest)
    if m is None:
        raise ValueError
    a, vec, dm, trig, co = m.groups()
    return int(a, 16), int(vec) & 0xff, dm, trig, co is not None


def kvm_eoi(rest):
    m = _EOI.match(rest)
    if m is None:
        raise ValueError
    a, vec = m.groups()
    return int(a, 16), int(vec)


def kvm_set_irq(rest):
    m = _SET_IRQ.match(rest)
    if m is None:
        raise ValueError
    g, lv, src = m.groups()
    return int(g), int(lv), int(src)


def kvm_ioapic_set_irq(rest):
    m = _IOAPIC.match(rest)
    if m is None:
        raise ValueError
    pin, dst, vec, dm, destmode, trig, masked, co = m.groups()
    return int(pin), int(dst, 16), int(vec) & 0xff, trig, masked is not None, co is not None


def kvm_msi_set_irq(rest):
    m = _MSI.match(rest)
    if m is None:
        raise ValueError
    dst, vec = m.groups()
    return int(dst), int(vec, 16) & 0xff


def kvm_pic_set_irq(rest):
    m = _PIC.match(rest)
    if m is None:
        raise ValueError
    chip, pin, trig, masked, co = m.groups()
    return int(chip), int(pin), trig, masked is not None, co is not None


def kvm_hv(rest):
    """kvm_hv_*: (key, value) pairs in print order (vcpu_id, sint, vector, timer, ...)."""
    out = tuple((k, int(v, 0)) for k, v in _KV.findall(rest[:400]))
    if not out:
        raise ValueError
    return out


def guest_vector(rest):
    m = _VEC.match(rest)
    if m is None:
        raise ValueError
    (v,) = m.groups()
    return (int(v),)


def guest_msr(rest):
    m = _GMSR.match(rest)
    if m is None:
        raise ValueError
    msr, val, gp = m.groups()
    return int(msr, 16), int(val, 16), gp is not None


def cpuhp_enter(rest):
    m = _CPUHP_ENTER.match(rest)
    if m is None:
        raise ValueError
    cpu, target, step, fn = m.groups()
    return int(cpu), int(target), int(step), fn


def cpuhp_exit(rest):
    m = _CPUHP_EXIT.match(rest)
    if m is None:
        raise ValueError
    cpu, state, step, ret = m.groups()
    return int(cpu), int(state), int(step), int(ret)


HOST = {
    "kvm_entry": kvm_entry, "kvm_exit": kvm_exit, "kvm_inj_virq": kvm_inj_virq, "kvm_apic": kvm_apic,
    "kvm_msr": kvm_msr, "kvm_apic_ipi": kvm_apic_ipi, "kvm_apic_accept_irq": kvm_apic_accept_irq,
    "kvm_eoi": kvm_eoi, "kvm_pv_eoi": kvm_eoi, "kvm_set_irq": kvm_set_irq, "kvm_ioapic_set_irq": kvm_ioapic_set_irq,
    "kvm_msi_set_irq": kvm_msi_set_irq, "kvm_pic_set_irq": kvm_pic_set_irq,
}
GUEST = {"write_msr": guest_msr, "read_msr": guest_msr, "cpuhp_enter": cpuhp_enter,
         "cpuhp_multi_enter": cpuhp_enter, "cpuhp_exit": cpuhp_exit}
CONTEXT = frozenset({"sched_switch", "sched_wakeup", "sched_waking", "sched_wakeup_new"})


def decoder(name: str):
    """The decoder of event `name`, or None for an event kept opaque."""
    d = HOST.get(name) or GUEST.get(name)
    if d is not None:
        return d
    if name.startswith("kvm_hv_"):
        return kvm_hv
    return None


def is_vector_event(name: str, rest: str) -> bool:
    """irq_vectors:*_entry/_exit (local_timer, reschedule, call_function, ...): ``vector=N``."""
    return (name.endswith("_entry") or name.endswith("_exit")) and rest.startswith("vector=")


# MSR names: the catalogue the hypervisor models register (core/msr.py, core/hypervisors/),
# plus architectural and KVM MSRs no model implements (Linux asm/msr-index.h, asm/kvm_para.h).
import hvdbg.core.hypervisors  # noqa: E402,F401  (the models register their MSRs on import)
from hvdbg.core.msr import MSR_NAMES as _CATALOGUE, MSR_SPECS as _SPECS  # noqa: E402

MSR_NAMES = {0x4b564d00: "MSR_KVM_WALL_CLOCK_NEW", 0x4b564d01: "MSR_KVM_SYSTEM_TIME_NEW", 0x1b: "IA32_APIC_BASE",
             0x6e0: "IA32_TSC_DEADLINE"}
MSR_NAMES.update(_CATALOGUE)
# MSRs whose bit 0 enables a page through which the guest may EOI without an exit
EOI_HINT_MSRS = frozenset(n for n, spec in _SPECS.items() if spec.eoi_hint)

# x2APIC MSR 0x800 + (xAPIC offset >> 4) (SDM 10.12.1.2), named as kvm_apic prints them
X2APIC_REGS = {0x02: "APIC_ID", 0x03: "APIC_LVR", 0x08: "APIC_TASKPRI", 0x0a: "APIC_PROCPRI", 0x0b: "APIC_EOI",
               0x0d: "APIC_LDR", 0x0f: "APIC_SPIV", 0x28: "APIC_ESR", 0x30: "APIC_ICR", 0x32: "APIC_LVTT",
               0x33: "APIC_LVTTHMR", 0x34: "APIC_LVTPC", 0x35: "APIC_LVT0", 0x36: "APIC_LVT1", 0x37: "APIC_LVTERR",
               0x38: "APIC_TMICT", 0x39: "APIC_TMCCT", 0x3e: "APIC_TDCR", 0x3f: "APIC_SELF_IPI"}
for _n in range(8):
    X2APIC_REGS[0x10 + _n] = f"APIC_ISR{_n}"
    X2APIC_REGS[0x18 + _n] = f"APIC_TMR{_n}"
    X2APIC_REGS[0x20 + _n] = f"APIC_IRR{_n}"



def msr_name(msr: int) -> str:
    n = MSR_NAMES.get(msr)
    if n:
        return n
    if 0x800 <= msr <= 0x8ff:
        return "x2APIC " + X2APIC_REGS.get(msr - 0x800, f"reg 0x{(msr - 0x800) << 4:x}")
    return f"MSR 0x{msr:x}"
