"""ddl._validate: one message style for every check (where: name must be rule; got value.)."""

import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import ddl._validate
from ddl._validate import (BadFileError, WrongTypeError, check_bool, check_choice, check_images, check_int,
                           check_int_pair, check_labels, check_number, check_optional_int, check_optional_number,
                           close_match, describe, is_int, is_real, load_torch_file, require_keys)
from ddl.errors import DDLError


def _full(message: str) -> str:
    """A pattern matching exactly ``message`` (one line, regex characters escaped)."""
    return f"^{re.escape(message)}$"


@pytest.mark.parametrize("call, message", [
    (lambda: check_int("f", "n", 0, 1), "f: n must be an int >= 1; got 0."),
    (lambda: check_int("f", "n", 9, 1, 8), "f: n must be an int in [1, 8]; got 9."),
    (lambda: check_int("f", "n", True, 0), "f: n must be an int >= 0; got True."),
    (lambda: check_int("f", "n", 2.0, 0), "f: n must be an int >= 0; got 2.0."),
    (lambda: check_optional_int("f", "n", -1, 0), "f: n must be an int >= 0; got -1."),
    (lambda: check_int("f", "win", 4, 3, odd=True), "f: win must be an odd int >= 3; got 4."),
    (lambda: check_int("f", "win", 1, 3, odd=True), "f: win must be an odd int >= 3; got 1."),
    (lambda: check_number("f", "lr", 0, 0, low_open=True), "f: lr must be a finite number > 0; got 0."),
    (lambda: check_number("f", "t", 1.5, 0, 1), "f: t must be a finite number in [0, 1]; got 1.5."),
    (lambda: check_number("f", "t", float("nan")), "f: t must be a finite number; got nan."),
    (lambda: check_number("f", "t", 10**400), f"f: t must be a finite number; got {10**400}."),
    (lambda: check_number("f", "t", -10**400, 0), f"f: t must be a finite number >= 0; got {-10**400}."),
    (lambda: check_optional_number("f", "t", 10**400), f"f: t must be None or a finite number; got {10**400}."),
    (lambda: check_number("f", "p", 9.0, 0, 9, low_open=True, high_open=True),
     "f: p must be a finite number in (0, 9); got 9.0."),
    (lambda: check_number("f", "t", 1, high=1, high_open=True), "f: t must be a finite number < 1; got 1."),
    (lambda: check_optional_number("f", "clip", 0.0, 0, low_open=True), "f: clip must be None or a finite number > 0; got 0.0."),
    (lambda: check_optional_number("f", "tol", "1", 0), "f: tol must be None or a finite number >= 0; got '1'."),
    (lambda: check_int_pair("f", "step", 0), "f: step must be an int >= 1 or a pair of them; got 0."),
    (lambda: check_int_pair("f", "patch_size", (8, 2.5)), "f: patch_size must be an int >= 1 or a pair of them; got (8, 2.5)."),
    (lambda: check_int_pair("f", "patch_size", (8, 8, 8)), "f: patch_size must be an int >= 1 or a pair of them; got (8, 8, 8)."),
    (lambda: check_int_pair("f", "patch_size", True), "f: patch_size must be an int >= 1 or a pair of them; got True."),
    (lambda: check_choice("f", "model", "convnt", ("mlp", "convnet")),
     "f: model must be one of mlp, convnet; got 'convnt' (did you mean 'convnet'?)."),
])
def test_checks_name_where_parameter_rule_and_value(call, message):
    with pytest.raises(ValueError, match=_full(message)):
        call()


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_check_bool_refuses_what_is_not_a_bool_with_a_type_error(value):
    with pytest.raises(TypeError, match=_full(f"f: flag must be a bool; got {value!r}.")):
        check_bool("f", "flag", value)


