"""Patches (ddl.sparse.patches) against scikit-learn's extract/reconstruct and hand computations."""

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.image import extract_patches_2d, reconstruct_from_patches_2d

from ddl.sparse.patches import center_patches, extract_patches, reconstruct_from_patches


def _to_sklearn_layout(patches, C, ph, pw):
    """Ours: channel-major vectors (C*ph*pw). sklearn: (ph, pw) grey, (ph, pw, C) colour."""
    p = patches.reshape(-1, C, ph, pw).permute(0, 2, 3, 1).numpy()
    return p[..., 0] if C == 1 else p


@pytest.mark.parametrize("patch_size", [3, (2, 5)])
def test_extract_matches_sklearn(tiny_images, patch_size):
    x = tiny_images.double()
    N, C, H, W = x.shape
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    ours = extract_patches(x, patch_size)
    assert ours.shape == (N * (H - ph + 1) * (W - pw + 1), C * ph * pw)
    ref = np.concatenate([
        extract_patches_2d(img[0] if C == 1 else img.transpose(1, 2, 0), (ph, pw))
        for img in x.numpy()])
    np.testing.assert_array_equal(_to_sklearn_layout(ours, C, ph, pw), ref)


def test_reconstruct_matches_sklearn_average(tiny_images, rng):
    x = tiny_images.double()
    N, C, H, W = x.shape
    n_per = (H - 3 + 1) * (W - 3 + 1)
    patches = torch.from_numpy(rng.standard_normal((N * n_per, C * 9)))   # inconsistent patches
    ours = reconstruct_from_patches(patches, x.shape, 3).numpy()
    sk = _to_sklearn_layout(patches, C, 3, 3).reshape((N, n_per) + ((3, 3) if C == 1 else (3, 3, C)))
    for i in range(N):
        ref = reconstruct_from_patches_2d(sk[i], (H, W) if C == 1 else (H, W, C))
        np.testing.assert_allclose(ours[i], ref[None] if C == 1 else ref.transpose(2, 0, 1),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("patch_size, step", [(3, 1), (4, 2), (2, 2), ((4, 2), (2, 1)), (8, 1), (5, 3)])
def test_round_trip_for_any_valid_step(tiny_images, patch_size, step):
    x = tiny_images
    patches = extract_patches(x, patch_size, step=step)
    back = reconstruct_from_patches(patches, x.shape, patch_size, step=step)
    torch.testing.assert_close(back, x, rtol=0, atol=2e-7)             # float32 averaging
    x64 = x.double()
    back64 = reconstruct_from_patches(extract_patches(x64, patch_size, step=step), x64.shape,
                                      patch_size, step=step)
    torch.testing.assert_close(back64, x64, rtol=0, atol=1e-15)


def test_hand_checked_stride_two():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    patches = extract_patches(x, 3, step=2)
    assert patches.tolist() == [
        [0, 1, 2, 5, 6, 7, 10, 11, 12],
        [2, 3, 4, 7, 8, 9, 12, 13, 14],
        [10, 11, 12, 15, 16, 17, 20, 21, 22],
        [12, 13, 14, 17, 18, 19, 22, 23, 24],
    ]
    # overlap averaging by hand: pixel (2, 2) is in all four patches
    marked = torch.tensor([1.0, 2.0, 4.0, 8.0])[:, None] * torch.ones(4, 9)
    img = reconstruct_from_patches(marked, (1, 5, 5), 3, step=2)
    assert img.shape == (1, 5, 5)
    assert img[0, 2, 2] == (1 + 2 + 4 + 8) / 4
    assert img[0, 0, 2] == (1 + 2) / 2 and img[0, 2, 0] == (1 + 4) / 2
    assert img[0, 4, 4] == 8 and img[0, 0, 0] == 1


def test_colour_patch_is_one_channel_major_vector():
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3)   # C=2, 3x3
    first = extract_patches(x, 2)[0]
    assert first.tolist() == [0, 1, 3, 4, 9, 10, 12, 13]                    # channel 0, then 1


