"""vp-assist-hibernation (421f090c819d). See pack.toml and docs/bugs/vp-assist-hibernation.md."""
