"""EntityRef: the one way doors name a study, a series or an instance by UIDs."""

from __future__ import annotations

import pytest

from pypacs.model.levels import Level
from pypacs.query.entity import EntityRef


@pytest.mark.parametrize(
    ("ref", "level", "text"),
    [
        (EntityRef("1.2"), Level.STUDY, "study 1.2"),
        (EntityRef("1.2", "1.2.3"), Level.SERIES, "series 1.2.3 of study 1.2"),
        (
            EntityRef("1.2", "1.2.3", "1.2.3.4"),
            Level.IMAGE,
            "instance 1.2.3.4 of series 1.2.3 of study 1.2",
        ),
    ],
)
def test_level_and_description(ref: EntityRef, level: Level, text: str) -> None:
    assert ref.level is level
    assert str(ref) == text


def test_query_names_the_entity_at_its_level() -> None:
    query = EntityRef("1.2", "1.2.3", "1.2.3.4").query()
    assert query.level is Level.IMAGE
    terms = {match.tag: match.terms for match in query.matches if not match.universal}
    # Study, Series and SOP Instance UID, each a single value (PS3.4 C.4.2.2.1).
    assert set(terms) == {0x0020000D, 0x0020000E, 0x00080018}
    assert all(len(t) == 1 for t in terms.values())
    assert EntityRef("1.2").query().level is Level.STUDY


def test_an_instance_is_named_with_its_series() -> None:
    with pytest.raises(ValueError, match="with its series"):
        EntityRef("1.2", None, "1.2.3.4")
