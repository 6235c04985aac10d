"""hvdbg import / export: text traces of a KVM host and a Linux guest (issue 13).

Fixtures (tests/fixtures/import/, written by make_fixtures.py from the kernel's TP_printk
formats): host-stuck in three line formats (a reschedule IPI 0xfd left in ISR with 0xec and
0xfb pending behind it, an IPI to a vCPU that never accepts it), guest-offline in two (CPU 1
never finishes going offline).
"""
import gzip
import json
import lzma
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hvdbg.cli import main
from hvdbg.trace_import import ImportedTrace, import_trace

FIX = Path(__file__).resolve().parent / "fixtures" / "import"
HOST = ["host-stuck.trace.txt", "host-stuck.trace-cmd.txt", "host-stuck.perf-script.txt"]
GUEST = ["guest-offline.trace.txt", "guest-offline.trace-pipe.txt"]
FORMAT = {"host-stuck.trace.txt": "trace", "host-stuck.trace-cmd.txt": "trace-cmd",
          "host-stuck.perf-script.txt": "perf-script"}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def irr(tr, i, v):
    return dict(tr.state_at(i).vcpus[v].irr)


def isr(tr, i, v):
    return dict(tr.state_at(i).vcpus[v].isr)


# -- parsing -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", HOST)
def test_host_formats_detected_and_parsed(name):
    tr = import_trace(FIX / name)
    assert tr.files[0].format == FORMAT[name]
    assert tr.files[0].role == "host"
    assert len(tr.events) == 51
    assert not tr.skipped and not tr.counts["garbled"]
    assert tr.kinds["kvm_exit"] == 14 and tr.kinds["kvm_fpu"] == 1       # unknown event kept
    e = tr.events[9]
    assert e.name == "kvm_fpu" and e.args is None and e.text == "load"
    assert tr.events[34].name == "kvm_inj_virq" and tr.events[34].vcpu == 1   # vCPU from the thread


@pytest.mark.parametrize("name", HOST)
def test_reconstructed_irr_isr_at_chosen_events(name):
    tr = import_trace(FIX / name)
    assert irr(tr, 3, 0) == {0x34: 3}                      # IOAPIC pin 4 -> vector 0x34 accepted
    assert isr(tr, 4, 0) == {0x34: 4} and irr(tr, 4, 0) == {}
    assert isr(tr, 8, 0) == {}                             # kvm_eoi
    assert irr(tr, 17, 1) == {0xfd: 17}                    # IPI accepted
    assert isr(tr, 20, 1) == {0xfd: 20} and irr(tr, 20, 1) == {}
    assert isr(tr, 23, 1) == {}                            # kvm_pv_eoi
    assert isr(tr, 34, 1) == {0xfd: 34}
    assert irr(tr, 42, 1) == {0xec: 37, 0xfb: 42}
    st = tr.state_at(50)
    v1 = st.vcpus[1]
    assert v1.msrs[0x40000073][:2] == (0, 26)
    assert v1.exit == ("HLT", 50) and v1.in_guest is False
    assert st.vcpus[0].apic["APIC_ICR"] == (0xfd, 47)       # x2APIC MSR 0x830 decoded as the ICR
    assert [f[:2] for f in tr.flows] == [(16, 17), (30, 31), (41, 42)]


def test_state_at_is_the_same_with_any_checkpoint_spacing():
    a = ImportedTrace([FIX / HOST[0]], checkpoint=4)
    b = ImportedTrace([FIX / HOST[0]], checkpoint=100000)
    for i in range(len(a.events)):
        sa, sb = a.state_at(i), b.state_at(i)
        assert {n: v.to_dict() for n, v in sa.vcpus.items()} == {n: v.to_dict() for n, v in sb.vcpus.items()}, i
    assert a.index_at(1907374.5047) == 34


def test_breakpoints_and_watchpoints_for_time_travel():
    tr = ImportedTrace([FIX / HOST[0]], checkpoint=8)
    assert tr.find(0, name="kvm_inj_virq") == 4
    assert tr.find(20, vector=0xfd, vcpu=1) == 23
    assert tr.find(34, vector=0xfd, forward=False) == 31
    assert tr.find(0, msr=0x40000073) == 12 and tr.find(12, msr=0x40000073) == 26
    assert tr.find(48, name="kvm_inj_virq") is None
    assert tr.watch(0, 1, "isr", 0xfd) == 20
    assert tr.watch(20, 1, "isr", 0xfd) == 23
    assert tr.watch(23, 1, "isr", 0xfd) == 34 and tr.watch(34, 1, "isr", 0xfd) is None
    assert tr.watch(50, 1, "isr", 0xfd, forward=False) == 34
    assert tr.watch(33, 1, "isr", 0xfd, forward=False) == 23
    assert tr.watch(0, 1, "msr", 0x40000073) == 12 and tr.watch(50, 1, "msr", 0x40000073, forward=False) == 26
    assert tr.watch(0, 1, "irr", 0xec) == 37
    with pytest.raises(ValueError):
        tr.watch(0, 1, "nope")


