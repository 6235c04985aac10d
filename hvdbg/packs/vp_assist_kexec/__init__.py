"""vp-assist-kexec (dfe94d4086e4). See pack.toml and docs/bugs/vp-assist-kexec.md."""
