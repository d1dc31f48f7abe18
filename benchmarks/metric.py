"""Surface Dice: the project's streaming metric against DeepMind's surface-distance reference.

``python -m benchmarks.metric [--shape 128 256 256] [--repeat 3]`` builds one prediction/truth pair of
vessel-like tubes (the truth, and a perturbed copy as prediction), times both implementations on it and
prints both values, both times and the speed-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from src.metrics.surface_dice import surface_dice
from tests.metrics.reference import reference_surface_dice


def tubes(shape, n, rng, jitter=0.0):
    """Random straight tubes through the volume (radius 1.5-6 voxels); ``jitter`` moves them slightly."""
    z, y, x = (np.arange(s, dtype=np.float32) for s in shape)
    out = np.zeros(shape, bool)
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8, 2) * shape[1:]
        dy, dx = rng.uniform(-0.6, 0.6, 2)
        r = rng.uniform(1.5, 6.0)
        sy, sx, sr = rng.normal(0, jitter, 3)
        yy = (cy + sy + dy * z)[:, None, None]
        xx = (cx + sx + dx * z)[:, None, None]
        out |= (y[None, :, None] - yy) ** 2 + (x[None, None, :] - xx) ** 2 <= (r + sr) ** 2
    return out


def best_time(fn, repeat):
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    true = tubes(shape, 24, np.random.default_rng(args.seed))
    pred = tubes(shape, 24, np.random.default_rng(args.seed), jitter=0.7) | (np.random.default_rng(1).random(shape) < 1e-4)
    print(f"volume {shape[0]}x{shape[1]}x{shape[2]}, vessel fraction {true.mean():.3%}, torch threads {torch.get_num_threads()}")
    t_ref, v_ref = best_time(lambda: reference_surface_dice(pred, true), 1)
    t_cpu, v_cpu = best_time(lambda: surface_dice(pred, true), args.repeat)
    print(f"{'implementation':<34}{'surface dice':>14}{'seconds':>10}{'speed-up':>10}")
    print(f"{'surface-distance (DeepMind)':<34}{v_ref:>14.8f}{t_ref:>10.3f}{1.0:>9.1f}x")
    print(f"{'src.metrics.surface_dice (cpu)':<34}{v_cpu:>14.8f}{t_cpu:>10.3f}{t_ref / t_cpu:>9.1f}x")
    if torch.cuda.is_available():
        p, t = torch.from_numpy(pred).cuda(), torch.from_numpy(true).cuda()
        surface_dice(p, t)
        def gpu():
            v = surface_dice(p, t)
            torch.cuda.synchronize()
            return v
        t_gpu, v_gpu = best_time(gpu, args.repeat)
        print(f"{'src.metrics.surface_dice (cuda)':<34}{v_gpu:>14.8f}{t_gpu:>10.3f}{t_ref / t_gpu:>9.1f}x")
    print(f"|difference| {abs(v_ref - v_cpu):.2e}")
    return t_ref / t_cpu


if __name__ == "__main__":
    main()
