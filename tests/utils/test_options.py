import pytest

from src.utils.errors import UserError
from src.utils.options import look_up, look_up_all


def test_a_registry_gives_its_entry_and_a_collection_the_name():
    assert look_up("b", {"a": 1, "b": 2}, "x") == 2
    assert look_up("flip", ("none", "flip"), "x") == "flip"
    assert look_up_all("z", ("z", "xz"), "views") == ["z"]
    assert look_up_all(["xz", "z"], ("z", "xz"), "views") == ["xz", "z"]


def test_an_unknown_name_is_one_line_naming_the_setting_and_the_choices():
    with pytest.raises(UserError) as err:
        look_up("averge", ("roi", "average"), "blend.mode")
    assert str(err.value) == "blend.mode: unknown 'averge' (did you mean 'average'?); choose one of roi, average"
    with pytest.raises(UserError, match=r"^engine.views: unknown 'q'; choose one of z, xz$"):
        look_up_all(["z", "q"], ("z", "xz"), "engine.views")
    with pytest.raises(UserError, match="unknown 3;"):
        look_up(3, {"a": 1}, "x")
