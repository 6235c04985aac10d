"""The TUI's config file: `config.toml` in the platform's config dir (platformdirs: on Linux
`$XDG_CONFIG_HOME/hvdbg/config.toml`, default `~/.config/hvdbg/config.toml`).

    theme = "textual-dark"          # persisted when you change the theme (ctrl+p -> theme)
    [keys]                          # rebind any key of keys.KEYMAP by its name
    step = "j"
    rstep = "k"

The file is read like any input: a bad entry is skipped with a one-line warning (shown as a
notification), never a failure. hvdbg writes only the `theme` line back, atomically, and only
to a file that is a regular file it can read as this config."""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from ..safe import printable
from .keys import KEYMAP

MAX_CONFIG_BYTES = 64 * 1024
_KEY = re.compile(r"^[a-z0-9_+,]{1,64}$", re.I)


def config_path() -> Path:
    return platformdirs.user_config_path("hvdbg") / "config.toml"


@dataclass
class Config:
    theme: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None


def load_config(path: Path | None = None) -> Config:
    path = path or config_path()
    cfg = Config(path=path)
    try:
        st = os.stat(path)
    except OSError:
        return cfg
    import stat as _stat
    if not _stat.S_ISREG(st.st_mode) or st.st_size > MAX_CONFIG_BYTES:
        cfg.warnings.append(f"{printable(str(path))}: not a regular file under {MAX_CONFIG_BYTES} bytes; ignored")
        return cfg
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        cfg.warnings.append(f"{printable(str(path))}: {printable(str(e), 120)}; ignored")
        return cfg
    theme = data.get("theme")
    if theme is not None:
        if isinstance(theme, str) and 0 < len(theme) <= 64 and theme.isprintable():
            cfg.theme = theme
        else:
            cfg.warnings.append(f"{printable(str(path))}: theme must be a theme name; ignored")
    names = {k.name for k in KEYMAP}
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        cfg.warnings.append(f"{printable(str(path))}: [keys] must be a table; ignored")
        keys = {}
    for name, spec in keys.items():
        if name not in names:
            cfg.warnings.append(f"{printable(str(path))}: [keys] {printable(name, 40)}: no such key name; ignored")
        elif not isinstance(spec, str) or not _KEY.match(spec):
            cfg.warnings.append(f"{printable(str(path))}: [keys] {name}: not a key name like \"j\" or \"ctrl+j\"; ignored")
        else:
            cfg.keys[name] = spec
    for k in set(data) - {"theme", "keys"}:
        cfg.warnings.append(f"{printable(str(path))}: unknown setting {printable(k, 40)}; ignored")
    return cfg


def save_theme(theme: str, path: Path | None = None) -> str | None:
    """Persist the theme; returns a warning when it could not be written."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if path.exists() and not path.is_file():
            return f"{printable(str(path))}: not a regular file; the theme was not saved"
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("theme")]
        first_table = next((i for i, ln in enumerate(lines) if ln.strip().startswith("[")), len(lines))
        lines.insert(first_table, f"theme = {theme!r}".replace("'", '"'))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        return f"{printable(str(path))}: {e.strerror or e}; the theme was not saved"
    return None
