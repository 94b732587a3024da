"""h3pipe.masking: every form a location carries a password in is masked, by :func:`shown`
and in any text by :func:`scrub`; the CLI's outputs pass through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from h3pipe import masking
from h3pipe.cli import output

PW = "S3ntinel-pw-7f3a"


@pytest.mark.parametrize("location,expected", [
    (f"postgresql://u:{PW}@db:5432/h3", "postgresql://u:***@db:5432/h3"),
    (f"amqp://h3:{PW}@mq.internal:5672//", "amqp://h3:***@mq.internal:5672//"),
    (f"postgresql://u@db/h3?password={PW}&sslmode=require",
     "postgresql://u@db/h3?password=***&sslmode=require"),
    (f"postgresql://u@db/h3?sslmode=require&sslpassword={PW}",
     "postgresql://u@db/h3?sslmode=require&sslpassword=***"),
    (f"host=db dbname=h3 password={PW} user=u", "host=db dbname=h3 password=*** user=u"),
    (f"host=db password = '{PW} x' user=u", "host=db password = *** user=u"),
    (f"https://acct.blob/x.tif?sv=1&sig={PW}&se=2", "https://acct.blob/x.tif?sv=1&sig=***&se=2"),
    ("postgresql://u@db/h3", "postgresql://u@db/h3"),
    ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
    (".h3pipe", ".h3pipe"),
])
def test_every_form_is_masked(location: str, expected: str) -> None:
    assert masking.shown(location) == expected


def test_a_remembered_password_is_masked_wherever_it_stands() -> None:
    odd = "S3nt!nel/pw@7f3a-remembered"
    masking.remember("postgresql://u:S3nt%21nel%2Fpw%407f3a-remembered@db/h3")
    text = f"driver said: bad {odd} and S3nt%21nel%2Fpw%407f3a-remembered"
    assert masking.scrub(text) == "driver said: bad *** and ***"
    # A short password is not searched for as text: it would blank ordinary words.
    masking.remember("amqp://guest:guest@mq//")
    assert masking.scrub("user guest") == "user guest"


def test_a_keyword_string_is_told_from_a_folder() -> None:
    assert masking.is_keyword_dsn("host=db dbname=h3")
    assert masking.is_keyword_dsn("  dbname=h3 host=db")
    assert not masking.is_keyword_dsn("results/res=6")
    assert not masking.is_keyword_dsn("postgresql://u@db/h3?host=x")
    assert not masking.is_keyword_dsn(".h3pipe")


def test_the_cli_outputs_and_log_are_scrubbed(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "h3pipe.log"
    output.configure(log_file=log)
    try:
        for emit in (output.say, output.info, output.warn, output.error):
            emit(f"reached postgresql://u@db/h3?password={PW}")
    finally:
        output.reset()
    out, err = capsys.readouterr()
    for text in (out, err, log.read_text()):
        assert "password=***" in text and PW not in text
    assert log.read_text().count("password=***") == 4