@pytest.mark.parametrize("call", [
    lambda: check_int("f", "n", 2.0, 0), lambda: check_int("f", "n", None, 0), lambda: check_bool("f", "flag", 1),
    lambda: check_number("f", "x", "1"), lambda: check_number("f", "x", True),
    lambda: check_optional_number("f", "x", "1"), lambda: check_int_pair("f", "p", 2.5),
    lambda: check_int_pair("f", "p", (8, 8, 8)), lambda: check_int_pair("f", "p", (8, "4")),
    lambda: check_int_pair("f", "p", True),
])
def test_a_value_of_the_wrong_type_is_both_a_type_error_and_a_value_error(call):
    with pytest.raises(WrongTypeError) as info:
        call()
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_a_value_out_of_range_is_a_value_error_only():
    for call in (lambda: check_int("f", "n", 0, 1), lambda: check_number("f", "x", -1.0, 0),
                 lambda: check_number("f", "x", float("inf")), lambda: check_number("f", "x", 10**400),
                 lambda: check_int_pair("f", "p", 0), lambda: check_int_pair("f", "p", (8, 0))):
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, TypeError)


def test_checks_return_the_value():
    assert check_int("f", "win", 7, 3, odd=True) == 7
    assert check_int("f", "n", 3, 1) == 3 and check_optional_int("f", "n", None, 1) is None
    assert check_number("f", "x", 1) == 1.0 and isinstance(check_number("f", "x", 1), float)
    assert check_choice("f", "a", "b", "abc") == "b"
    assert check_bool("f", "flag", False) is False
    assert check_int_pair("f", "p", 8) == (8, 8) and check_int_pair("f", "p", [8, 4]) == (8, 4)
    assert check_optional_number("f", "x", None) is None and check_optional_number("f", "x", 2) == 2.0
    assert check_number("f", "p", 0.5, 0, 1, low_open=True, high_open=True) == 0.5
    assert close_match("resnett", ["resnet", "mlp"]) == " (did you mean 'resnet'?)" and close_match("zzz", ["mlp"]) == ""


def test_load_torch_file_reports_each_kind_of_bad_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"x": torch.zeros(2)}, good)
    assert torch.equal(load_torch_file(good, where="f", what="file")["x"], torch.zeros(2))
    (tmp_path / "text.pt").write_text("hello\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "half.pt").write_bytes(good.read_bytes()[:200])
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"x": 1}))
    cases = {"text.pt": "is not a readable torch file (a text file, 6 bytes",
             "empty.pt": "is empty (0 bytes)",
             "half.pt": "is not a readable torch file (corrupt or truncated, 200 bytes",
             "pickle.pt": "is not a readable torch file", "missing.pt": "does not exist", ".": "is not a file"}
    for name, text in cases.items():
        with pytest.raises(BadFileError) as info:
            load_torch_file(tmp_path / name, where="f", what="file")
        assert str(info.value).startswith(f"f: file {tmp_path / name} {text}"), str(info.value)
        assert isinstance(info.value, DDLError) and isinstance(info.value, ValueError)
        assert "weights_only=False" not in str(info.value)


def test_require_keys_names_what_is_missing_and_what_is_there(tmp_path):
    require_keys("f", "file", "a.pt", {"x": 1, "y": 2}, ("x", "y"))
    with pytest.raises(BadFileError, match=_full("f: file a.pt lacks 'y' (it holds 'x').")):
        require_keys("f", "file", "a.pt", {"x": 1}, ("x", "y"))
    with pytest.raises(BadFileError,
                       match=_full("--input a.pt lacks 'x' or 'x_adv' (it holds nothing).")):
        require_keys("", "--input", "a.pt", {}, ("x", "x_adv"), any_of=True)
    with pytest.raises(BadFileError, match=_full("--input a.pt holds a list, not a dict with 'x'.")):
        require_keys("", "--input", "a.pt", [1], ("x",))


def test_numpy_scalars_are_numbers_and_numpy_bools_are_not():
    import numpy as np

    from ddl._validate import check_int, check_number

    assert check_int("f", "n", np.int64(3), 1) == 3
    assert check_number("f", "x", np.float32(0.5), 0, 1) == 0.5
    with pytest.raises(ValueError, match=_full(f"f: n must be an int >= 1; got {np.bool_(True)!r}.")):
        check_int("f", "n", np.bool_(True), 1)
    with pytest.raises(ValueError, match=_full(f"f: x must be a finite number >= 0; got {np.bool_(False)!r}.")):
        check_number("f", "x", np.bool_(False), 0)


