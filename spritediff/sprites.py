"""The course's sprites: their credit line and the class names of its labels file (one place for each)."""
from __future__ import annotations

CREDIT = "Sprites by ElvGames, FrootsnVeggies and kyrise"
COURSE_CLASSES = ("hero", "non-hero", "food", "spell", "side-facing")


def class_names(n: int) -> tuple[str, ...]:
    """The names of a course-format net's n context classes: the course's when n is theirs (5), else generic."""
    return COURSE_CLASSES if n == len(COURSE_CLASSES) else generic_class_names(n)


def generic_class_names(n: int) -> tuple[str, ...]:
    """class0 .. class{n-1}: the names of label columns nobody named (a labels file other than the course's)."""
    return tuple(f"class{i}" for i in range(n))


def credit_record(info: dict) -> dict:
    """{"credit": the line} for a record (run.json) of a model whose info carries it (trained on the course's
    sprites), else {}: a model of other images does not credit the course's artists."""
    return {"credit": info["credit"]} if info.get("credit") else {}
