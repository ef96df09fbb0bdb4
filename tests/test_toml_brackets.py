"""The bracket scan behind two TOML errors: an array never closed, named where it
opened, and values nested past the limit, cut so that tomllib can parse the rest."""
import tomllib

import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from laminae.network.toml_brackets import first_unclosed, line_and_column, offset_of, without_values_deeper_than

TRICKY = '''\
# a comment with [ and {
[models."a]b".train]  # a header whose key holds a bracket
s1 = "[{\\"#"
s2 = 'C:\\[{'
s3 = """
x [ {
\\""" ]"""
s4 = \'\'\'
{ [ #\'\'\'
deep = [[[1], [2, [3]]], { a = [{ b = [] }] }]
spread = [
  [1, 2],  # ]]
  [
    3,
  ],
]
[[runs]]
x = 1
  [ "sp]aced" . 'k{ey' ]  # an indented header
y = [ ]
'''

text_chars = st.sampled_from(list("ab[]{}\"'#\\\n\t "))
values = st.recursive(
    st.integers(-3, 3) | st.text(text_chars, max_size=6) | st.booleans(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(text_chars, min_size=1, max_size=3), inner, max_size=3),
    max_leaves=12,
)
documents = st.dictionaries(st.text(text_chars, min_size=1, max_size=3), values, min_size=1, max_size=4)


def test_strings_comments_and_headers_hold_no_bracket_that_counts():
    tomllib.loads(TRICKY)
    assert first_unclosed(TRICKY, len(TRICKY)) is None
    cut = without_values_deeper_than(TRICKY, 1)
    assert tomllib.loads(cut)["models"]["a]b"]["train"]["deep"] == [0, 0]
    assert tomllib.loads(cut)["models"]["a]b"]["train"]["spread"] == [0, 0]
    assert cut.count("\n") == TRICKY.count("\n") and len(cut) == len(TRICKY)


def test_an_array_left_open_is_found_where_it_opened_not_where_tomllib_noticed():
    text = TRICKY.replace("    3,\n  ],\n]\n", "    3,\n  ],\n\n")
    assert first_unclosed(text, len(text)) == ("array", text.index("spread = [") + 9)
    assert line_and_column(text, text.index("spread = [") + 9) == (11, 10)


def test_a_bracket_opened_after_tomllibs_mistake_is_not_blamed():
    text = "a = = 1\nb = [\n"
    assert first_unclosed(text, offset_of(text, 1, 5)) is None
    assert first_unclosed(text, len(text)) == ("array", 12)


def test_a_closing_bracket_of_another_kind_leaves_the_inner_one_open():
    text = 'layers = [\n  { type = "relu" ,\n  { type = "x" },\n]\n'
    assert first_unclosed(text, len(text)) == ("inline table", text.index("{"))


@settings(max_examples=200, deadline=None)
@given(documents)
def test_a_written_document_has_every_bracket_closed_and_cuts_to_a_parsable_one(doc):
    text = tomlkit.dumps(doc)
    assert tomllib.loads(text) == doc
    assert first_unclosed(text, len(text)) is None
    assert without_values_deeper_than(text, 100) == text
    for limit in (0, 1, 2):
        cut = without_values_deeper_than(text, limit)
        assert len(cut) == len(text) and cut.count("\n") == text.count("\n")
        tomllib.loads(cut)
        assert without_values_deeper_than(cut, limit) == cut
