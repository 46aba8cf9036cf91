"""Job ids derived from display names (`cronhive.domain.slugify` and
`job_id_for_name`): transliterated to ASCII, a short hash when nothing transliterates."""

from __future__ import annotations

import hashlib
import re

import pytest

from cronhive.domain import JOB_ID_RE, job_id_for_name, slugify


@pytest.mark.parametrize(("name", "slug"), [
    ("Daily Reminder Check", "daily_reminder_check"),
    ("  spaces  around  ", "spaces_around"),
    ("report-v2.final", "report_v2_final"),
    ("Crème brûlée à 8h", "creme_brulee_a_8h"),
    ("Отчёт за день", "otchet_za_den"),
    ("日本語", "ri_ben_yu"),
    ("Ελληνικά", "ellenika"),
    ("Straße", "strasse"),
    ("AT&T &amp; co", "at_t_amp_co"),  # a name is not HTML: entities stay text
])
def test_names_are_transliterated(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize("name", ["🎉", "!!!", "¿¡", "—", ""])
def test_nothing_to_transliterate_gives_a_hash_of_the_name(name: str) -> None:
    assert slugify(name) == hashlib.sha256(name.encode()).hexdigest()[:8]


def test_hashed_slugs_differ_by_name() -> None:
    assert len({slugify(name) for name in ("🎉", "🚀", "🔥", "!!!", "???")}) == 5


@pytest.mark.parametrize("name", ["Отчёт " * 40, "日本語" * 80, "🎉" * 200, "a-" * 100])
def test_ids_from_any_name_match_the_pattern_and_stay_distinct(name: str) -> None:
    ids = [job_id_for_name(name, attempt) for attempt in range(20)]
    assert all(JOB_ID_RE.fullmatch(job_id) and re.fullmatch(r"job_[a-z0-9_]+", job_id) for job_id in ids), ids
    assert len(set(ids)) == 20
