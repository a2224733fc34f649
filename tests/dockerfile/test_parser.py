"""Unit tests of the parser: heredocs, continuations, directives, flags, forms, errors."""

from __future__ import annotations

import pytest

from cloche.dockerfile._parse_errors import (
    DirectiveError,
    DockerfileSyntaxError,
    EmptyDockerfileError,
    HeredocError,
    LineTooLongError,
)
from cloche.dockerfile.dump import dump, dump_node, go_quote
from cloche.dockerfile.heredoc import heredocs_in_line, parse_heredoc_word
from cloche.dockerfile.node import Heredoc
from cloche.dockerfile.parser import parse
from cloche.errors import DockerfileError


def one(text: str):
    nodes = parse("FROM scratch\n" + text).nodes
    assert len(nodes) == 2, nodes
    return nodes[1]


# --- heredocs -------------------------------------------------------------------------------

def test_two_heredocs_on_one_line_take_the_following_lines_in_order() -> None:
    tree = parse("FROM a\nCOPY <<ONE <<TWO /dest/\nfirst\nONE\nsecond\nTWO\nRUN true\n")
    copy = tree.nodes[1]
    assert copy.heredocs == (Heredoc("ONE", "first\n"), Heredoc("TWO", "second\n"))
    assert (copy.start_line, copy.end_line) == (2, 6)
    assert copy.args == ("<<ONE", "<<TWO", "/dest/")
    assert (tree.nodes[2].keyword, tree.nodes[2].start_line) == ("run", 7)


def test_chomping_heredoc_strips_leading_tabs_from_body_and_terminator() -> None:
    run = one("RUN <<-EOF\n\techo a\n\t\techo b\n\tEOF\n")
    assert run.heredocs == (Heredoc("EOF", "echo a\necho b\n", expand=True, chomp=True),)
    assert run.end_line == 5


def test_plain_heredoc_keeps_tabs_and_needs_an_exact_terminator() -> None:
    run = one("RUN <<EOF\n\techo a\n\tEOF\nEOF\n")
    assert run.heredocs == (Heredoc("EOF", "\techo a\n\tEOF\n"),)


@pytest.mark.parametrize("marker, name, expand", [
    ("<<EOF", "EOF", True),
    ("<<'EOF'", "EOF", False),
    ('<<"EOF"', "EOF", False),
    ('<<EO"F"', "EOF", False),
    ("<<-'EOF'", "EOF", False),
    ("<< EOF", "EOF", True),
    ("<<$EOF", "$EOF", True),
    ("<<eo\\'f", "eo'f", True),
    ("<<'one two'", "one two", False),
])
def test_heredoc_delimiter_quoting_decides_expansion(marker: str, name: str, expand: bool) -> None:
    found = parse_heredoc_word(marker)
    assert found is not None
    assert (found.name, found.expand) == (name, expand)


