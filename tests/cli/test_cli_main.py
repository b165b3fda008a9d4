"""The entry point's error contract: one `error:` line, a JSON error record in JSON mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from urbangeo.cli.main import main
from urbangeo.progress import JsonLinesProgress


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code


@pytest.mark.parametrize("argv, needle", [
    (["nosuch"], "No such command 'nosuch'"),
    (["caption", "x.gpkg", "--backend", "nosuch"], "'nosuch' is not one of"),
    (["grid", "--bbox", "0,0,1,1", "-o", "a.gpkg", "extra", "args"], "unexpected extra argument"),
])
def test_usage_mistakes_print_one_error_line(argv: list[str], needle: str, capsys) -> None:
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert "--help" in err[0] and "Usage:" not in err[0]


def test_json_mode_ends_a_failed_run_with_an_error_record(tmp_path: Path, capsys) -> None:
    assert _exit_code(["--progress", "json", "grid", "--bbox", "1,2,3",
                       "-o", str(tmp_path / "x.gpkg")]) == 2
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[-1]["type"] == "error" and "not 4" in records[-1]["message"]


def test_json_info_after_a_stage_is_not_labelled_with_it() -> None:
    lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    progress = JsonLinesProgress(Sink())  # type: ignore[arg-type]
    progress.start("chips", 2)
    progress.advance(2)
    progress.finish()
    progress.info("done")
    last = json.loads(lines[-1])
    assert last["type"] == "info" and last["stage"] == "" and last["total"] is None
