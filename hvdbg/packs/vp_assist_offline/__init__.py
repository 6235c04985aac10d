"""vp-assist-offline: the seed bug (e320ab3cec7d). See pack.toml and docs/bugs/vp-assist-offline.md."""