@pytest.mark.parametrize("word", ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"])
def test_words_that_are_not_heredoc_markers(word: str) -> None:
    assert parse_heredoc_word(word) is None


@pytest.mark.parametrize("word", ["<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'])
def test_unbalanced_heredoc_delimiter_is_an_error(word: str) -> None:
    with pytest.raises(HeredocError):
        parse_heredoc_word(word)


@pytest.mark.parametrize("line, names", [
    ("RUN <<EOF", ["EOF"]),
    ("RUN <<EOF <<EOF2", ["EOF", "EOF2"]),
    ("RUN 4<<EOF", ["EOF"]),
    ("RUN << -EOF", ["-EOF"]),
    ("RUN '<<EOF'", []),
    ('RUN "<<EOF"', []),
    ("RUN cat<<EOF", []),
    ("RUN <<- EOF", []),  # the lexer makes "<<-" one word: no delimiter
    ('RUN echo "unterminated <<EOF', []),
])
def test_heredoc_markers_found_on_a_line(line: str, names: list[str]) -> None:
    assert [m.name for m in heredocs_in_line(line)] == names


def test_heredocs_only_for_run_copy_add_in_shell_form() -> None:
    tree = parse('FROM a\nUSER <<X\nX\nRUN ["<<EOF"]\nCMD <<Y\n')
    assert [n.keyword for n in tree.nodes] == ["from", "user", "x", "run", "cmd"]
    assert all(not n.heredocs for n in tree.nodes)


def test_onbuild_heredoc_belongs_to_the_trigger() -> None:
    node = one("ONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert dump_node(node) == '''onbuild (run "<<EOF")'''
    assert node.heredocs == (Heredoc("EOF", "echo hi\n"),)
    assert node.child is not None and node.child.heredocs == node.heredocs
    assert (node.start_line, node.end_line) == (2, 4)


def test_unterminated_heredoc_points_at_its_marker() -> None:
    with pytest.raises(HeredocError) as info:
        parse("FROM a\nRUN cat <<EOF\nhello\n", file="df")
    err = info.value
    assert (err.file, err.line, err.column, err.name) == ("df", 2, 9, "EOF")
    assert err.render().splitlines()[1:] == [" 2 | RUN cat <<EOF", "             ^"]


def test_heredoc_body_keeps_crlf_and_terminator_ignores_it() -> None:
    run = one("RUN <<EOF\r\necho a\r\nEOF\r\n")
    assert run.heredocs[0].content == "echo a\r\n"


# --- continuations, comments, escape ------------------------------------------------------------

def test_continuation_skips_comments_and_blank_lines_with_a_warning() -> None:
    tree = parse("FROM a\nRUN echo a \\\n# a comment\n\n    b \\\n  # indented comment\n c\n")
    run = tree.nodes[1]
    assert run.args == ("echo a     b  c",)
    assert run.original == "RUN echo a     b  c"
    assert (run.start_line, run.end_line) == (2, 7)
    assert len(tree.warnings) == 1 and "Empty continuation line" in tree.warnings[0]


def test_continuation_at_end_of_file_ends_the_instruction() -> None:
    assert dump(parse("FROM a\nRUN something \\")) == '(from "a")\n(run "something")\n'


def test_double_escape_at_end_is_not_a_continuation() -> None:
    tree = parse("FROM a\nENV C x\\\\\nENV D y\n")
    assert [n.args for n in tree.nodes[1:]] == [("C", "x\\\\", ""), ("D", "y", "")]


def test_backtick_escape_directive() -> None:
    tree = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  /b\nCOPY `\n  x y\n")
    assert tree.directives.escape == "`"
    assert [n.args for n in tree.nodes[1:]] == [("dir c:\\   /b",), ("x", "y")]
    assert (tree.nodes[2].start_line, tree.nodes[2].end_line) == (5, 6)


def test_backtick_escapes_in_env_words() -> None:
    env = parse('# escape=`\nFROM a\nENV a=x`"y b=z\n').nodes[1]
    assert env.args == ("a", 'x`"y', "=", "b", "z", "=")
    assert one('ENV a=x`"y b=z\n').args == ("a", 'x`"y b=z', "=")  # ` is no escape by default


def test_directives_only_before_the_first_other_line() -> None:
    tree = parse("# syntax=docker/dockerfile:1.7\n# check=skip=all\n\n# escape=`\nFROM a\n")
    d = tree.directives
    assert (d.syntax, d.check, d.escape) == ("docker/dockerfile:1.7", "skip=all", "\\")
    late = parse("FROM a\n# escape=`\nRUN a `\n")
    assert late.directives.escape == "\\"
    assert late.nodes[1].args == ("a `",)


def test_syntax_after_a_shebang_line_is_found() -> None:
    tree = parse("#!/usr/bin/env buildctl\n# syntax=example/front:1\nFROM a\n")
    assert tree.directives.syntax == "example/front:1"


@pytest.mark.parametrize("text, line", [
    ("# escape=`\n# escape=\\\nFROM a\n", 2),
    ("# escape=x\nFROM a\n", 1),
])
def test_bad_directives(text: str, line: int) -> None:
    with pytest.raises(DirectiveError) as info:
        parse(text)
    assert info.value.line == line and info.value.directive == "escape"


def test_comments_are_attached_to_the_next_instruction() -> None:
    tree = parse("# top\nFROM a\n# one\n#\n# two\n\n# three\nRUN x\n")
    assert tree.nodes[0].comments == ("top",)
    assert tree.nodes[1].comments == ("two", "three")


def test_byte_order_mark_and_crlf() -> None:
    tree = parse("\ufeff# escape=`\r\nFROM a\r\nRUN b `\r\n c\r\n")
    assert tree.directives.escape == "`"
    assert tree.nodes[1].args == ("b  c",)


# --- forms, flags, instructions ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('CMD ["a", "b"]', '(cmd "a" "b")'),
    ("CMD ['a']", '''(cmd "['a']")'''),
    ('CMD ["a", NaN]', '(cmd "[\\"a\\", NaN]")'),
    ('CMD ["a", 1e999]', '(cmd "[\\"a\\", 1e999]")'),
    ('CMD ["\\ud800x"]', '(cmd "\ufffdx")'),
    ('SHELL ["/bin/sh", "-c"]', '(shell "/bin/sh" "-c")'),
    ('ENTRYPOINT []', '(entrypoint)'),
    ("COPY --from=build --chmod=755 a b /c/", '(copy ["--from=build" "--chmod=755"] "a" "b" "/c/")'),
    ('COPY --chown="a b" -- --weird /x', '(copy ["--chown=a b"] "--weird" "/x")'),
    ("HEALTHCHECK NONE", '(healthcheck "NONE")'),
    ('HEALTHCHECK --interval=5s CMD ["curl", "-f"]', '(healthcheck ["--interval=5s"] "CMD" "curl" "-f")'),
    ("MAINTAINER Jane Doe <j@d>", '(maintainer "Jane Doe <j@d>")'),
    ("STOPSIGNAL SIGTERM", '(stopsignal "SIGTERM")'),
    ("ARG a b=c", '(arg "a" "b=c")'),
    ("LABEL a=b c=\"d e\"", '(label "a" "b" "=" "c" "\\"d e\\"" "=")'),
    ("EXPOSE 80/tcp 443", '(expose "80/tcp" "443")'),
    ("ONBUILD ONBUILD RUN x", '(onbuild (onbuild (run "x")))'),
    ("ONBUILD", "(onbuild)"),
    ("RUNN echo hi", '(runn "")'),
    ("run lower case", '(run "lower case")'),
])
def test_instruction_shapes(text: str, expected: str) -> None:
    assert dump(parse("FROM a\n" + text + "\n")).splitlines()[1] == expected


def test_exec_form_sets_json_and_unknown_keeps_original() -> None:
    assert one('RUN ["a"]').json is True
    assert one("RUN a").json is False
    unknown = one("FRM --x=1 ubuntu")
    assert (unknown.keyword, unknown.flags, unknown.original) == ("frm", ("--x=1",), "FRM --x=1 ubuntu")


def test_go_quote_matches_strconv_quote() -> None:
    assert go_quote('a"b\\c\n\t\x00\x7f\u00a0é☃\U0001F600') == \
        '"a\\"b\\\\c\\n\\t\\x00\\x7f\\u00a0é☃\U0001F600"'


# --- errors ---------------------------------------------------------------------------------------

def test_env_without_value_points_at_the_line() -> None:
    with pytest.raises(DockerfileSyntaxError) as info:
        parse("FROM a\n\n  ENV PATH\n", file="x/Dockerfile")
    err = info.value
    assert (err.file, err.line, err.column) == ("x/Dockerfile", 3, 7)
    assert err.message == "ENV must have two arguments"
    assert err.source_line == "  ENV PATH"


def test_env_word_without_equals_points_at_the_word() -> None:
    with pytest.raises(DockerfileSyntaxError) as info:
        parse("FROM a\nLABEL a=b oops c=d\n")
    assert (info.value.line, info.value.column, info.value.token) == (2, 11, "oops")
    assert "can't find = in \"oops\"" in info.value.message


def test_error_on_a_continued_instruction_reports_its_first_line() -> None:
    with pytest.raises(DockerfileSyntaxError) as info:
        parse('FROM a\nCMD [ "a", \\\n  ["b"] ]\n')
    assert info.value.line == 2


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n# comments\n", "  \t\n"])
def test_no_instructions(text: str) -> None:
    with pytest.raises(EmptyDockerfileError):
        parse(text)


def test_too_long_line() -> None:
    with pytest.raises(LineTooLongError) as info:
        parse("FROM a\nLABEL x=" + "a" * 65536 + "\n")
    assert info.value.line == 2
    parse("FROM a\nLABEL x=" + "a" * (65535 - 8) + "\n")  # exactly at the limit: fine


def test_onbuild_nesting_is_bounded() -> None:
    with pytest.raises(DockerfileError):
        parse("ONBUILD " * 500 + "RUN x\n")


def test_errors_are_value_errors_and_render_with_a_caret() -> None:
    with pytest.raises(ValueError) as info:
        parse('FROM a\nCMD ["x", {"y": 1}]\n')
    assert isinstance(info.value, DockerfileError)
    assert "^" in info.value.render()


# --- directives as the front end detects them, and rendering back ---------------------------

def test_syntax_detection_accepts_slash_comments_and_json() -> None:
    from cloche.dockerfile.directives import read_directive
    assert read_directive("syntax", "// syntax=a/b:1\nFROM x\n", any_format=True) == "a/b:1"
    assert read_directive("syntax", '{"syntax": "c/d"}', any_format=True) == "c/d"
    assert read_directive("syntax", "// syntax=a/b:1\nFROM x\n") is None
    assert read_directive("check", "#!/bin/x\n# check=error=true\n") == "error=true"


def test_to_dockerfile_renders_a_readable_equivalent() -> None:
    from cloche.dockerfile.dump import to_dockerfile
    tree = parse('# escape=`\n# hello\nFROM a AS b\nCOPY --chown="x y" <<EOF /d\nbody\nEOF\n'
                 'ENV k=v `\n  l="m n"\nCMD ["a", "b"]\nONBUILD RUN x\n')
    assert to_dockerfile(tree) == (
        '# escape=`\n\n# hello\nFROM a AS b\nCOPY --"chown=x y" <<EOF /d\nbody\nEOF\n'
        'ENV k=v l="m n"\nCMD ["a", "b"]\nONBUILD RUN x\n')
    assert dump(parse(to_dockerfile(tree))) == dump(tree)


def test_lone_escape_at_end_of_file_is_an_empty_instruction() -> None:
    """BuildKit keeps it as an instruction with an empty name (rejected when typed)."""
    from cloche.dockerfile.dump import to_dockerfile
    tree = parse("FROM a\n\\")
    assert dump(tree) == '(from "a")\n("")\n'
    assert dump(parse(to_dockerfile(tree))) == dump(tree)
