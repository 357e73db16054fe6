"""The README's configuration block is the reference users read: it names every setting
SETTINGS declares, with its default and its flag, and nothing else."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pypacs.config import SETTINGS

README = Path(__file__).parents[2] / "README.md"


def _block() -> str:
    text = README.read_text()
    section = text[text.index("## Configuration") :]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


def test_the_readme_block_holds_every_setting_with_its_default() -> None:
    data: dict[str, Any] = tomllib.loads(_block())
    data.pop("remotes")
    written = {}
    for section, table in data.items():
        for key, value in table.items():
            if isinstance(value, dict):  # a nested section, [auth.oidc]
                written.update({(f"{section}.{key}", k): v for k, v in value.items()})
            else:
                written[(section, key)] = value
    assert written == {(s.section, s.key): s.default for s in SETTINGS}


def test_the_readme_block_names_each_setting_by_its_flag() -> None:
    comments: dict[tuple[str, str], str] = {}
    section = ""
    for line in _block().splitlines():
        if line.startswith("["):
            section = line[1:].split("]")[0]
        elif "=" in line:
            key, _, rest = line.partition("=")
            comments[(section, key.strip())] = rest.partition("#")[2].strip()
    for setting in SETTINGS:
        comment = comments[(setting.section, setting.key)]
        assert comment.split(":")[0].split(";")[0].split()[0] == setting.flag, comment
