"""The commands' one rule for column lists and numbers given as text."""

import pytest

from reprogrid.commands.args import column_list, number, positive
from reprogrid.errors import UserError


@pytest.mark.parametrize("text, expected", [(None, []), ("", []), ("  ", []), ("a", ["a"]), (" a , b ", ["a", "b"])])
def test_column_list_parses(text, expected):
    assert column_list(text, "--x") == expected


@pytest.mark.parametrize("text, match", [("a,,b", "comma-separated"), ("a,", "comma-separated"),
                                         ("a,b,a", "listed twice")])
def test_column_list_refuses_with_the_option_named(text, match):
    with pytest.raises(UserError, match=match) as err:
        column_list(text, "--factors")
    assert str(err.value).startswith("--factors: ")


def test_number_and_positive():
    assert number("12") == 12 and number("x") == "x" and number(3.5) == 3.5
    assert positive(None, "--h") is None and positive("0.5", "--h") == 0.5
    for bad in ("0", "-1", "nan", "abc"):
        with pytest.raises(UserError, match="positive"):
            positive(bad, "--h")
