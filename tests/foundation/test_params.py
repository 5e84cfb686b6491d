"""kdiff_cli.params: the one key=value parser behind --set, --param, --method name:k=v and --method-opt."""

import pytest

from kdiff_cli import params
from kdiff_cli.errors import KdiffError


@pytest.mark.parametrize("word", ["true", "YES", "on", "1"])
def test_true_words(word):
    assert params.parse_bool(word, "k", "--x") is True
    assert params.convert(word, False, "k", "--x") is True


@pytest.mark.parametrize("word", ["false", "No", "off", "0"])
def test_false_words(word):
    assert params.convert(word, True, "k", "--x") is False


def test_untyped_values():
    got = [params.parse_value(v) for v in ("25", "0.5", "-3e-2", "true", "False", "no", "none", "NULL", " ddim ")]
    assert got == [25, 0.5, -0.03, True, False, False, None, None, "ddim"]
    assert params.parse_pairs(["steps=5", "refine-steps=2", "a=b=c"], "--opt") == {"steps": 5, "refine_steps": 2, "a": "b=c"}


def test_typed_conversion_follows_the_default():
    assert params.convert("7", 3, "n", "--x") == 7 and isinstance(params.convert("7", 0.5, "s", "--x"), float)
    assert params.convert("none", None, "s", "--x") is None and params.convert("0.2", None, "s", "--x") == 0.2
    assert params.convert("random", None, "s", "--x", none_words=("random",)) is None
    assert params.convert("abc", "", "name", "--x") == "abc"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: params.parse_bool("maybe", "flip", "--set"), "bad --set flip='maybe': expected true or false"),
        (lambda: params.convert("2.5", 3, "n", "--param"), "bad --param n='2.5': expected an integer"),
        (lambda: params.convert("big", 0.1, "s", "--param"), "bad --param s='big': expected a number"),
        (lambda: params.convert("big", None, "s", "--param"), "bad --param s='big': expected a number or none"),
        (lambda: params.split_pair("steps", "--method-opt"), "bad --method-opt 'steps': expected key=value"),
        (lambda: params.split_pair("=3", "--method-opt"), "bad --method-opt '=3': expected key=value"),
    ],
)
def test_errors_are_one_line_and_name_the_option(call, message):
    with pytest.raises(KdiffError) as e:
        call()
    assert str(e.value) == message
