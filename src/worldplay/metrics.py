"""Metrics as pure functions: PSNR and SSIM on uint8 frames, and a mean with its 95% interval."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def mean_ci95(x: Sequence[float], single: float = 0.0) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval (``single`` for a single value)."""
    a = np.asarray(x, np.float64)
    half = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else single
    return float(a.mean()), float(half)


PSNR_CAP_DB = 100.0  # identical images: PSNR is infinite; reported capped


def psnr(a_NHWC: jax.Array | np.ndarray, b_NHWC: jax.Array | np.ndarray, cap: float = PSNR_CAP_DB) -> jax.Array:
    """Peak signal-to-noise ratio in dB per image, for uint8 images ([N, H, W, C] -> [N]), capped at ``cap``."""
    a = jnp.asarray(a_NHWC, jnp.float32)
    b = jnp.asarray(b_NHWC, jnp.float32)
    mse = jnp.mean((a - b) ** 2, axis=(-3, -2, -1))
    value = 10.0 * jnp.log10(255.0**2 / jnp.maximum(mse, 1e-12))
    return jnp.minimum(value, cap)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    g = jnp.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a_NHWC: jax.Array | np.ndarray, b_NHWC: jax.Array | np.ndarray) -> jax.Array:
    """Structural similarity per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
    K1 = 0.01, K2 = 0.03, valid region), averaged over channels. uint8 [N, H, W, C] -> [N]."""
    a = jnp.asarray(a_NHWC, jnp.float32)
    b = jnp.asarray(b_NHWC, jnp.float32)
    C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()

    def blur(x):  # separable Gaussian over H and W, per channel: [N, H, W, C]
        N, H, W, C = x.shape
        y = jnp.moveaxis(x, -1, 1).reshape(N * C, 1, H, W)
        y = jax.lax.conv_general_dilated(y, g.reshape(1, 1, -1, 1), (1, 1), "VALID")
        y = jax.lax.conv_general_dilated(y, g.reshape(1, 1, 1, -1), (1, 1), "VALID")
        return y.reshape(N, C, y.shape[-2], y.shape[-1])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))
    return s.mean(axis=(1, 2, 3))


def image_grid(rows: list[np.ndarray], scale: int = 2) -> np.ndarray:
    """Stack rows of images [N, H, W, 3] uint8 into one grid image, nearest-upscaled."""
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    return np.repeat(np.repeat(grid, scale, 0), scale, 1)