@pytest.mark.parametrize("name", HOST)
def test_findings_name_vector_vcpu_and_events(name):
    tr = import_trace(FIX / name)
    got = {(f.kind, f.vcpu, f.vector): f.events for f in tr.findings}
    assert got == {
        ("accepted-not-injected", 1, 0xec): (37, 34, 45),
        ("accepted-not-injected", 1, 0xfb): (42, 34, 45),
        ("injected-not-eoied", 1, 0xfd): (34, 37, 42, 45),
        ("ipi-not-accepted", 2, 0xfd): (48,),
    }
    stuck = next(f for f in tr.findings if f.kind == "injected-not-eoied")
    assert "0xec (accepted at event 37)" in stuck.text and "0xfb (accepted at event 42)" in stuck.text


@pytest.mark.parametrize("name", GUEST)
def test_guest_offline(name):
    tr = import_trace(FIX / name)
    assert tr.files[0].role == "guest" and len(tr.events) == 17
    assert [(f.kind, f.vcpu, f.events) for f in tr.findings] == [("hotplug-stalled", 1, (7,))]
    assert "takedown_cpu" in tr.findings[0].text
    st = tr.state_at(5)
    assert st.vcpus[1].guest_isr == [(0xfd, 5)]
    assert tr.state_at(6).vcpus[1].guest_isr == []
    assert st.vcpus[1].msrs[0x40000073] == (0, 3, "write")
    assert st.vcpus[1].hotplug["phase"] == "exit" and st.vcpus[1].hotplug["state"] == 175
    h = tr.state_at(16).vcpus[1].hotplug
    assert (h["phase"], h["step"], h["callback"]) == ("enter", 65, "takedown_cpu")
    assert tr.events[10].name == "irq_handler_entry" and tr.events[10].args is None    # kept opaque
    assert "vector 0xfd starts" in tr.describe(5)


# PV EOI armed (MSR_KVM_PV_EOI_EN), 0xec injected and the guest entered: its EOI may then need
# no exit (the first 5 lines); then an exit and the kvm_pv_eoi that clears it
PV_EOI_LINES = [
    " q-10 [000] 1.000000: kvm_exit: vcpu 0 reason MSR_WRITE rip 0x1000 info1 0x0 info2 0x0 "
    "intr_info 0x00000000 error_code 0x00000000",
    " q-10 [000] 1.000001: kvm_msr: msr_write 4b564d04 = 0x5001",
    " q-10 [000] 1.000002: kvm_apic_accept_irq: apicid 0 vec 236 (Fixed|edge)",
    " q-10 [000] 1.000003: kvm_inj_virq: IRQ 0xec",
    " q-10 [000] 1.000004: kvm_entry: vcpu 0, rip 0xffffffff81000000",
    " q-10 [000] 1.000005: kvm_exit: vcpu 0 reason HLT rip 0xffffffff81000002 info1 0x0 info2 0x0 "
    "intr_info 0x00000000 error_code 0x00000000",
    " q-10 [000] 1.000006: kvm_pv_eoi: apicid 0 vector 236",
]


def test_pv_eoi_armed_marks_isr_unknown(tmp_path):
    p = tmp_path / "pv.txt"
    p.write_text("\n".join(PV_EOI_LINES) + "\n")
    tr = import_trace(p)
    assert tr.state_at(3).vcpus[0].unknown_isr() == set()       # injected, not yet in the guest
    assert tr.state_at(4).vcpus[0].unknown_isr() == {0xec}
    assert "unknown" in tr.state_at(4).vcpus[0].to_dict()["isr"]["0xec"]
    assert tr.state_at(5).vcpus[0].unknown_isr() == set()
    assert isr(tr, 6, 0) == {}
    assert not tr.findings


def test_apicv_trace_has_no_injection_findings(tmp_path):
    p = tmp_path / "apicv.txt"
    p.write_text("".join(f" q-10 [000] 1.00000{k}: kvm_apic_accept_irq: apicid 0 vec 236 (Fixed|edge)\n"
                         f" q-10 [000] 1.00000{k}: kvm_entry: vcpu 0, rip 0xffffffff81000000\n" for k in range(3)))
    tr = import_trace(p)
    assert tr.apicv and not [f for f in tr.findings if f.kind == "accepted-not-injected"]


