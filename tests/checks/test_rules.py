"""BuildKit's build checks (cloche.plan.checks), rule by rule: a Dockerfile that raises the
rule (exact message and line) and one that must not. Cases mirror the expectations of
moby/buildkit frontend/dockerfile/dockerfile_check_test.go (test named per case)."""

from __future__ import annotations

import pytest

from cloche.dockerfile.stages import parse_dockerfile
from cloche.errors import ConfigError
from cloche.plan.checks import RULES, CheckConfig, check_config, run_checks

ALPINE_ENV = (("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),)


def lint(text: str, config: str = "", **kw: object) -> list[tuple[str, str, int]]:
    df = parse_dockerfile(text.lstrip("\n") if kw.pop("strip", False) else text)
    cfg = CheckConfig.parse(config)
    kw.setdefault("all_stages", True)
    kw.setdefault("base_env", lambda ref, platform: ALPINE_ENV)
    return [(w.rule, w.message, w.line) for w in run_checks(df, cfg, **kw)]  # type: ignore[arg-type]


def rules(text: str, **kw: object) -> list[str]:
    return [r for r, _, _ in lint(text, **kw)]


# (rule, Dockerfile raising it, message, line, Dockerfile that must not raise it)
CASES = [
    # testStageName
    ("StageNameCasing", "FROM scratch AS BadStageName\n",
     "Stage name 'BadStageName' should be lowercase", 1, "FROM scratch AS good\n"),
    # testStageName (FROM/AS casing)
    ("FromAsCasing", "FROM scratch as base\n",
     "'as' and 'FROM' keywords' casing do not match", 1,
     "FROM scratch AS base\nfrom scratch as base2\n"),
    # testNoEmptyContinuation
    ("NoEmptyContinuation", "\nFROM scratch\n# warning: empty continuation line\n"
     "COPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n", "Empty continuation line", 6,
     "FROM scratch\nCOPY Dockerfile \\\n.\n"),
    # testConsistentInstructionCasing
    ("ConsistentInstructionCasing", "FROM scratch AS base\nrun echo\nRUN echo\n",
     "Command 'run' should match the case of the command majority (uppercase)", 2,
     "from scratch as base\nrun echo\n"),
    # testDuplicateStageName
    ("DuplicateStageName", "FROM scratch AS b\nFROM scratch AS b\n",
     'Duplicate stage name "b", stage names should be unique', 2,
     "FROM scratch AS b\nFROM scratch AS c\n"),
    # testReservedStageName
    ("ReservedStageName", "FROM scratch AS scratch\n",
     'Stage name should not use the same name as reserved stage "scratch"', 1,
     "FROM scratch AS base\n"),
    # testJSONArgsRecommended
    ("JSONArgsRecommended", "FROM scratch\nCMD mycommand\n",
     "JSON arguments recommended for CMD to prevent unintended behavior related to OS "
     "signals", 2, 'FROM scratch\nSHELL ["/bin/sh", "-c"]\nCMD mycommand\nENTRYPOINT ["x"]\n'),
    # testMaintainerDeprecated
    ("MaintainerDeprecated", "FROM scratch\nMAINTAINER me@example.org\n",
     "Maintainer instruction is deprecated in favor of using label", 2,
     'FROM scratch\nLABEL org.opencontainers.image.authors="me"\n'),
    # testUndeclaredArg
    ("UndefinedArgInFrom", "FROM alpine:${VERSION}\n",
     "FROM argument 'VERSION' is not declared", 1, "ARG VERSION=3\nFROM alpine:${VERSION}\n"),
    # testUndeclaredArg (suggestion of a predefined arg)
    ("UndefinedArgInFrom", "FROM --platform=$BULIDPLATFORM scratch AS b\n",
     "FROM argument 'BULIDPLATFORM' is not declared (did you mean BUILDPLATFORM?)", 1,
     "FROM --platform=$BUILDPLATFORM scratch AS b\n"),
    # testWorkdirRelativePath
    ("WorkdirRelativePath", "FROM alpine\nWORKDIR app/\n",
     'Relative workdir "app/" can have unexpected results if the base image changes', 2,
     "FROM alpine\nWORKDIR /app\nWORKDIR subdir\n"),
    # testUnmatchedVars
    ("UndefinedVar", "FROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n",
     "Usage of undefined variable '$foo'", 2, "FROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n"),
    ("UndefinedVar", "FROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\n"
     "COPY $DIR_ASSET .\n", "Usage of undefined variable '$DIR_ASSET' (did you mean "
     "$DIR_ASSETS?)", 4, "FROM alpine AS base\nARG foo=Dockerfile\nFROM base\nCOPY $foo .\n"),
    ("UndefinedVar", "FROM alpine\nENV PATH=$PAHT:/tmp/bin\n",
     "Usage of undefined variable '$PAHT' (did you mean $PATH?)", 2,
     "FROM alpine\nRUN echo $PATH\n"),
    # testMultipleInstructionsDisallowed: the earlier one is reported
    ("MultipleInstructionsDisallowed", 'FROM scratch\nCMD ["a"]\nCMD ["b"]\n',
     "Multiple CMD instructions should not be used in the same stage because only the last "
     "one will be used", 2, 'FROM scratch\nCMD ["a"]\nFROM scratch\nCMD ["b"]\n'),
    # testLegacyKeyValueFormat
    ("LegacyKeyValueFormat", "FROM scratch\nENV testkey value\n",
     '"ENV key=value" should be used instead of legacy "ENV key value" format', 2,
     "FROM scratch\nENV testkey=value\nLABEL a=b\n"),
    # testRedundantTargetPlatform
    ("RedundantTargetPlatform", "FROM --platform=$TARGETPLATFORM scratch\n",
     "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the "
     "default behavior", 1, "FROM --platform=$BUILDPLATFORM scratch AS b\n"),
    # testSecretsUsedInArgOrEnv
    ("SecretsUsedInArgOrEnv", "FROM scratch\nARG SECRET_PASSPHRASE\nENV SUPER_Secret=foo\n"
     "ARG auth_key=x\n", 'Do not use ARG or ENV instructions for sensitive data (ENV '
     '"SUPER_Secret")', 3, "FROM scratch\nARG PUBLIC_KEY\nENV PASSWORD_FILE=/run/s\n"),
    # testInvalidDefaultArgInFrom
    ("InvalidDefaultArgInFrom", "ARG VERSION\nFROM busybox:$VERSION\n",
     "Default value for ARG busybox:$VERSION results in empty or invalid base image name", 2,
     "ARG VERSION=latest\nFROM busybox:$VERSION\n"),
    # testFromPlatformFlagConstDisallowed
    ("FromPlatformFlagConstDisallowed", "FROM --platform=linux/amd64 scratch\n",
     'FROM --platform flag should not use constant value "linux/amd64"', 1,
     "FROM --platform=linux/amd64 scratch AS my_amd64_stage\n"),
    # testExposeProtoCasing
    ("ExposeProtoCasing", "FROM scratch\nEXPOSE 80/TcP\n",
     "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase", 2,
     "FROM scratch\nEXPOSE 80/tcp 81\n"),
    # testExposeInvalidFormat
    ("ExposeInvalidFormat", "FROM scratch\nEXPOSE 127.0.0.1:80:80\n",
     "EXPOSE instruction should not define an IP address or host-port mapping, found "
     "'127.0.0.1:80:80'", 2, "FROM scratch\nEXPOSE 80\n"),
]


@pytest.mark.parametrize("rule,bad,message,line,good", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_raised_with_message_and_line_and_not_for_the_good_file(
        rule: str, bad: str, message: str, line: int, good: str) -> None:
    assert (rule, message, line) in lint(bad)
    assert rule not in rules(good)


def test_every_current_rule_has_a_case_or_its_own_test() -> None:
    covered = {c[0] for c in CASES} | {"CopyIgnoredFile", "InvalidDefinitionDescription",
                                       "InvalidBaseImagePlatform"}
    assert covered == set(RULES)
    assert RULES["FromAsCasing"].url == \
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    assert RULES["JSONArgsRecommended"].url == \
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"


def test_copy_ignored_file() -> None:  # testCopyIgnoredFiles
    text = "FROM scratch\nCOPY ./Dockerfile .\nADD ./Dockerfile /windy\nCOPY Bar .\n"
    got = lint(text, ignored=lambda p: p == "Dockerfile")
    assert ("CopyIgnoredFile", 'Attempting to Copy file "Dockerfile" that is excluded by '
            ".dockerignore", 2) in got
    assert ("CopyIgnoredFile", 'Attempting to Add file "Dockerfile" that is excluded by '
            ".dockerignore", 3) in got
    assert [r for r, _, _ in got].count("CopyIgnoredFile") == 2
    assert "CopyIgnoredFile" not in rules(text)  # no ignore rules


def test_definition_description_is_experimental() -> None:  # testDefinitionDescription
    text = "# foo this is the foo\nARG foo=bar\n\n# bar this is the bar\nARG baz=qux\n" \
           "FROM scratch AS base\n"
    assert "InvalidDefinitionDescription" not in rules(text)
    got = lint(text, config="experimental=InvalidDefinitionDescription")
    assert [g for g in got if g[0] == "InvalidDefinitionDescription"] == [
        ("InvalidDefinitionDescription",
         "Comment for ARG should follow the format: `# baz <description>`", 5)]


def test_unreachable_stages_are_dispatched_only_when_asked() -> None:
    # a build dispatches the target's stages; --check without target all of them
    text = "FROM scratch AS a\nCMD x\nFROM scratch AS b\nCMD [\"y\"]\n"
    assert "JSONArgsRecommended" in rules(text)
    assert "JSONArgsRecommended" not in rules(text, all_stages=False)
    assert "JSONArgsRecommended" in rules(text, all_stages=False, target="a")


def test_unknown_base_image_env_skips_undefined_var() -> None:
    text = "FROM alpine\nENV X=$FROM_IMAGE\n"
    assert "UndefinedVar" in rules(text)
    assert "UndefinedVar" not in rules(text, base_env=lambda ref, platform: None)


def test_skip_and_skip_all_and_comment_config() -> None:  # testRuleCheckOption
    text = "FROM scratch as base\nCMD x\n"
    assert rules(text, config="skip=FromAsCasing") == ["JSONArgsRecommended"]
    assert rules(text, config="skip=FromAsCasing,JSONArgsRecommended;error=true") == []
    assert rules(text, config="skip=all") == []
    commented = "FROM scratch AS base\n# check=skip=JSONArgsRecommended\nCMD x\nCMD y\n"
    # the comment skips the rule for CMD x (line 3) only
    assert sorted(lint(commented)) == [
        ("JSONArgsRecommended", "JSON arguments recommended for CMD to prevent unintended "
         "behavior related to OS signals", 4),
        ("MultipleInstructionsDisallowed", "Multiple CMD instructions should not be used in "
         "the same stage because only the last one will be used", 3)]


def test_check_config_parsing() -> None:
    assert check_config("skip=A, B ;error=true", {}) == CheckConfig(
        skip=frozenset({"A", "B"}), error=True)
    # the build arg replaces the directive
    assert check_config("skip=A", {"BUILDKIT_DOCKERFILE_CHECK": "error=1"}) == \
        CheckConfig(error=True)
    with pytest.raises(ConfigError, match='failed to parse check options: invalid check '
                       'option "foo"'):
        check_config("foo=bar", {})
    with pytest.raises(ConfigError, match="failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK"):
        check_config(None, {"BUILDKIT_DOCKERFILE_CHECK": "error=maybe"})