def test_patches_ordered_image_by_image(tiny_images):
    per_image = [extract_patches(img, 4) for img in tiny_images]
    torch.testing.assert_close(extract_patches(tiny_images, 4), torch.cat(per_image), rtol=0, atol=0)


def test_reconstruct_single_image_shape_and_gradient():
    x = torch.rand(3, 6, 6, dtype=torch.float64, requires_grad=True)
    out = reconstruct_from_patches(extract_patches(x, 3), x.shape, 3)
    assert out.shape == (3, 6, 6)
    (g,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g, torch.ones_like(x))               # averaging the identity


def test_center_patches():
    p = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.3, 0.3, 0.3, 0.3]])
    centered, means = center_patches(p)
    assert means.tolist() == [[3.0], [pytest.approx(0.3)]]
    assert centered[0].tolist() == [-2.0, -1.0, 0.0, 3.0]
    assert centered[1].abs().max() < 1e-7
    torch.testing.assert_close(centered + means, p)


# ------------------------------------------------------------------ errors
def test_extract_errors():
    x = torch.rand(2, 1, 10, 12)
    with pytest.raises(ValueError, match=r"extract_patches: patch_size=\(11, 11\) is larger than the image \(10, 12\)"):
        extract_patches(x, 11)
    with pytest.raises(ValueError, match=r"step must be an int >= 1 or a pair of them; got 0"):
        extract_patches(x, 3, step=0)
    with pytest.raises(ValueError, match=r"patch_size must be an int >= 1 .* got 2.5"):
        extract_patches(x, 2.5)
    with pytest.raises(ValueError, match=r"step=2 does not tile the image height 10 exactly with patch height 3 .* "
                                         r"steps that fit: \[1\], or crop/pad the height to 9 or 11"):
        extract_patches(x, 3, step=2)
    with pytest.raises(ValueError, match=r"step=\(4, 4\) is larger than patch_size=\(3, 3\)"):
        extract_patches(torch.rand(1, 1, 7, 7), 3, step=4)
    with pytest.raises(TypeError, match=r"extract_patches: images must be floating point; got torch.uint8"):
        extract_patches(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), 3)
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\) or \(C, H, W\); got \(8, 8\)"):
        extract_patches(torch.rand(8, 8), 3)
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor; got ndarray"):
        extract_patches(np.zeros((1, 1, 8, 8)), 3)


def test_reconstruct_errors():
    p = extract_patches(torch.rand(1, 1, 28, 28), 2)
    with pytest.raises(ValueError, match=r"reconstruct_from_patches: expected 729 patches for image_shape=\(1, 1, 28, 28\) "
                                         r"with patch_size=\(2, 2\) and step=1; got 700"):
        reconstruct_from_patches(p[:700], (1, 1, 28, 28), 2)
    with pytest.raises(ValueError, match=r"patches must have shape \(n_patches, C\*ph\*pw=12\) .* got \(729, 4\)"):
        reconstruct_from_patches(p, (1, 3, 28, 28), 2)
    with pytest.raises(ValueError, match=r"image_shape must be \(N, C, H, W\) or \(C, H, W\) of positive ints; got \(28, 28\)"):
        reconstruct_from_patches(p, (28, 28), 2)
    with pytest.raises(ValueError, match=r"step=3 does not tile the image width 28"):
        reconstruct_from_patches(extract_patches(torch.rand(1, 1, 28, 28), 5), (1, 1, 28, 28), 5, step=(1, 3))
    with pytest.raises(TypeError, match=r"patches must be floating point; got torch.int64"):
        reconstruct_from_patches(p.long(), (1, 1, 28, 28), 2)


def test_center_errors():
    with pytest.raises(ValueError, match=r"center_patches: patches must be a 2-D floating-point tensor .* got torch.float32 tensor of shape \(3,\)"):
        center_patches(torch.rand(3))
