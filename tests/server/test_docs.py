"""The command reference is generated from the command table; keep the committed copy current."""

from pathlib import Path

from geoserver.commands import TABLE
from geoserver.commands.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "commands.md"


def test_commands_md_matches_the_table():
    assert DOC.read_text() == render(), (
        "docs/commands.md is stale: run `python -m geoserver.commands.reference > docs/commands.md`"
    )


def test_every_command_has_a_syntax_docstring():
    missing = [name for name, cmd in TABLE.items() if not (cmd.func.__doc__ or "").strip()]
    assert not missing


def test_every_config_property_is_in_security_md():
    from geoserver.config import PROPERTIES

    text = (DOC.parent / "security.md").read_text()
    assert not [name for name in PROPERTIES if f"`{name}`" not in text]
