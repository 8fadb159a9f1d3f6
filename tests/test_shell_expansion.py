"""Word expansion beyond Docker's vectors: the modifiers, the backtick escape, the helpers."""

from __future__ import annotations

import os

import pytest

from pytest_pycontain.errors import DockerfileError
from pytest_pycontain.shell import (
    ExpansionError,
    expand,
    expand_words,
    parse_key_values,
    split_raw_words,
    unquote,
    variables_used,
)

ENV = {"FILE": "archive.tar.gz", "PATH_": "/usr/local/bin", "EMPTY": "", "NAME": "world",
       "SPACED": "a  b c"}


@pytest.mark.parametrize(("word", "expected"), [
    ("$NAME", "world"),
    ("${NAME}", "world"),
    ("x${NAME}y", "xworldy"),
    ("${MISSING:-dflt}", "dflt"),
    ("${EMPTY:-dflt}", "dflt"),
    ("${EMPTY-dflt}", ""),
    ("${MISSING-dflt}", "dflt"),
    ("${NAME:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${MISSING+alt}", ""),
    ("${NAME:?needed}", "world"),
    ("${EMPTY?needed}", ""),
    ("${FILE#*.}", "tar.gz"),
    ("${FILE##*.}", "gz"),
    ("${FILE%.*}", "archive.tar"),
    ("${FILE%%.*}", "archive"),
    ("${FILE#nomatch}", "archive.tar.gz"),
    ("${FILE%gz}", "archive.tar."),
    ("${FILE#a?c}", "hive.tar.gz"),
    ("${FILE#[ab]r}", "chive.tar.gz"),
    ("${FILE#\\*}", "archive.tar.gz"),
    ("${FILE/tar/zip}", "archive.zip.gz"),
    ("${FILE//a/A}", "Archive.tAr.gz"),
    ("${FILE/a*./X}", "Xgz"),
    ("${FILE/nomatch/X}", "archive.tar.gz"),
    ("${MISSING/a/b}", ""),
    ("${PATH_#/usr}", "/local/bin"),
    ("'$NAME'", "$NAME"),
    ('"$NAME"', "world"),
    ("\\$NAME", "$NAME"),
    ("$SPACED", "a  b c"),
])
def test_expand_modifiers(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


@pytest.mark.parametrize(("word", "message"), [
    ("${MISSING:?must be set}", "MISSING: must be set"),
    ("${MISSING?}", "MISSING: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${NAME", "missing '}'"),
    ("${}", "bad substitution"),
    ("${NAME:=x}", "unsupported modifier (:=)"),
    ("${NAME:#x}", "unsupported modifier (:#)"),
    ("'open", "single-quote"),
    ('"open', "double-quote"),
    ("${NAME/a}", "missing '/'"),
])
def test_expand_errors_say_what_and_where(word: str, message: str) -> None:
    with pytest.raises(ExpansionError) as caught:
        expand(word, ENV)
    error = caught.value
    assert message in str(error)
    assert error.word == word
    assert isinstance(error, DockerfileError)
    placed = error.at("ctx/Dockerfile", 7)
    assert str(placed).startswith("ctx/Dockerfile:7: ")
    assert placed.line == 7 and placed.path == "ctx/Dockerfile"
    assert message in str(placed)


def test_backtick_escape_token() -> None:
    assert expand("C:`\\dir`$NAME", ENV, escape="`") == "C:\\dir$NAME"
    assert expand('"a`"b"', ENV, escape="`") == 'a"b'
    assert expand("a\\b", ENV, escape="`") == "a\\b"
    assert expand_words("a` b c", {}, escape="`") == ["a b", "c"]


def test_bad_escape_token_is_refused() -> None:
    with pytest.raises(ValueError, match="escape token"):
        expand("x", {}, escape="!")


def test_words_split_only_what_expansion_produced() -> None:
    assert expand_words("x$SPACED y", ENV) == ["xa", "b", "c", "y"]
    assert expand_words('"$SPACED" y', ENV) == ["a  b c", "y"]
    assert expand_words("a '' b", ENV) == ["a", "b"]
    assert expand_words("   ", ENV) == []


def test_env_may_be_a_list_of_assignments() -> None:
    assert expand("$A-$B-$C", ["A=1", "B=2", "A=3", "C"]) == "1-2-"
    assert expand("${C-unset}", ["C"]) == ""


def test_unquote_keeps_variables() -> None:
    assert unquote('"$HOME/x" \'y\'') == "$HOME/x y"
    assert unquote("${A:-b}") == "${A:-b}"


def test_variables_used() -> None:
    assert variables_used("$A ${B:-$C} '$D' ${E#x}") == {"A", "B", "C", "E"}
    assert variables_used("${broken") == set()


def test_split_raw_words_keeps_quotes_and_escapes() -> None:
    assert split_raw_words('a=b c="d e" f=g\\ h') == ["a=b", 'c="d e"', "f=g\\ h"]
    assert split_raw_words("k='a\\'b'") == ["k='a\\'b'"]
    assert split_raw_words('"" x') == ['""', "x"]
    assert split_raw_words("a`  b", "`") == ["a` ", "b"]


def test_parse_key_values_both_forms() -> None:
    assert parse_key_values('A=1 B="two words" C=') == [("A", "1"), ("B", '"two words"'),
                                                      ("C", "")]
    assert parse_key_values("NAME some value here") == [("NAME", "some value here")]
    pairs = parse_key_values('B="two words"')
    assert [(key, expand(value)) for key, value in pairs] == [("B", "two words")]


@pytest.mark.parametrize(("text", "message"), [
    ("", "requires at least one argument"),
    ("ALONE", "must have two arguments"),
    ("A=1 B", "can't find = in 'B'"),
])
def test_parse_key_values_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message.replace("(", r"\(")):
        parse_key_values(text, instruction="ENV")


def test_pattern_modifiers_agree_with_bash() -> None:
    """BuildKit's #, ##, %, %%, / and // follow the shell's; bash is the reference here."""
    import shutil
    import subprocess

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed: nothing to compare the pattern modifiers with")
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    values = st.lists(st.sampled_from("ab.-"), max_size=7).map("".join)
    patterns = st.lists(st.sampled_from(["a", "b", ".", "*", "?", "[ab]", "[!a]"]),
                        min_size=1, max_size=4).map("".join)
    operators = st.sampled_from(["#", "##", "%", "%%", "/", "//"])

    @hypothesis.settings(max_examples=int(os.environ.get("PYCONTAIN_HYPOTHESIS_EXAMPLES", "150")),
                         deadline=None, database=None)
    @hypothesis.given(values, operators, patterns)
    def check(value: str, operator: str, pattern: str) -> None:
        word = "${V" + operator + pattern + ("/X}" if "/" in operator else "}")
        script = f"V='{value}'; printf '%s' \"{word}\""
        expected = subprocess.run([bash, "--norc", "--noprofile", "-c", script],
                                  capture_output=True, text=True, check=True).stdout
        assert expand(word, {"V": value}) == expected, word

    check()
