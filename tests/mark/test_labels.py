"""Tag labels: decimal numbers or bijective base-26 letters."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from som.mark.labels import alpha_label, tag_label


def alpha_to_number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 26 + (ord(char) - ord("a") + 1)
    return value


@pytest.mark.parametrize(
    ("number", "label"),
    [(1, "a"), (2, "b"), (26, "z"), (27, "aa"), (28, "ab"), (52, "az"), (53, "ba"), (702, "zz"), (703, "aaa")],
)
def test_alpha_labels_are_bijective_base_26(number, label):
    assert alpha_label(number) == label


@given(st.integers(min_value=1, max_value=10**6))
def test_alpha_label_round_trips_and_uses_letters_only(number):
    label = alpha_label(number)
    assert label.isalpha() and label.islower()
    assert alpha_to_number(label) == number


def test_number_mode_and_invalid_input():
    assert tag_label(12, "number") == "12"
    assert tag_label(12, "alpha") == "l"
    with pytest.raises(ValueError):
        alpha_label(0)
    with pytest.raises(ValueError, match="label mode"):
        tag_label(1, "roman")
