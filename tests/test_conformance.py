"""Docker's own test vectors (shared/conformance/buildkit), and Docker's own parser as oracle.

Every ``A``/``U`` line of envVarTest, every line of wordsTest, every parser test file (with its
``result`` dump) and every negative file runs here. The ``dockerfile`` package (Docker's Go
parser, x86-64 wheels only) is compared with ours on the same files and on generated ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_pycontain import dockerfile, shell
from pytest_pycontain.errors import DockerfileError


def _shared_dir() -> Path | None:
    """``../shared`` beside the repository (CI and here), else $PYCONTAIN_SHARED_DIR."""
    candidates = [Path(__file__).resolve().parent.parent.parent / "shared"]
    if os.environ.get("PYCONTAIN_SHARED_DIR"):
        candidates.append(Path(os.environ["PYCONTAIN_SHARED_DIR"]))
    for candidate in candidates:
        if (candidate / "conformance" / "buildkit").is_dir():
            return candidate / "conformance" / "buildkit"
    return None


BUILDKIT = _shared_dir()
MISSING = pytest.param(
    None, marks=pytest.mark.skip(
        reason="conformance data not found: no ../shared beside the repository and "
               "PYCONTAIN_SHARED_DIR unset"))
ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list:
    if BUILDKIT is None:
        return [MISSING]
    cases = []
    path = BUILDKIT / "shell" / "envVarTest"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        tag, source, expected = (part.strip() for part in line.split("|", 2))
        if tag in ("A", "U"):
            cases.append(pytest.param((source, expected), id=f"envVarTest:{number}"))
    return cases


def _words_cases() -> list:
    if BUILDKIT is None:
        return [MISSING]
    cases = []
    env: dict[str, str] = {}
    path = BUILDKIT / "shell" / "wordsTest"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            key, _, value = line[4:].partition("=")
            env[key] = value
            continue
        source, _, expected = line.partition("|")
        words = ["error"] if expected.strip() == "error" else expected.lstrip(" ").split(",")
        cases.append(pytest.param((source.strip(), words, dict(env)), id=f"wordsTest:{number}"))
    return cases


def _parser_dirs(kind: str) -> list:
    if BUILDKIT is None:
        return [MISSING]
    root = BUILDKIT / "parser" / kind
    return [pytest.param(path, id=path.name) for path in sorted(root.iterdir())
            if (path / "Dockerfile").is_file()]


@pytest.mark.parametrize("case", _env_var_cases())
def test_env_var_vector(case: tuple[str, str]) -> None:
    source, expected = case
    if expected == "error":
        with pytest.raises(shell.ExpansionError) as caught:
            shell.expand(source, ENV)
        assert caught.value.word == source
        assert "failed to process" in str(caught.value)
    else:
        assert shell.expand(source, ENV) == expected


@pytest.mark.parametrize("case", _words_cases())
def test_words_vector(case: tuple[str, list[str], dict[str, str]]) -> None:
    source, expected, env = case
    if expected == ["error"]:
        with pytest.raises(shell.ExpansionError):
            shell.expand_words(source, env)
    else:
        assert shell.expand_words(source, env) == expected


def _read(path: Path) -> str:
    return (path / "Dockerfile").read_bytes().decode("utf-8")


@pytest.mark.parametrize("directory", _parser_dirs("testfiles"))
def test_parser_testfile_matches_dockers_dump(directory: Path) -> None:
    nodes = dockerfile.parse_nodes(_read(directory), str(directory / "Dockerfile"))
    assert nodes
    result = directory / "result"
    if result.is_file():
        dumped = "".join(f"({node.dump()})\n" for node in nodes)
        assert dumped == result.read_text(encoding="utf-8")


# Positive files that Docker's parser accepts but its builder refuses; strict mode must refuse
# them too, naming the line, and lenient mode must accept them.
BUILDER_REFUSES = {
    "flags": ("flags:3:", "unknown flag: --user"),
    "health": ("health:4:", "HEALTHCHECK requires at least one argument"),
}


@pytest.mark.parametrize("directory", _parser_dirs("testfiles"))
def test_parser_testfile_gives_typed_instructions(directory: Path) -> None:
    text = _read(directory)
    lenient = dockerfile.parse(text, directory.name, strict=False)
    assert len(lenient.instructions) == len(dockerfile.parse_nodes(text))
    for item in lenient.instructions:
        assert isinstance(item, dockerfile.Instruction)
        assert 1 <= item.line <= item.end_line
        assert item.keyword == item.original.split()[0].upper()
    if directory.name in BUILDER_REFUSES:
        where, what = BUILDER_REFUSES[directory.name]
        with pytest.raises(DockerfileError) as caught:
            dockerfile.parse(text, directory.name)
        assert str(caught.value).startswith(where)
        assert what in str(caught.value)
    else:
        assert dockerfile.parse(text, directory.name).instructions == lenient.instructions


@pytest.mark.parametrize("directory", _parser_dirs("testfiles-negative"))
def test_parser_negative_file_is_refused(directory: Path) -> None:
    with pytest.raises(DockerfileError) as caught:
        dockerfile.parse_nodes(_read(directory), directory.name)
    assert str(caught.value).startswith(directory.name)
    assert caught.value.reason
    with pytest.raises(DockerfileError):
        dockerfile.parse(_read(directory), directory.name, strict=False)


# --------------------------------------------------------------------------------------------
# Docker's Go parser as an oracle
# --------------------------------------------------------------------------------------------


def _ours(text: str) -> list[tuple]:
    """Our parse in the shape the ``dockerfile`` package gives."""
    out = []
    for node in dockerfile.parse_nodes(text):
        inner = node.child if node.child is not None else node
        values = inner.values
        if inner.name.lower() in ("env", "label"):
            values = tuple(v for i, v in enumerate(values) if i % 3 != 2)
        if inner.child is not None:  # ONBUILD ONBUILD x: the wrapper shows the holder node
            values = ("",)
        # the wrapper hands strings over as C strings: they end at a NUL
        values = tuple(value.split("\x00")[0] for value in values)
        heredocs = tuple((doc.name, doc.fd, doc.content) for doc in node.heredocs)
        out.append((node.name, node.child.name if node.child else None, inner.json,
                    node.start_line, node.end_line, node.flags, values,
                    heredocs if node.child is None else (),
                    node.original if not node.heredocs else None))
    return out


def _oracle(module, text: str) -> list[tuple]:
    out = []
    for cmd in module.parse_string(text):
        heredocs = tuple((doc.name, doc.file_descriptor, doc.content) for doc in cmd.heredocs)
        # the wrapper turns an empty keyword or line (a lone escape at EOF) into None
        out.append((cmd.cmd or "", cmd.sub_cmd, cmd.json, cmd.start_line, cmd.end_line,
                    cmd.flags, cmd.value, heredocs, (cmd.original or "") if not heredocs else None))
    return out


def _compare(module, text: str) -> None:
    try:
        expected = _oracle(module, text)
    except module.GoParseError:
        with pytest.raises(DockerfileError):
            dockerfile.parse_nodes(text)
        return
    assert _ours(text) == expected


@pytest.mark.parametrize("directory", _parser_dirs("testfiles") + _parser_dirs(
    "testfiles-negative"))
def test_conformance_files_match_oracle(directory: Path) -> None:
    oracle = pytest.importorskip("dockerfile", reason="Docker's parser wheel: x86-64 only")
    _compare(oracle, _read(directory))


ORACLE_SAMPLES = [
    "FROM a AS b\nCOPY --from=b --chown=1:1 --chmod=755 --link x y\n",
    "FROM a\nRUN --mount=type=cache,target=/c --network=none echo hi\n",
    "FROM --platform=linux/amd64 a\nHEALTHCHECK --interval=5s --retries=3 CMD true\n",
    "FROM a\nRUN <<EOF\necho hi\nEOF\n",
    "FROM a\nRUN <<-EOF1 cat <<'EOF2' 3<<\"EOF3\"\n\tone\n\tEOF1\ntwo\nEOF2\nthree\nEOF3\n",
    "FROM a\nCOPY <<EOF /x\ncontent $X\nEOF\nRUN x\n",
    "FROM a\nONBUILD RUN [\"a\", \"b\"]\nONBUILD COPY --from=x a b\n",
    "# escape=`\nFROM a\nRUN echo `\n  hi\nENV A=b`\n C=d\n",
    "#syntax=docker/dockerfile:1\n# escape=\\\nFROM a\n",
    "FROM a\nENV A=1 B=\"2 3\" C='4'\nLABEL x=y\nARG n=1 m\nMAINTAINER me\n",
    "FROM a\nRUN echo \\\n\n  more \\\n# comment\n  end\n",
    "\ufeffFROM a\r\nRUN echo hi\r\n",
    "FROM a\nCMD [\"a\"] trailing\nENTRYPOINT [1]\n",
    "FROM a\nRUN echo \\\\\nRUN b\n",
    "FROM a\nCOPY --from=\"x y\" 'a' b\n",
    "# escape=x\nFROM a\n",
    "FROM a\nRUN <<EOF\nnever ends\n",
    "FROM a\nfrobnicate the thing\n",
]


@pytest.mark.parametrize("text", ORACLE_SAMPLES)
def test_samples_match_oracle(text: str) -> None:
    oracle = pytest.importorskip("dockerfile", reason="Docker's parser wheel: x86-64 only")
    _compare(oracle, text)


def test_generated_dockerfiles_match_oracle() -> None:
    oracle = pytest.importorskip("dockerfile", reason="Docker's parser wheel: x86-64 only")
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    keywords = st.sampled_from(
        ["FROM", "RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "ENV", "LABEL", "ARG",
         "EXPOSE", "VOLUME", "WORKDIR", "USER", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD",
         "MAINTAINER", "run", "Copy", "BOGUS"])
    flags = st.sampled_from(
        ["", "--from=a ", "--chown=\"a b\" ", "--link ", "--mount=type=cache,target=/x ",
         "--interval=5s ", "-- ", "--x='y z' ", "--a\\ b "])
    pieces = st.sampled_from(
        ["a", "b=c", " ", "  ", "\t", "\"", "'", "\\", "$X", "${Y:-z}", "=", "[", "]", ",",
         "\"s\"", "<<EOF", "<<-E", "#", "é", "CMD", "NONE", "x y", "\\\n", "`"])
    args = st.lists(pieces, max_size=8).map("".join)
    line = st.tuples(keywords, flags, args).map(lambda t: f"{t[0]} {t[1]}{t[2]}")
    extra = st.sampled_from(["", "\n", "# note\n", "   \n", "EOF\n", "E\n", "\tE\n", "x\n"])
    head = st.sampled_from(["", "# escape=`\n", "# syntax=x\n", "#escape=\\\n"])

    examples = int(os.environ.get("PYCONTAIN_HYPOTHESIS_EXAMPLES", "200"))

    @hypothesis.settings(max_examples=examples, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(head, st.lists(st.tuples(line, extra), min_size=1, max_size=5))
    def check(top: str, body: list[tuple[str, str]]) -> None:
        text = top + "".join(f"{instruction}\n{after}" for instruction, after in body)
        _compare(oracle, text)

    check()
