"""The typed Dockerfile layer: instructions, flags, heredocs, directives and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pycontain import dockerfile as df
from pytest_pycontain.errors import DockerfileError

SAMPLES = Path(__file__).parent / "data" / "dockerfiles"


def only(text: str, **kwargs) -> df.Instruction:
    parsed = df.parse(text, "ctx/Dockerfile", **kwargs)
    return parsed.instructions[-1]


def refused(text: str, **kwargs) -> DockerfileError:
    with pytest.raises(DockerfileError) as caught:
        df.parse(text, "ctx/Dockerfile", **kwargs)
    return caught.value


def test_every_instruction_of_the_reference() -> None:
    text = (SAMPLES / "everything.Dockerfile").read_text()
    parsed = df.parse(text, "everything.Dockerfile")
    kinds = {type(item) for item in parsed.instructions}
    assert kinds == set(df.INSTRUCTIONS.values())
    assert parsed.syntax == "docker/dockerfile:1"
    assert [arg.pairs for arg in parsed.meta_args] == [(("BASE", "debian"),)]
    stages = parsed.stages
    assert [stage.name for stage in stages] == ["build", None]
    assert stages[1].from_.image == "${BASE}"
    assert all(item.path == "everything.Dockerfile" for item in parsed.instructions)


def test_from_with_stage_and_platform() -> None:
    item = only("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build")
    assert isinstance(item, df.From)
    assert (item.image, item.stage_name, item.platform) == (
        "golang:1.22", "build", "$BUILDPLATFORM")
    assert (item.line, item.end_line) == (1, 1)


@pytest.mark.parametrize(("text", "message"), [
    ("FROM a b", "FROM requires either one or three arguments"),
    ("FROM a AS 1st", "invalid name for build stage"),
    ("FROM", "FROM requires either one or three arguments"),
])
def test_bad_from(text: str, message: str) -> None:
    assert message in str(refused(text))


def test_run_shell_and_exec_forms_with_flags() -> None:
    text = ("FROM a\n"
            "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=k \\\n"
            "    --network=none pip install \\\n"
            "      requests\n"
            'RUN ["/bin/sh", "-c", "echo hi"]\n')
    parsed = df.parse(text, "Dockerfile")
    shell_run, exec_run = parsed.instructions[1:]
    assert isinstance(shell_run, df.Run) and isinstance(exec_run, df.Run)
    assert shell_run.shell_form and shell_run.command == "pip install       requests"
    assert shell_run.mounts == ("type=cache,target=/root/.cache", "type=secret,id=k")
    assert shell_run.network == "none"
    assert (shell_run.line, shell_run.end_line) == (2, 4)
    assert not exec_run.shell_form and exec_run.command == ("/bin/sh", "-c", "echo hi")
    assert exec_run.line == 5


def test_copy_and_add_flags() -> None:
    text = ("FROM a\n"
            "COPY --from=build --chown=app:app --chmod=0755 --link --exclude=*.md "
            "src/ lib/ /app/\n"
            'ADD --keep-git-dir=true --checksum=sha256:abc ["http://x/a b", "/dst"]\n'
            "COPY --link=false a b\n")
    copy, add, plain = df.parse(text).instructions[1:]
    assert isinstance(copy, df.Copy)
    assert copy.sources == ("src/", "lib/") and copy.dest == "/app/"
    assert (copy.from_, copy.chown, copy.chmod, copy.link) == ("build", "app:app", "0755", True)
    assert copy.exclude == ("*.md",)
    assert isinstance(add, df.Add) and add.json
    assert add.sources == ("http://x/a b",) and add.dest == "/dst"
    assert add.keep_git_dir and add.checksum == "sha256:abc"
    assert isinstance(plain, df.Copy) and plain.link is False


@pytest.mark.parametrize(("text", "where", "message"), [
    ("FROM a\nCOPY --form=x a b", 2, "unknown flag: --form"),
    ("FROM a\nENV --x=1 A=b", 2, "ENV takes no flags"),
    ("FROM a\nCOPY --from a b", 2, "missing a value on flag: --from"),
    ("FROM a\nCOPY --from=a --from=b a b", 2, "duplicate flag specified: --from"),
    ("FROM a\nCOPY --link=maybe a b", 2, "expecting boolean value for flag --link"),
    ("FROM a\nCOPY onlyone", 2, "COPY requires at least two arguments"),
    ("FROM a\n\nFOO bar", 3, "unknown instruction: FOO"),
    ("FROM a\nWORKDIR", 2, "WORKDIR requires exactly 1 argument"),
    ("FROM a\nSHELL sh -c", 2, "SHELL requires the arguments to be in JSON form"),
    ("FROM a\nONBUILD ONBUILD RUN x", 2, "ONBUILD isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD FROM x", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD COPY --nope a b", 2, "unknown flag: --nope"),
    ("FROM a\nHEALTHCHECK NONE x", 2, "HEALTHCHECK NONE takes no arguments"),
    ("FROM a\nHEALTHCHECK CMD", 2, "Missing command after HEALTHCHECK CMD"),
    ("FROM a\nHEALTHCHECK PING x", 2, "Unknown type 'PING' in HEALTHCHECK"),
    ("FROM a\nHEALTHCHECK --interval=5 CMD x", 2, "invalid duration '5'"),
    ("FROM a\nHEALTHCHECK --timeout=1us CMD x", 2, "cannot be less than 1ms"),
    ("FROM a\nHEALTHCHECK --retries=-1 CMD x", 2, "--retries cannot be negative"),
    ("FROM a\nENV PATH", 2, "ENV must have two arguments"),
    ("FROM a\nENV =x", 2, "ENV names can not be blank"),
    ("FROM a\nLABEL a=1 =x", 2, "LABEL names can not be blank"),
    ("FROM a\nARG =x", 2, "ARG names can not be blank"),
    ("FROM a\nLABEL a=b c", 2, "can't find = in \"c\""),
    ('FROM a\nCMD ["a", 1]', 2, "arrays must be comprised of strings only"),
    ("FROM a\nRUN <<EOF\necho\n", 2, "unterminated heredoc 'EOF'"),
    ("# escape=!\nFROM a", 1, "invalid escape token '!'"),
    ("# escape=`\n# escape=`\nFROM a", 2, "only one escape parser directive"),
])
def test_errors_name_file_and_line(text: str, where: int, message: str) -> None:
    error = refused(text)
    assert error.path == "ctx/Dockerfile"
    assert error.line == where
    assert str(error).startswith(f"ctx/Dockerfile:{where}: ")
    assert message in str(error)


def test_empty_and_comment_only_files_are_refused() -> None:
    for text in ("", "\n\n", "# just a comment\n", "  \n# escape=`\n"):
        assert "file with no instructions" in str(refused(text))
    # a lone continuation is an (empty) instruction to Docker's parser, refused by its builder
    assert "unknown instruction: (nothing but" in str(refused("  \\\n"))


def test_lenient_mode_keeps_what_dockers_parser_keeps() -> None:
    item = only("FROM a\nCOPY --user=me a b", strict=False)
    assert isinstance(item, df.Copy) and item.flags == ("--user=me",)
    health = only("FROM a\nHEALTHCHECK CONNECT TCP 7000", strict=False)
    assert isinstance(health, df.Healthcheck) and health.test == ("CONNECT", "TCP 7000")
    assert "unknown instruction" in str(refused("FOO bar", strict=False))


def test_env_label_arg_pairs_stay_unexpanded() -> None:
    text = ("ARG VERSION=1.0 DEBUG\n"
            "FROM a\n"
            'ENV A=1 B="two words" C=$A\n'
            "ENV LEGACY some value\n"
            'LABEL "com.example.x"="y z" other=1\n')
    arg, _, env, legacy, label = df.parse(text).instructions
    assert isinstance(arg, df.Arg) and arg.pairs == (("VERSION", "1.0"), ("DEBUG", None))
    assert isinstance(env, df.Env)
    assert env.pairs == (("A", "1"), ("B", '"two words"'), ("C", "$A"))
    assert isinstance(legacy, df.Env) and legacy.pairs == (("LEGACY", "some value"),)
    assert isinstance(label, df.Label)
    assert label.pairs == (('"com.example.x"', '"y z"'), ("other", "1"))


def test_simple_instructions() -> None:
    text = ("FROM a\nEXPOSE 80/tcp 53/udp\nVOLUME /data /logs\nVOLUME [\"/x\"]\n"
            "WORKDIR /srv/app\nUSER app:app\nSTOPSIGNAL SIGTERM\nMAINTAINER Me <me@x>\n"
            'SHELL ["/bin/bash", "-c"]\nCMD echo hi\nENTRYPOINT ["tini", "--"]\n')
    items = df.parse(text).instructions[1:]
    expose, volume, volume_json, workdir, user, stop, maintainer, shell, cmd, entry = items
    assert isinstance(expose, df.Expose) and expose.ports == ("80/tcp", "53/udp")
    assert isinstance(volume, df.Volume) and volume.paths == ("/data", "/logs")
    assert isinstance(volume_json, df.Volume) and volume_json.paths == ("/x",)
    assert isinstance(workdir, df.Workdir) and workdir.workdir == "/srv/app"
    assert isinstance(user, df.User) and user.user == "app:app"
    assert isinstance(stop, df.Stopsignal) and stop.signal == "SIGTERM"
    assert isinstance(maintainer, df.Maintainer) and maintainer.maintainer == "Me <me@x>"
    assert isinstance(shell, df.Shell) and shell.shell == ("/bin/bash", "-c")
    assert isinstance(cmd, df.Cmd) and cmd.command == "echo hi"
    assert isinstance(entry, df.Entrypoint) and entry.command == ("tini", "--")


def test_healthcheck_shapes_like_dockers_config() -> None:
    text = ("FROM a\n"
            "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s "
            "--start-interval=0s --retries=3 CMD curl -f http://localhost/\n"
            'HEALTHCHECK CMD ["/bin/check", "--quiet"]\n'
            "HEALTHCHECK NONE\n")
    shell_form, exec_form, none = df.parse(text).instructions[1:]
    assert isinstance(shell_form, df.Healthcheck)
    assert shell_form.test == ("CMD-SHELL", "curl -f http://localhost/")
    assert shell_form.interval_ns == 90 * 10**9
    assert shell_form.timeout_ns == 500 * 10**6
    assert shell_form.start_period_ns == 2 * 10**9
    assert shell_form.start_interval_ns == 0
    assert shell_form.retries == 3
    assert isinstance(exec_form, df.Healthcheck)
    assert exec_form.test == ("CMD", "/bin/check", "--quiet") and exec_form.interval_ns is None
    assert isinstance(none, df.Healthcheck) and none.test == ("NONE",)


def test_onbuild_wraps_a_typed_instruction() -> None:
    text = "FROM a\nONBUILD COPY --chown=1 . /app\nonbuild run echo hi\n"
    copy_trigger, run_trigger = df.parse(text).instructions[1:]
    assert isinstance(copy_trigger, df.Onbuild)
    assert isinstance(copy_trigger.trigger, df.Copy)
    assert copy_trigger.trigger.chown == "1" and copy_trigger.trigger.line == 2
    assert copy_trigger.expression == "COPY --chown=1 . /app"
    assert isinstance(run_trigger, df.Onbuild) and run_trigger.expression == "run echo hi"
    assert isinstance(run_trigger.trigger, df.Run)


def test_heredocs() -> None:
    text = ("FROM a\n"
            "RUN <<EOF\n"
            "echo $HOME\n"
            "EOF\n"
            "RUN <<-'ONE' 3<<\"TWO\" cat /dev/fd/3\n"
            "\techo one\n"
            "\tONE\n"
            "two\n"
            "TWO\n"
            "COPY <<conf /etc/app.conf\n"
            "key=value\n"
            "conf\n"
            "ONBUILD RUN <<EOF\n"
            "hi\n"
            "EOF\n"
            "CMD done\n")
    items = df.parse(text).instructions
    simple, double, copy, onbuild, cmd = items[1:]
    assert isinstance(simple, df.Run) and simple.command == "<<EOF"
    assert simple.heredocs == (df.Heredoc("EOF", "echo $HOME\n", expand=True),)
    assert (simple.line, simple.end_line) == (2, 4)
    one, two = double.heredocs
    assert (one.name, one.chomp, one.expand, one.fd) == ("ONE", True, False, 0)
    assert one.content == "\techo one\n" and one.body() == "echo one\n"
    assert (two.name, two.chomp, two.expand, two.fd) == ("TWO", False, False, 3)
    assert two.body() == "two\n"
    assert (double.line, double.end_line) == (5, 9)
    assert isinstance(copy, df.Copy) and copy.sources == ("<<conf",)
    assert copy.heredoc_for("<<conf") == df.Heredoc("conf", "key=value\n")
    assert copy.heredoc_for("plain") is None
    assert isinstance(onbuild, df.Onbuild) and onbuild.trigger.heredocs[0].content == "hi\n"
    assert (cmd.line, cmd.end_line) == (16, 16)


def test_heredoc_needs_shell_form() -> None:
    text = 'FROM a\nRUN ["cat"] <<EOF\nEOF\n'
    run, eof = df.parse_nodes(text)[1:]
    assert run.json and run.heredocs == () and eof.name == "EOF"
    error = refused(text, strict=False)
    assert error.line == 3 and "unknown instruction: EOF" in str(error)


def test_continuations_comments_and_escape_directive() -> None:
    text = ("# syntax=docker/dockerfile:1\n"
            "# escape=`\n"
            "\n"
            "FROM mcr.microsoft.com/windows\n"
            "RUN dir C:\\ `\n"
            "# a comment inside\n"
            "\n"
            "    && echo done\n"
            "COPY a\\b c\\\n")
    parsed = df.parse(text)
    assert parsed.escape == "`"
    assert parsed.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    run, copy = parsed.instructions[1:]
    assert isinstance(run, df.Run)
    assert run.command == "dir C:\\     && echo done"
    assert (run.line, run.end_line) == (5, 8)
    assert parsed.warnings and "empty continuation line" in parsed.warnings[0]
    assert isinstance(copy, df.Copy) and copy.sources == ("a\\b",) and copy.dest == "c\\"


def test_directive_after_a_comment_is_a_comment() -> None:
    parsed = df.parse("# hello\n# escape=`\nFROM a\nRUN a \\\n b\n")
    assert parsed.escape == "\\" and parsed.directives == {}
    assert parsed.instructions[1].line == 4


def test_bom_crlf_and_line_numbers() -> None:
    parsed = df.parse("\ufeffFROM a\r\n\r\nRUN echo \\\r\n  hi\r\nUSER me\r\n")
    assert [(i.keyword, i.line, i.end_line) for i in parsed.instructions] == [
        ("FROM", 1, 1), ("RUN", 3, 4), ("USER", 5, 5)]


def test_stages_refuse_instructions_before_from() -> None:
    parsed = df.parse("RUN x\nFROM a\n")
    with pytest.raises(DockerfileError) as caught:
        _ = parsed.stages
    assert caught.value.line == 1 and "before the first FROM" in str(caught.value)
    duplicated = df.parse("FROM a AS x\nFROM b AS X\n", "D")
    with pytest.raises(DockerfileError, match="duplicate stage name 'x'") as caught:
        _ = duplicated.stages
    assert caught.value.line == 2


def test_parse_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM scratch\nCOPY . /\n")
    parsed = df.parse_file(path)
    assert parsed.path == str(path) and parsed.instructions[1].path == str(path)
    with pytest.raises(DockerfileError) as caught:
        df.parse_file(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(caught.value)
    assert "cannot read Dockerfile" in str(caught.value)


def test_node_dump_matches_dockers_format() -> None:
    nodes = df.parse_nodes('FROM a\nCOPY --from=b x y\nENV A=1\nONBUILD RUN ["a"]\nCMD x\t\n')
    assert [node.dump() for node in nodes] == [
        'from "a"', 'copy ["--from=b"] "x" "y"', 'env "A" "1" "="',
        'onbuild (run "a")', 'cmd "x"']


def test_expanded_follows_dockers_choice_of_fields() -> None:
    text = ("ARG TAG=1\n"
            "FROM --platform=$PLAT img:${TAG} AS s\n"
            'ENV "K$N"=$V OTHER="a $V"\n'
            "ARG X=${V:-d} Y\n"
            "LABEL l=$V\n"
            "COPY --from=$STAGE --chown=$U:$U --chmod=$M $SRC ${DEST}/\n"
            "ADD --checksum=$SUM $URL /x\n"
            "RUN --mount=type=cache,target=$CACHE echo $V\n"
            "WORKDIR $HOME/app\nUSER $U\nSTOPSIGNAL $SIG\nVOLUME $HOME/data\n"
            "EXPOSE $PORTS 9000\n"
            "CMD echo $V\n")
    env = {"PLAT": "linux/arm64", "TAG": "2", "N": "1", "V": "val", "STAGE": "b", "U": "app",
           "M": "0600", "SRC": "a b", "DEST": "/d", "SUM": "sha256:x", "URL": "http://u",
           "CACHE": "/c", "HOME": "/h", "SIG": "SIGINT", "PORTS": "80  443/udp"}
    items = [item.expanded(env) for item in df.parse(text).instructions]
    arg, frm, env_, arg2, label, copy, add, run, workdir, user, stop, volume, expose, cmd = items
    assert isinstance(frm, df.From)
    assert (frm.image, frm.platform, frm.stage_name) == ("img:2", "linux/arm64", "s")
    assert isinstance(env_, df.Env) and env_.pairs == (("K1", "val"), ("OTHER", "a val"))
    assert isinstance(arg2, df.Arg) and arg2.pairs == (("X", "val"), ("Y", None))
    assert isinstance(label, df.Label) and label.pairs == (("l", "val"),)
    assert isinstance(copy, df.Copy)
    assert (copy.from_, copy.chown, copy.chmod) == ("b", "app:app", "0600")
    assert copy.sources == ("a b",) and copy.dest == "/d/"
    assert isinstance(add, df.Add) and (add.checksum, add.sources) == ("sha256:x", ("http://u",))
    assert isinstance(run, df.Run)
    assert run.mounts == ("type=cache,target=/c",) and run.command == "echo $V"
    assert isinstance(workdir, df.Workdir) and workdir.workdir == "/h/app"
    assert isinstance(user, df.User) and user.user == "app"
    assert isinstance(stop, df.Stopsignal) and stop.signal == "SIGINT"
    assert isinstance(volume, df.Volume) and volume.paths == ("/h/data",)
    assert isinstance(expose, df.Expose) and expose.ports == ("80", "443/udp", "9000")
    assert isinstance(cmd, df.Cmd) and cmd.command == "echo $V"
    assert isinstance(arg, df.Arg) and arg.pairs == (("TAG", "1"),)


def test_expanded_uses_the_escape_directive_and_places_errors() -> None:
    parsed = df.parse("# escape=`\nFROM a\nWORKDIR C:`$X\\y\nUSER ${U:?set a user}\n",
                      "win/Dockerfile")
    workdir, user = parsed.instructions[1:]
    assert workdir.escape == "`"
    assert isinstance(workdir.expanded({"X": "no"}), df.Workdir)
    assert workdir.expanded({"X": "no"}).workdir == "C:$X\\y"  # type: ignore[attr-defined]
    with pytest.raises(DockerfileError) as caught:
        user.expanded({})
    assert str(caught.value).startswith("win/Dockerfile:4: ")
    assert "U: set a user" in str(caught.value)