def test_kernel_format_variants_and_lost_events(capsys, tmp_path):
    """Older and newer TP_printk variants: kvm_exit without vcpu (vCPU from the thread),
    kvm_entry with [immediate exit], kvm_inj_virq 'IRQ 0x..' / [reinjected], coalesced
    acceptances, kvm_ioapic_set_irq 'vec N', lost-events markers, SVM exit reasons."""
    p = tmp_path / "v.txt"
    p.write_text("\n".join([
        "cpus=2",
        "   CPU 1/KVM-41    [001] 10.000001: kvm_entry:            vcpu 1, rip 0xffffffff81000000[immediate exit]",
        "   CPU 1/KVM-41    [001] 10.000002: kvm_exit:             reason hlt rip 0xffffffff81000002 info 0 0",
        "   CPU 1/KVM-41    [001] 10.000003: kvm_ioapic_set_irq:   pin 4 dst 1 vec 52 (Fixed|physical|edge|masked)",
        "CPU:1 [LOST 12 EVENTS]",
        "   CPU 1/KVM-41    [001] 10.000004: kvm_apic_accept_irq:  apicid 1 vec 52 (Fixed|edge) (coalesced)",
        "   CPU 1/KVM-41    [001] 10.000005: kvm_inj_virq:         IRQ 0x34 [reinjected]",
        "   CPU 1/KVM-41    [001] 10.000006: kvm_hv_synic_set_irq: vcpu_id 1 sint 2 vector 243 ret 0",
    ]) + "\n")
    tr = import_trace(p)
    assert tr.files[0].format == "trace-cmd"
    assert [e.vcpu for e in tr.events] == [1, 1, 1, 1, 1, 1]
    assert tr.events[1].args == (None, "hlt", 0xffffffff81000002)
    assert tr.events[2].args[2] == 52 and tr.events[2].args[4] is True
    assert tr.events[4].args == (0x34, False, True)
    assert dict(tr.events[5].args) == {"vcpu_id": 1, "sint": 2, "vector": 243, "ret": 0}
    assert isr(tr, 4, 1) == {0x34: 4} and tr.state_at(1).vcpus[1].exit == ("hlt", 1)
    code, out, _ = run(capsys, "import", p)
    assert code == 0 and "1 lost-events markers" in out and "v.txt:5: events lost here" in out


def test_integer_timestamps_of_counter_clocks(tmp_path):
    p = tmp_path / "tsc.txt"
    p.write_text("   <idle>-0     [001] d.h.. 1234567890123: local_timer_entry: vector=236\n"
                 "   <idle>-0     [001] d.h.. 1234567890999: local_timer_exit: vector=236\n")
    tr = import_trace(p)
    assert [e.ts for e in tr.events] == [1234567890123.0, 1234567890999.0]
    assert tr.state_at(0).vcpus[1].guest_isr == [(0xec, 0)]


def test_no_stuck_finding_without_evidence(tmp_path):
    """A vector accepted or injected just before the end, with nothing holding it, is not stuck;
    after MIN_RUNS guest entries with no injection / EOI it is."""
    from hvdbg.trace_import.model import MIN_RUNS
    head = [" q-10 [000] 1.000000: kvm_entry: vcpu 0, rip 0x1000",
            " q-10 [000] 1.000001: kvm_apic_accept_irq: apicid 0 vec 236 (Fixed|edge)",
            " q-10 [000] 1.000002: kvm_apic_accept_irq: apicid 0 vec 34 (Fixed|edge)",
            " q-10 [000] 1.000003: kvm_inj_virq: irq 34"]
    runs = [f" q-10 [000] 1.0001{k:02d}: kvm_entry: vcpu 0, rip 0x1000" for k in range(MIN_RUNS)]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(head + runs[:1]) + "\n")
    assert import_trace(p).findings == []
    p.write_text("\n".join(head + runs) + "\n")
    got = {(f.kind, f.vector) for f in import_trace(p).findings}
    assert got == {("accepted-not-injected", 0xec), ("injected-not-eoied", 0x22)}


def test_xapic_icr_writes_send_ipis_when_kvm_apic_ipi_is_not_traced(tmp_path):
    p = tmp_path / "icr.txt"
    p.write_text("\n".join([
        " q-10 [000] 1.000001: kvm_entry: vcpu 0, rip 0x1000",
        " q-11 [001] 1.000001: kvm_entry: vcpu 1, rip 0x1000",
        " q-10 [000] 1.000002: kvm_apic: apic_write APIC_ICR2 = 0x1000000",
        " q-10 [000] 1.000003: kvm_apic: apic_write APIC_ICR = 0xfb",
        " q-10 [000] 1.000004: kvm_apic_accept_irq: apicid 1 vec 251 (Fixed|edge)",
        " q-10 [000] 1.000005: kvm_apic: apic_write APIC_TASKPRI = 0x20",
        " q-10 [000] 1.000006: kvm_apic: apic_write APIC_ICR = 0xfc",
    ]) + "\n")
    tr = import_trace(p)
    assert tr.flows == [(3, 4, 0xfb)]
    assert tr.state_at(5).vcpus[0].tpr == (0x20, 5)
    assert [(f.kind, f.vcpu, f.vector, f.events) for f in tr.findings if f.kind == "ipi-not-accepted"] == \
        [("ipi-not-accepted", 1, 0xfc, (6,))]


def test_crlf_gzip_xz_and_offset_merge(tmp_path):
    text = (FIX / HOST[0]).read_bytes()
    (tmp_path / "crlf.txt").write_bytes(text.replace(b"\n", b"\r\n"))
    (tmp_path / "h.gz").write_bytes(gzip.compress(text))
    (tmp_path / "h.xz").write_bytes(lzma.compress(text))
    ref = import_trace(FIX / HOST[0])
    for f in ("crlf.txt", "h.gz", "h.xz"):
        tr = import_trace(tmp_path / f)
        assert [e[:8] for e in tr.events] == [e[:8] for e in ref.events], f
        assert [x.to_dict() for x in tr.findings] == [x.to_dict() for x in ref.findings]
    both = import_trace([FIX / HOST[0], FIX / GUEST[0]], offsets={"guest": 1907374.5 - 120.0})
    assert len(both.events) == 68
    ts = [e.ts for e in both.events]
    assert ts == sorted(ts)
    assert {f.kind for f in both.findings} >= {"hotplug-stalled", "injected-not-eoied"}