def test_numpy_scalars_come_back_as_python_numbers():
    """What the checks return can be pickled weights-only, dumped as JSON and given to Pillow."""
    for value in (check_int("f", "n", np.int64(3), 1), check_optional_int("f", "n", np.uint8(3), 1),
                  check_int("f", "w", np.int32(3), 1, odd=True)):
        assert type(value) is int and value == 3
    assert type(check_number("f", "x", np.float32(0.5))) is float
    assert type(check_number("f", "x", np.int64(2))) is float
    assert type(check_optional_number("f", "x", np.float64(0.5))) is float
    assert check_int_pair("f", "p", (np.int64(8), np.int16(4))) == (8, 4)
    assert all(type(v) is int for v in check_int_pair("f", "p", np.int64(8)))


def test_is_int_and_is_real_are_public_and_refuse_bools():
    assert {"is_int", "is_real"} <= set(ddl._validate.__all__)
    assert not hasattr(ddl._validate, "_is_int") and not hasattr(ddl._validate, "_is_real")
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(np.bool_(True)) and not is_int(3.0)
    assert is_real(3) and is_real(np.float32(0.5)) and not is_real(False) and not is_real("1")


# ----------------------------------------------------------------------------- tensors
_IMAGES = "f: x must be a floating-point tensor of shape (N, C, H, W) with values in [0, 1]; got "
_LABELS = "f: y must be an int64 tensor of shape (3,) with values in [0, 2); got "


@pytest.mark.parametrize("call, error, message", [
    (lambda: check_images("f", "x", [[0.5]]), WrongTypeError, _IMAGES + "list."),
    (lambda: check_images("f", "x", torch.zeros(2, 3, dtype=torch.float64)), WrongTypeError,
     _IMAGES + "float64 tensor of shape (2, 3)."),
    (lambda: check_images("f", "x", torch.zeros(2, 1, 4, 4, dtype=torch.uint8)), WrongTypeError,
     _IMAGES + "uint8 tensor of shape (2, 1, 4, 4) (convert with ddl.data.to_float_images or x.float() / 255)."),
    (lambda: check_images("f", "x", torch.full((2, 1, 4, 4), 1.5)), ValueError,
     _IMAGES + "float32 tensor of shape (2, 1, 4, 4) with values in [1.5, 1.5]."),
    (lambda: check_images("f", "x", torch.tensor([[[[-0.25, 0.5]]]])), ValueError,
     _IMAGES + "float32 tensor of shape (1, 1, 1, 2) with values in [-0.25, 0.5]."),
    (lambda: check_images("f", "x", torch.tensor([[[[float("nan"), 0.5]]]])), ValueError,
     _IMAGES + "float32 tensor of shape (1, 1, 1, 2) with NaN values."),
    (lambda: check_images("fit", "x", torch.zeros(2, 1, 4, 4, dtype=torch.float64), value_range=None,
                          dtype=torch.float32), WrongTypeError,
     "fit: x must be a float32 tensor of shape (N, C, H, W); got float64 tensor of shape (2, 1, 4, 4) "
     "(convert with x.to(torch.float32))."),
    (lambda: check_images("pgd", "x", torch.zeros(0, 1, 4, 4), value_range=(-1, 1), nonempty=True,
                          range_from="the clip range"), WrongTypeError,
     "pgd: x must be a floating-point tensor of shape (N, C, H, W) with every size >= 1 and values in [-1, 1] "
     "(the clip range); got float32 tensor of shape (0, 1, 4, 4)."),
    (lambda: check_images("g", "images", np.zeros((2, 1, 4, 4), np.float32), value_range=None), WrongTypeError,
     "g: images must be a floating-point tensor of shape (N, C, H, W); got float32 numpy array of shape "
     "(2, 1, 4, 4)."),
    (lambda: check_labels("f", "y", [0, 1, 1], 3, 2), WrongTypeError, _LABELS + "list."),
    (lambda: check_labels("f", "y", torch.zeros(3, dtype=torch.int32), 3, 2), WrongTypeError,
     _LABELS + "int32 tensor of shape (3,)."),
    (lambda: check_labels("f", "y", torch.zeros(3, 1, dtype=torch.int64), 3, 2), WrongTypeError,
     _LABELS + "int64 tensor of shape (3, 1)."),
    (lambda: check_labels("f", "y", torch.tensor([0, 2, 1]), 3, 2), ValueError,
     _LABELS + "int64 tensor of shape (3,) with values in [0, 2]."),
    (lambda: check_labels("f", "y", torch.tensor([-1, 0, 1]), 3, 2), ValueError,
     _LABELS + "int64 tensor of shape (3,) with values in [-1, 1]."),
    (lambda: check_labels("fgsm", "y", torch.zeros(2, dtype=torch.int64), 3, 10, per="image of x",
                          classes_from="the model has 10 outputs"), WrongTypeError,
     "fgsm: y must be an int64 tensor of shape (3,) (one per image of x) with values in [0, 10) "
     "(the model has 10 outputs); got int64 tensor of shape (2,)."),
    (lambda: check_labels("f", "y", torch.zeros(2, dtype=torch.int64), 3, per="prediction"), WrongTypeError,
     "f: y must be an int64 tensor of shape (3,) (one per prediction); got int64 tensor of shape (2,)."),
    (lambda: check_labels("cam", "target", 2, 3, 2, allow_int=True), ValueError,
     "cam: target must be an int or an int64 tensor of shape (3,) with values in [0, 2); got 2."),
    (lambda: check_labels("cam", "target", True, 3, allow_int=True), WrongTypeError,
     "cam: target must be an int or an int64 tensor of shape (3,); got bool."),
])
def test_tensor_checks_name_where_parameter_rule_and_what_was_received(call, error, message):
    with pytest.raises(error, match=_full(message)) as info:
        call()
    assert type(info.value) is error  # values out of range: a ValueError only, not a WrongTypeError


