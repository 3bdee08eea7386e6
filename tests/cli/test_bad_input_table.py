"""docs/cli.md's bad-input table is true: every row, run as written, exits with its code and says
its message, in one line and without a traceback."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
_ROW = re.compile(r"^\| `golfrun (?P<args>[^`]+)` \| (?P<code>\d+) \| `(?P<message>[^`]+)` \|$")


def rows() -> list[tuple[str, int, str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("<!-- bad-input-table -->"):].split("\n\n", 1)[0]
    found = [(m["args"], int(m["code"]), m["message"]) for m in map(_ROW.match, table.splitlines()) if m]
    assert len(found) >= 10, "the bad-input table lost its rows"
    return found


@pytest.mark.parametrize("args, code, message", rows())
def test_row(args: str, code: int, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "t.tar.gz").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in shlex.split(args)]
    result = CliRunner().invoke(main, argv)
    out = result.output
    assert result.exit_code == code, out
    assert message.replace("{tmp}", str(tmp_path)) in out
    assert "Traceback" not in out and isinstance(result.exception, SystemExit), result.exception


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    campaign = tmp_path / "bom.toml"
    campaign.write_bytes(b"\xef\xbb\xbf" + b'name = "bom"\n')
    from golfrun.campaign import load_campaign

    assert load_campaign(str(campaign)).name == "bom"


def test_init_writes_a_trainer_path_that_exists_from_elsewhere(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "x.toml"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["init", "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from golfrun.campaign import load_campaign

    assert Path(load_campaign(str(out)).trainer).is_file()