# -- the command line ------------------------------------------------------------------------
def test_cli_import_summary_at_and_json(capsys, tmp_path):
    code, out, _ = run(capsys, "import", FIX / HOST[1])
    assert code == 0
    assert "trace-cmd, host trace" in out and "[injected-not-eoied] vCPU 1: vector 0xfd injected at event 34" in out
    assert "vCPU 1: IRR [0xec@37, 0xfb@42]; ISR [0xfd@34]" in out
    code, out, _ = run(capsys, "import", FIX / HOST[1], "--at", "20")
    assert code == 0 and "state after event 20" in out and "vCPU 1: IRR []; ISR [0xfd@20]" in out
    code, out, _ = run(capsys, "import", FIX / HOST[1], "--at", "@1907374.5047")
    assert code == 0 and "state after event 34" in out
    o = tmp_path / "out.json"
    code, out, _ = run(capsys, "import", FIX / HOST[2], "-o", o, "--json")
    assert code == 0
    rep = json.loads(o.read_text())
    assert rep == json.loads(out)
    assert rep["state"]["1"]["isr"]["0xfd"]["set_by"] == 34
    assert {f["kind"] for f in rep["findings"]} == {"accepted-not-injected", "injected-not-eoied", "ipi-not-accepted"}
    code, out, _ = run(capsys, "import", FIX / HOST[0], FIX / GUEST[0], "--offset", "guest=+1907254.5")
    assert code == 0 and "timestamps +1907254.500000000 s" in out and "[hotplug-stalled]" in out


@pytest.mark.parametrize("argv, msg", [
    (["import", "NOPE"], "cannot read"),
    (["import", "DIR"], "not a regular file"),
    (["import", "JUNK"], "no trace event found"),
    (["import", "HOST", "--at", "999"], "the trace has events 0..50"),
    (["import", "HOST", "--at", "x"], "expected an event index"),
    (["import", "HOST", "--offset", "guest=abc"], "expected host="),
    (["import", "HOST", "--format", "perf-script"], "no trace event found"),
    (["export", "HOST"], "--perfetto"),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, tmp_path, argv, msg):
    (tmp_path / "junk").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(5000)))
    sub = {"NOPE": tmp_path / "nope", "DIR": tmp_path, "JUNK": tmp_path / "junk", "HOST": FIX / HOST[0]}
    code, out, err = run(capsys, *[sub.get(a, a) for a in argv])
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and msg in err


def test_skipped_lines_are_reported_with_line_numbers(capsys, tmp_path):
    lines = (FIX / HOST[0]).read_text().splitlines()
    lines[10] = lines[10][:25]                                   # truncated event line
    lines[12] = lines[12].replace("vcpu 0", "vcpu 99999999999999999999999")
    lines.insert(20, "x" * 100000)                               # very long line
    lines.insert(30, "\x00\x01\xff binary")
    p = tmp_path / "bad.txt"
    p.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, "import", p)
    assert code == 0
    assert "bad.txt:11: not an event line" in out
    assert "bad.txt:13: kvm_" in out and "do not match" in out
    assert "bad.txt:21: line longer than 4096 characters: cut" in out
    assert "bad.txt:31: not an event line" in out


def test_fuzz_random_truncated_huge_and_binary_lines(capsys, tmp_path):
    rnd = random.Random(13)
    base = [ln for f in HOST + GUEST for ln in (FIX / f).read_text().splitlines()]
    for k in range(60):
        out = []
        for _ in range(rnd.randrange(1, 40)):
            ln = rnd.choice(base)
            r = rnd.random()
            if r < 0.2:
                ln = ln[:rnd.randrange(len(ln) + 1)]
            elif r < 0.35:
                ln = " ".join(w if rnd.random() < 0.7 else str(rnd.getrandbits(rnd.choice((8, 64, 300))))
                              for w in ln.split(" "))
            elif r < 0.45:
                ln = ln.replace("0x", "0x" + "f" * rnd.randrange(1, 40), 1)
            elif r < 0.55:
                ln = "".join(chr(rnd.randrange(1, 0x3000)) for _ in range(rnd.randrange(80)))
            elif r < 0.6:
                i = rnd.randrange(len(ln) + 1)
                ln = ln[:i] + "\n" + ln[i:]                       # wrapped line
            out.append(ln)
        p = tmp_path / f"f{k}.txt"
        data = "\n".join(out).encode("utf-8", "surrogatepass")
        if k % 7 == 0:
            data += bytes(rnd.randrange(256) for _ in range(300))
        p.write_bytes(data)
        code, o, e = run(capsys, "import", p)
        assert code in (0, 2), (k, o, e)
        if code == 2:
            assert len(e.strip().splitlines()) == 1
        code, o, e = run(capsys, "import", p, "--json")
        assert code in (0, 2)