def test_tensor_checks_return_the_value():
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    assert check_images("f", "x", x) is x
    assert check_images("f", "x", x * 9, value_range=None) is not None  # no range: values unchecked
    assert check_images("f", "x", torch.zeros(0, 1, 4, 4)).shape == (0, 1, 4, 4)  # empty: allowed by default
    assert check_labels("f", "y", y, 2, 2) is y and check_labels("f", "y", y + 5, 2) is not None
    assert check_labels("f", "y", torch.zeros(0, dtype=torch.int64), 0, 2).shape == (0,)
    assert check_labels("f", "t", 1, 3, 2, allow_int=True).tolist() == [1, 1, 1]
    assert check_labels("f", "t", np.int64(1), 2, allow_int=True).dtype == torch.int64


def test_describe_says_dtype_and_shape_or_the_type():
    assert describe(torch.zeros(2, 3, dtype=torch.float64)) == "float64 tensor of shape (2, 3)"
    assert describe(torch.tensor(1)) == "int64 tensor of shape ()"
    assert describe(np.zeros((2,), np.uint8)) == "uint8 numpy array of shape (2,)"
    assert describe([1, 2]) == "list" and describe(None) == "NoneType"


def test_validate_imports_without_torch():
    code = "import sys, ddl._validate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_check_int_names_where_its_upper_bound_comes_from():
    with pytest.raises(ValueError, match="^" + re.escape(
            "omp: n_nonzero_coefs must be an int in [1, n_components=24]; got 25.") + "$") as err:
        check_int("omp", "n_nonzero_coefs", 25, 1, 24, high_name="n_components")
    assert not isinstance(err.value, TypeError)
    with pytest.raises(WrongTypeError, match="^" + re.escape(
            "f: k must be an int in [1, min(a, b)=6]; got 2.0.") + "$"):
        check_int("f", "k", 2.0, 1, 6, high_name="min(a, b)")
    assert check_int("f", "k", np.int64(6), 1, 6, high_name="n") == 6
