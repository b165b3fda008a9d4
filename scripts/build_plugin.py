#!/usr/bin/env python3
"""Build the installable QGIS plugin zip (Plugins > Manage and Install Plugins > Install from ZIP).

The zip holds one folder, ``qgis_urbanclip/``, with metadata.txt's ``version`` taken from
pyproject.toml and its ``changelog`` from CHANGELOG.md, so neither can drift from the library's.
Standard library only: runs with any Python 3.11+.

    python3 scripts/build_plugin.py            # -> dist/qgis_urbanclip-<version>.zip
    python3 scripts/build_plugin.py -o plugin.zip
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "qgis_urbanclip"
SKIP_DIRS = {"__pycache__", ".pytest_cache"}
SKIP_NAMES = {".DS_Store", "Thumbs.db"}


def changelog_text(changelog: Path) -> str:
    """CHANGELOG.md from its first release heading on, as a metadata.txt value: headings as
    plain lines (configparser drops lines starting with #), ``%`` escaped for interpolation,
    blank lines dropped, continuation lines indented."""
    text = changelog.read_text(encoding="utf-8")
    start = text.find("\n## ")
    body = text[start + 1:] if start >= 0 else text
    lines = [re.sub(r"^#+\s*", "", line).replace("%", "%%") for line in body.splitlines()]
    return "\n".join(f"    {line}" for line in lines if line.strip()).lstrip()


def metadata_text(version: str, changelog: str) -> str:
    lines = []
    for line in (PLUGIN / "metadata.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("version="):
            line = f"version={version}"
        elif line.startswith("changelog="):
            line = f"changelog={changelog}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def build(output: Path) -> Path:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    metadata = metadata_text(version, changelog_text(REPO / "CHANGELOG.md"))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".zip", dir=output.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(PLUGIN.rglob("*")):
                relative = path.relative_to(PLUGIN)
                if (path.is_dir() or SKIP_DIRS & set(relative.parts) or path.name in SKIP_NAMES
                        or path.suffix in {".pyc", ".pyo", ".swp"} or path.name.endswith("~")):
                    continue
                name = f"{PLUGIN.name}/{relative.as_posix()}"
                if relative.as_posix() == "metadata.txt":
                    archive.writestr(name, metadata)
                else:
                    archive.write(path, name)
            # plugins.qgis.org refuses a plugin zip without its licence.
            archive.write(REPO / "LICENSE", f"{PLUGIN.name}/LICENSE")
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path,
                        help="zip to write [default: dist/qgis_urbanclip-<version>.zip]")
    args = parser.parse_args()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    print(build(args.output or REPO / "dist" / f"qgis_urbanclip-{version}.zip"))


if __name__ == "__main__":
    main()