def test_cut_or_damaged_compressed_files(capsys, tmp_path):
    text = (FIX / HOST[0]).read_bytes() * 40              # ~390 KiB: more than one 64 KiB block
    gz = gzip.compress(text)
    (tmp_path / "cut.gz").write_bytes(gz[:len(gz) * 2 // 3])
    xz = bytearray(lzma.compress(text))
    xz[len(xz) // 2] ^= 0xff
    (tmp_path / "bad.xz").write_bytes(bytes(xz))
    (tmp_path / "fake.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    code, out, err = run(capsys, "import", tmp_path / "cut.gz")
    assert code == 0 and "the rest of the file cannot be read" in out
    code, out, err = run(capsys, "import", tmp_path / "bad.xz")
    assert code in (0, 2) and (code == 2 or "cannot be read" in out)
    code, out, err = run(capsys, "import", tmp_path / "fake.gz")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_import_through_the_console_script():
    p = subprocess.run([sys.executable, "-m", "hvdbg", "import", str(FIX / GUEST[1])], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "[hotplug-stalled] CPU 1" in p.stdout


# -- export ----------------------------------------------------------------------------------
def _read_pftrace(path):
    pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")
    t = pb.Trace.FromString(Path(path).read_bytes())
    TE = pb.TrackEvent
    tracks, slices, open_, flows, terms, counters, instants = {}, [], {}, [], [], {}, []
    for p in t.packet:
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            tracks[d.uuid] = (d.name, d.parent_uuid if d.HasField("parent_uuid") else None, d.HasField("counter"))
        if p.HasField("track_event"):
            e = p.track_event
            assert e.track_uuid in tracks                         # described before use
            if e.type == TE.TYPE_SLICE_BEGIN:
                open_.setdefault(e.track_uuid, []).append((e.name, p.timestamp))
            elif e.type == TE.TYPE_SLICE_END:
                name, t0 = open_[e.track_uuid].pop()
                slices.append((tracks[e.track_uuid][0], name, t0, p.timestamp))
            elif e.type == TE.TYPE_COUNTER:
                counters.setdefault(tracks[e.track_uuid][0], []).append((p.timestamp, e.counter_value))
            elif e.type == TE.TYPE_INSTANT:
                instants.append((tracks[e.track_uuid][0], e.name))
            flows += list(e.flow_ids)
            terms += list(e.terminating_flow_ids)
    assert not any(open_.values())                               # every slice closed
    return tracks, slices, flows, terms, counters, instants


def test_export_imported_host_trace_perfetto_and_chrome(capsys, tmp_path):
    pytest.importorskip("perfetto")
    pf, cj = tmp_path / "h.pftrace", tmp_path / "h.json"
    code, out, _ = run(capsys, "export", FIX / HOST[0], "--perfetto", pf, "--chrome-json", cj)
    assert code == 0 and "3 flows" in out
    tracks, slices, flows, terms, counters, instants = _read_pftrace(pf)
    names = {n for n, _, _ in tracks.values()}
    assert {"vCPU 0", "vCPU 1", "vCPU 1 IRR popcount", "vCPU 1 ISR popcount"} <= names
    handler = [(tr, n) for tr, n, _, _ in slices if n.startswith("vector")]
    assert handler == [("vCPU 0", "vector 0x34"), ("vCPU 1", "vector 0xfd"), ("vCPU 1", "vector 0xfd")]
    assert sorted(flows) == sorted(terms) == [1, 2, 3]
    assert counters["vCPU 1 IRR popcount"][-1][1] == 2 and counters["vCPU 1 ISR popcount"][-1][1] == 1
    assert ("vCPU 1", "wrmsr HV_X64_MSR_VP_ASSIST_PAGE = 0x0") in instants
    ev = json.loads(cj.read_text())["traceEvents"]
    assert sum(e["ph"] == "B" for e in ev) == sum(e["ph"] == "E" for e in ev) == len(slices)
    assert sum(e["ph"] == "s" for e in ev) == sum(e["ph"] == "f" for e in ev) == 3
    # an existing file that is not ours is never overwritten
    other = tmp_path / "other.pftrace"
    other.write_text("precious")
    code, _, err = run(capsys, "export", FIX / HOST[0], "--perfetto", other)
    assert code == 2 and other.read_text() == "precious"
    code, _, err = run(capsys, "export", FIX / HOST[0], "--perfetto", pf)       # ours: replaced
    assert code == 0


def test_export_counter_clock_and_negative_offsets(capsys, tmp_path):
    pytest.importorskip("perfetto")
    p = tmp_path / "tsc.txt"
    p.write_text("   <idle>-0     [001] d.h.. 99999999999999999999: local_timer_entry: vector=236\n"
                 "   <idle>-0     [001] d.h.. 99999999999999999999: local_timer_exit: vector=236\n")
    assert run(capsys, "export", p, "--perfetto", tmp_path / "a.pftrace")[0] == 0
    _, slices, *_ = _read_pftrace(tmp_path / "a.pftrace")
    assert slices and slices[0][2] == (1 << 63) - 1
    code, out, err = run(capsys, "export", FIX / GUEST[0], "--offset", "guest=-500", "--perfetto", tmp_path / "b.pftrace",
                         "--chrome-json", tmp_path / "b.json")
    assert code == 0, err
    _, slices, *_ = _read_pftrace(tmp_path / "b.pftrace")
    assert min(t0 for _, _, t0, _ in slices) >= 0


def test_export_guest_trace_hotplug_instants(capsys, tmp_path):
    pytest.importorskip("perfetto")
    pf = tmp_path / "g.pftrace"
    assert run(capsys, "export", FIX / GUEST[0], "--perfetto", pf)[0] == 0
    tracks, slices, flows, terms, counters, instants = _read_pftrace(pf)
    assert ("vCPU 1", "hotplug step 65 (takedown_cpu) -> 0") in instants
    assert ("CPU 1 guest handlers", "reschedule 0xfd") in [(t, n) for t, n, _, _ in slices]


def test_simulated_seed_run_exported_and_reread_matches_its_journal(capsys, tmp_path):
    pytest.importorskip("perfetto")
    from hvdbg.recording import load
    hvt = Path(__file__).resolve().parent.parent / "traces" / "seed-hang.hvt"
    pf = tmp_path / "s.pftrace"
    assert run(capsys, "export", hvt, "--perfetto", pf)[0] == 0
    tracks, slices, flows, terms, counters, instants = _read_pftrace(pf)
    L = load(str(hvt))
    evs = list(L.timeline.events)
    last_ts = len(evs) * 1000
    delivers = {}
    for ev in evs:
        for n in ev.notes:
            if n[0] == "deliver":
                delivers[ev.cpu] = delivers.get(ev.cpu, 0) + 1
    handler = {}
    for tr, name, t0, t1 in slices:
        if name.startswith("vector"):
            handler[tr] = handler.get(tr, 0) + 1
    assert handler == {f"vCPU {c}": k for c, k in delivers.items()}
    # event by event: every handler slice starts at the step of its delivery and ends at the
    # step of its EOI (or lasts to the end), rebuilt here from the journal's notes alone
    want, open_ = [], {}
    for ev in evs:
        for n in ev.notes:
            if n[0] == "deliver" and (ev.cpu, n[1]) not in open_:
                open_[(ev.cpu, n[1])] = len(want)
                want.append([f"vCPU {ev.cpu}", f"vector 0x{n[1]:02x}", ev.step * 1000, None])
            elif n[0] == "eoi" and n[1] >= 0 and (ev.cpu, n[1]) in open_:
                want[open_.pop((ev.cpu, n[1]))][3] = ev.step * 1000
    got = sorted([tr, n, t0, t1] for tr, n, t0, t1 in slices if n.startswith("vector"))
    assert [w[:3] for w in sorted(want, key=lambda w: (w[0], w[1], w[2]))] == [g[:3] for g in got]
    for w in want:
        g = next(g for g in got if g[:3] == w[:3])
        assert w[3] is None and g[3] >= last_ts or g[3] == w[3], (w, g)
    lands = sum(ev.act[0] == "land" for ev in evs)
    assert len(set(terms)) == lands and set(terms) <= set(flows)
    # the slice of the stuck vector: delivered and never EOI'd, so it lasts to the end
    assert any(n == "vector 0xfd" and t1 >= last_ts for _, n, _, t1 in slices)
    assert any(n.startswith("eoi skipped") for _, n in instants)
    assert {"vCPU 0 routines", "vCPU 1 routines"} <= {n for n, _, _ in tracks.values()}


def test_export_without_perfetto_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "perfetto", None)
    monkeypatch.setitem(sys.modules, "perfetto.trace_builder.proto_builder", None)
    code, _, err = run(capsys, "export", FIX / HOST[0], "--perfetto", tmp_path / "x.pftrace")
    assert code == 2 and "hvdbg[perfetto]" in err
    code, _, err = run(capsys, "export", FIX / HOST[0], "--chrome-json", tmp_path / "x.json")
    assert code == 0


# -- imported traces as .hvt files (hvdbg import -o OUT.hvt) ------------------------------------

def _messy_host(tmp_path):
    """The host fixture with a garbled event, a line that is not an event, a kvm_hv event and an
    opaque event: everything an .hvt must carry."""
    lines = (FIX / HOST[0]).read_text().splitlines()
    head = next(ln for ln in lines if ": kvm_" in ln).split("kvm_")[0]
    lines[12] = lines[12].replace("vcpu 0", "vcpu x")                       # garbled: kept as text
    lines.insert(8, "not an event at all")
    lines.insert(9, head + "kvm_hv_synic_set_irq: vcpu_id 1 sint 2 vector 0x31 ret 0")
    lines.insert(10, head + "kvm_hv_unknown_thing: whatever text 0x12")
    lines.insert(11, head + "kvm_hv_notify_entry: vector=49")
    lines.insert(12, head + "kvm_set_irq: gsi 52 level 0 source 0")     # == kvm_inj_virq's (52, False, False)
    p = tmp_path / "messy.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def _same_trace(a, b):
    assert len(a.events) == len(b.events)
    assert list(a.events) == list(b.events)
    assert [repr(e) for e in a.events] == [repr(e) for e in b.events]     # types too: True == 1, but not here
    assert a.files == b.files and a.skipped == b.skipped and a.counts == b.counts
    assert [f.to_dict() for f in a.findings] == [f.to_dict() for f in b.findings]
    assert a.flows == b.flows and a.kinds == b.kinds and a.apicv == b.apicv
    for i in range(0, len(a.events), 7):
        sa, sb = a.state_at(i), b.state_at(i)
        assert {n: (dict(v.irr), dict(v.isr), v.msrs, v.hotplug) for n, v in sa.vcpus.items()} == \
               {n: (dict(v.irr), dict(v.isr), v.msrs, v.hotplug) for n, v in sb.vcpus.items()}
    assert a.summary() == b.summary()


def test_imported_hvt_round_trip(capsys, tmp_path):
    from hvdbg.trace_import import hvt
    host = _messy_host(tmp_path)
    guest = tmp_path / "g.txt.gz"
    guest.write_bytes(gzip.compress((FIX / GUEST[0]).read_bytes()))
    out = tmp_path / "run.hvt"
    code, text, _ = run(capsys, "import", host, guest, "--offset", "guest=+1907254.5", "-o", out)
    assert code == 0 and "[hotplug-stalled]" in text
    assert out.read_bytes()[:8] == b"HVDBGTR\0" and not (tmp_path / "run.hvt.partial").exists()
    orig = import_trace([host, guest], offsets={"guest": 1907254.5})
    back = hvt.read(out)
    assert orig.counts["garbled"] == 1 and orig.counts["skipped"] == 1
    assert [e.args[0] for e in orig.events if e.name == "kvm_hv_synic_set_irq"] == [("vcpu_id", 1)]
    assert [e.args for e in orig.events if e.name == "kvm_hv_unknown_thing"] == [(("text", 0x12),)]
    assert {e.text for e in orig.events if e.name == "kvm_fpu"} == {"load"}
    assert [e.args for e in orig.events if e.name == "kvm_hv_notify_entry"] == [(49,)]
    _same_trace(orig, back)
    assert back.stored_summary == orig.summary()
    j = next(f.events[0] for f in orig.findings if f.kind == "injected-not-eoied")
    assert back.state_at(j).vcpus[1].isr == orig.state_at(j).vcpus[1].isr == {0xfd: j}
    assert back.state_at(j + 3).vcpus[1].irr == orig.state_at(j + 3).vcpus[1].irr
    # the hvdbg commands that read it
    code, text, err = run(capsys, "info", out)
    assert code == 0 and "imported trace" in text and "guest trace" in text and "[hotplug-stalled]" in text, err
    code, text, _ = run(capsys, "info", out, "--json")
    info = json.loads(text)
    assert code == 0 and info["kind"] == "imported" and info["events"] == len(orig.events) and not info["replayable"]
    code, text, err = run(capsys, "export", out, "--chrome-json", tmp_path / "a.json")
    assert code == 0, err
    code, text, err = run(capsys, "export", host, guest, "--offset", "guest=+1907254.5", "--chrome-json",
                          tmp_path / "b.json")
    assert code == 0, err
    a, b = (json.loads((tmp_path / n).read_text())["traceEvents"] for n in ("a.json", "b.json"))
    assert a[1:] == b[1:] and len(a) > 20                 # [0] names the process after the input file
    # rewriting our own .hvt is fine; another file is never overwritten; JSON by suffix
    assert run(capsys, "import", host, "-o", out)[0] == 0
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "import", host, "-o", tmp_path / "notes.txt")
    assert code == 2 and "not an hvdbg trace" in err and (tmp_path / "notes.txt").read_text() == "mine"
    code, _, _ = run(capsys, "import", host, "-o", tmp_path / "s.JSON")
    assert code == 0 and json.loads((tmp_path / "s.JSON").read_text())["hvdbg_import"] == 1


def test_imported_hvt_is_refused_by_the_commands_that_replay(capsys, tmp_path):
    out = tmp_path / "x.hvt"
    assert run(capsys, "import", FIX / HOST[0], "-o", out)[0] == 0
    for argv in (["replay", "--verify", out], ["replay", out], ["run", out], ["show", out], ["import", out]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert "imported trace: no model to replay" in err or (argv[0] == "import" and "an imported trace already" in err)


def _hvt_frames(data: bytes):
    from hvdbg.trace import format as F
    pos, out = F.FILE_HEAD_SIZE, []
    while pos < len(data) - F.TAIL_SIZE:
        length, _, kind = F.FRAME_HEAD.unpack_from(data, pos)
        out.append((pos, kind, data[pos + F.FRAME_HEAD_SIZE:pos + F.FRAME_HEAD_SIZE + length]))
        pos += F.FRAME_HEAD_SIZE + length
    return out


def test_imported_hvt_damage_is_one_line_with_the_byte_offset(capsys, tmp_path):
    import re
    out = tmp_path / "x.hvt"
    assert run(capsys, "import", FIX / HOST[0], FIX / GUEST[0], "-o", out)[0] == 0
    good = out.read_bytes()
    bad = tmp_path / "bad.hvt"
    rnd = random.Random(5)
    cuts = sorted({1, 8, 11, 12, 20, len(good) - 17, len(good) - 1} | {rnd.randrange(len(good)) for _ in range(25)})
    cases = [good[:n] for n in cuts] + [good + b"x"]
    for _ in range(40):
        b = bytearray(good)
        b[rnd.randrange(8, len(b))] ^= 1 << rnd.randrange(8)
        cases.append(bytes(b))
    for data in cases:
        bad.write_bytes(data)
        for argv in (["info", bad], ["export", bad, "--chrome-json", tmp_path / "o.json"]):
            code, o, err = run(capsys, *argv)
            assert code == 2, (len(data), o, err)
            assert len(err.strip().splitlines()) == 1
            assert re.search(r"byte \d+", err) or "no trace event found" in err, err


def test_imported_hvt_hostile_frames_with_valid_crcs(capsys, tmp_path):
    """Frames whose CRC holds but whose content lies: refused whole, one line, nothing used."""
    import zlib

    import msgpack

    from hvdbg.trace import format as F
    from hvdbg.trace_import import hvt
    out = tmp_path / "x.hvt"
    assert run(capsys, "import", FIX / HOST[0], "-o", out)[0] == 0
    good = out.read_bytes()
    frames = _hvt_frames(good)
    (hoff, _, hpay), (eoff, _, epay) = frames[0], frames[1]
    start, n, names, cols, vlen, vals = msgpack.unpackb(epay)
    values = msgpack.unpackb(zlib.decompress(vals))

    def with_events(**kw):
        rec = {**dict(start=start, n=n, names=names, cols=cols, vlen=vlen, vals=vals), **kw}
        if "values" in kw:
            rec["vals"] = zlib.compress(msgpack.packb(rec.pop("values")))
            rec["vlen"] = len(zlib.decompress(rec["vals"]))
        p = msgpack.packb([rec["start"], rec["n"], rec["names"], rec["cols"], rec["vlen"], rec["vals"]])
        return good[:eoff] + F.frame(F.K_IMPORTED, p) + good[eoff + F.FRAME_HEAD_SIZE + len(epay):]

    entry = next(k for k, v in enumerate(values) if isinstance(v, list) and len(v) == 2)
    exit_ = next(k for k, v in enumerate(values) if isinstance(v, list) and len(v) == 3 and isinstance(v[1], str))
    cases = {
        "start": with_events(start=5),
        "count": with_events(n=n + 1),
        "columns": with_events(cols=zlib.compress(b"\0" * 10)),
        "bomb": with_events(vlen=hvt.MAX_VALUES + 1),
        "args": with_events(values=values[:entry] + [["x", 1]] + values[entry + 1:]),
        "shape": with_events(values=values[:entry] + [[1, 2, 3]] + values[entry + 1:]),
        "few": with_events(values=values[:-1]),
        "long": with_events(values=values[:exit_] + [[0, "x" * 5000, 1]] + values[exit_ + 1:]),
        "neither": with_events(values=values[:exit_] + [7] + values[exit_ + 1:]),
        "names": with_events(names=[]),
        "header": good[:hoff] + F.frame(F.K_HEADER, msgpack.packb({"trace_kind": "imported", "imported_version": 1,
                                                                   "files": "x"})) + good[hoff + 9 + len(hpay):],
        "ext": with_events(names=[msgpack.ExtType(5, b"x")]),
    }
    bad = tmp_path / "bad.hvt"
    for what, data in cases.items():
        bad.write_bytes(data)
        code, o, err = run(capsys, "info", bad)
        assert code == 2 and len(err.strip().splitlines()) == 1, (what, err)
        assert re.search(r"byte \d+: invalid", err), (what, err)


def test_repeated_prefixes_parse_exactly_as_the_line_pattern(tmp_path):
    """The hot path splits lines whose prefix it has seen with str.partition; every line must
    still come out as the line pattern parses it (or be reported as it reports it)."""
    from hvdbg.trace_import import lines
    rnd = random.Random(4)
    prefixes = ["  qemu-kvm-3000  [000] ", " CPU 0/KVM-2344    [001] d..1. ", " <...>-12 (  12) [002] .N.. ",
                " x: y-5 [000] ", "[004] ", " w-1 [1234567] ", " a-b-7 [3] "]
    stamps = ["5000.000003", "1", "1.1234567890123", "123456789012345678901", "1e5", "nan", "5.", ".5", "\u0661.5"]
    bodies = ["kvm_exit: vcpu 0 reason HLT rip 0xffffffff81000000 info1 0x0", "kvm_entry: vcpu 2, rip 0xabc",
              "kvm_entry: vcpu 2, rip 0x12345678901234567", "kvm_exit: vcpu 1 reason A rip 0xZZ rip 0x10 x",
              "kvm_fpu: load", "kvm_fpu:", "sched_switch: prev=a: next=b", "local_timer_entry: vector=236"]
    text = [rnd.choice(prefixes) + rnd.choice(stamps) + rnd.choice([": ", ":  ", ":\t"]) + rnd.choice(bodies)
            for _ in range(3000)]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(text) + "\n")
    tr = import_trace(p, "trace")
    want = []
    for n, s in enumerate(text, 1):
        m = lines.FTRACE_RE.match(s)
        if m:
            want.append((n, float(m["ts"]), int(m["cpu"]), int(m["pid"]) if m["pid"] else -1, m["ev"], m["rest"]))
    got = [(e.line, e.ts, e.cpu, e.pid, e.name, e.text) for e in tr.events]
    assert [g[:5] for g in got] == [w[:5] for w in want]
    assert all(g[5] in (None, w[5]) for g, w in zip(got, want))
    assert tr.counts["skipped"] == len(text) - len(want) > 100
    assert len({e.name for e in tr.events if e.args is not None}) >= 3
