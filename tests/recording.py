"""A Progress that keeps every call, so tests can assert what a library function reported."""

from __future__ import annotations


class RecordingProgress:
    """Events as tuples: ``("start", stage, total)``, ``("advance", n, message)``,
    ``("info", message)``, ``("finish",)``."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def start(self, stage: str, total: int | None, message: str = "") -> None:
        self.events.append(("start", stage, total))

    def advance(self, n: int = 1, message: str = "") -> None:
        self.events.append(("advance", n, message))

    def info(self, message: str) -> None:
        self.events.append(("info", message))

    def finish(self) -> None:
        self.events.append(("finish",))

    @property
    def starts(self) -> list[tuple[str, int | None]]:
        """(stage, total) of every stage started, in order."""
        return [(str(e[1]), e[2]) for e in self.events if e[0] == "start"]  # type: ignore[misc]

    @property
    def totals(self) -> dict[str, int | None]:
        """Each stage's total by name (a stage started twice keeps the last)."""
        return dict(self.starts)

    @property
    def infos(self) -> list[str]:
        return [str(event[1]) for event in self.events if event[0] == "info"]

    @property
    def advanced(self) -> int:
        return sum(int(event[1]) for event in self.events if event[0] == "advance")
