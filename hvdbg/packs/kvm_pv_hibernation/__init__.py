"""kvm-pv-hibernation (8b79feffeca2). See pack.toml and docs/bugs/kvm-pv-hibernation.md."""
