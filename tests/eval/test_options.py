"""An evaluation's model and tagging options are checked before any job (som.eval.options)."""

from __future__ import annotations

import pytest

from som.eval.options import check_model_options, check_tag_options
from som.settings import SettingsError


def test_model_options_are_typed_and_keep_only_the_keys_given() -> None:
    assert check_model_options(None) == {}
    assert check_model_options({"max_new_tokens": "4", "local_files_only": "true"}) == {
        "max_new_tokens": 4,
        "local_files_only": True,
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_new_token": 4}, "model_kwargs: unknown key 'max_new_token' (did you mean max_new_tokens?)"),
        ({"max_new_tokens": 0}, "model_kwargs: max_new_tokens: Input should be greater than or equal to 1"),
        ({"local_files_only": "maybe"}, "model_kwargs: local_files_only: Input should be a valid boolean"),
    ],
)
def test_bad_model_options_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        check_model_options(values)
    assert str(caught.value) == message


def test_tag_options_are_checked_and_passed_on_as_given() -> None:
    """They are hashed into prompt hashes as given, so the check must not retype them."""
    given = {"segmenter": "slic", "params": {"n_segments": "6"}, "mark_options": {"short_side": 0}}
    assert check_tag_options(given) == given and check_tag_options(None) is None
    with pytest.raises(
        SettingsError,
        match=r"tag_options: params: segmenter slic: unknown key 'n_segment' "
        r"\(did you mean n_segments\?\)",
    ):
        check_tag_options({"segmenter": "slic", "params": {"n_segment": 6}})
    with pytest.raises(SettingsError, match="tag_options: mark_options: unknown key 'colour'"):
        check_tag_options({"segmenter": "slic", "mark_options": {"colour": "red"}})
    with pytest.raises(SettingsError, match="tag_options: segmenter: unknown segmenter 'nope'"):
        check_tag_options({"segmenter": "nope"})
