"""Generate a small synthetic kidney-vasculature HiP-CT dataset in the layout of the
Kaggle competition "SenNet + HOA - Hacking the Human Vasculature in 3D".

Written independently of any segmentation project; uses only numpy, scipy, tifffile, pandas.

Usage:  python -m benchmarks.foreign_phantom --out data/foreign --seed 0   (benchmarks.carryover runs it)

It was written for this project by an engineer who did not read src/data/phantom/, so that a model can be
checked on data whose generator shares no code or assumptions with the training phantom (README,
"Does a model carry over?").
"""
import argparse
import os
import time

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi

VOXEL_UM = 50.0
K6_VOXEL_UM = 63.08

# name, shape (Z, H, W) at 50 um, fraction of label branches dropped ("sparse" annotation)
KIDNEYS = [
    ("kidney_1_dense", (112, 200, 152), 0.00),
    ("kidney_2", (96, 150, 216), 0.35),
    ("kidney_3", (104, 184, 170), 0.15),
    ("kidney_5", (96, 178, 140), 0.00),
    ("kidney_6", (120, 226, 184), 0.00),   # generated at 50 um, resampled to 63.08 um
]


# ----------------------------------------------------------------------------- helpers
def smooth_field(shape, scale, rng):
    """Zero-mean, unit-std smooth random field with correlation length ~scale voxels."""
    coarse = tuple(max(3, int(np.ceil(s / scale)) + 3) for s in shape)
    f = ndi.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
    zoom = [(s + 2 * scale) / c for s, c in zip(shape, coarse)]
    f = ndi.zoom(f, zoom, order=1, mode="nearest")
    off = [int(scale)] * 3
    f = f[off[0]:off[0] + shape[0], off[1]:off[1] + shape[1], off[2]:off[2] + shape[2]]
    f = f - f.mean()
    return (f / (f.std() + 1e-8)).astype(np.float32)


def unit(v):
    return v / (np.linalg.norm(v) + 1e-12)


def rle_encode(mask):
    """Row-major (C order) flatten, 1-indexed 'start length' pairs; empty -> '1 0'."""
    pix = mask.ravel(order="C").astype(np.uint8) > 0
    if not pix.any():
        return "1 0"
    p = np.concatenate([[0], pix.view(np.uint8), [0]])
    runs = np.where(p[1:] != p[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def rle_decode(rle, shape):
    s = np.asarray(str(rle).split(), dtype=np.int64)
    starts, lengths = s[0::2] - 1, s[1::2]
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for a, n in zip(starts, lengths):
        img[a:a + n] = 1
    return img.reshape(shape)


# ----------------------------------------------------------------------------- anatomy
def make_organ(shape, rng):
    """Bean-shaped kidney: perturbed ellipsoid with a medial notch (hilum)."""
    Z, H, W = shape
    c = np.array(shape, float) / 2.0 + rng.uniform(-0.02, 0.02, 3) * np.array(shape)
    # long in-plane axis along the larger in-plane dimension, small random rotation
    e_u0 = np.array([1.0, 0.0]) if H >= W else np.array([0.0, 1.0])
    e_v0 = np.array([-e_u0[1], e_u0[0]])
    th = rng.uniform(-0.12, 0.12)
    ct, st = np.cos(th), np.sin(th)
    e_u = ct * e_u0 + st * e_v0
    e_v = -st * e_u0 + ct * e_v0
    Ld, Sd = (H, W) if H >= W else (W, H)
    aL = 0.5 * Ld * rng.uniform(0.90, 0.98)
    aS = 0.5 * Sd * rng.uniform(0.85, 0.93)
    aZ = 0.5 * Z * rng.uniform(1.3, 1.7)            # organ is cut by the z range
    hs = rng.choice([-1.0, 1.0])                      # hilum side

    z = (np.arange(Z, dtype=np.float32) - c[0])[:, None, None]
    y = (np.arange(H, dtype=np.float32) - c[1])[None, :, None]
    x = (np.arange(W, dtype=np.float32) - c[2])[None, None, :]
    u = y * e_u[0] + x * e_u[1]
    v = y * e_v[0] + x * e_v[1]
    s = np.sqrt((z / aZ) ** 2 + (u / aL) ** 2 + (v / aS) ** 2)
    s = s * (1.0 + 0.05 * smooth_field(shape, 24, rng))
    # hilum notch (concavity), centred on the medial surface
    nz, nu, nv = 0.40 * aZ, 0.30 * aL, 0.42 * aS
    vc = hs * aS * 1.02
    zc = rng.uniform(-0.1, 0.1) * aZ
    notch = np.sqrt(((z - zc) / nz) ** 2 + (u / nu) ** 2 + ((v - vc) / nv) ** 2)
    organ = (s < 1.0) & (notch > 1.0)
    # renal sinus (fat around the pelvis) just inside the notch
    sinus = organ & (notch < 1.9)
    depth = ndi.distance_transform_edt(organ).astype(np.float32)

    hilum = np.array([c[0] + zc,
                      c[1] + (vc - hs * 0.5 * nv) * e_v[0],
                      c[2] + (vc - hs * 0.5 * nv) * e_v[1]])
    inward = unit(np.array([0.0, -hs * e_v[0], -hs * e_v[1]]))
    return dict(organ=organ, sinus=sinus, depth=depth, center=c, hilum=hilum,
                inward=inward, aS=aS)


def grow_tree(org, shape, rng, roots, r_min=0.95):
    """Grow branching vessel trees from the hilum. Returns segments and branch table.

    gen 0: hilar trunk, runs from the hilum into the parenchyma, then splits into 3-5
    segmental vessels; later generations bifurcate (Murray's law, optimal angles),
    steered to stay inside the capsule, until the radius drops below ~1 voxel.
    """
    depth, hilum = org["depth"], org["hilum"]
    Z, H, W = shape
    segs = []        # (p0, p1, r0, r1, branch_id)
    branches = []    # (radius, generation)

    def depth_at(q):
        qi = np.round(q).astype(int)
        if qi[1] < 1 or qi[1] > H - 2 or qi[2] < 1 or qi[2] > W - 2:
            return -1.0
        if qi[0] < 0 or qi[0] > Z - 1:
            return 1e3       # leaves the scanned slab (organ continues beyond it)
        return float(depth[qi[0], qi[1], qi[2]])

    def depth_grad(q):
        g = np.zeros(3)
        for i in range(3):
            e = np.zeros(3)
            e[i] = 2.0
            g[i] = min(depth_at(q + e), 50.0) - min(depth_at(q - e), 50.0)
        return unit(g)

    def inside_ok(q, r):
        return depth_at(q) >= r + 1.0

    stack = [(np.asarray(p, float), unit(np.asarray(d, float)), r, 0) for p, d, r in roots]
    while stack:
        p, d, r, gen = stack.pop()
        bid = len(branches)
        branches.append((r, gen))
        if gen == 0:
            # hilar trunk: march inwards until well inside the parenchyma
            travelled, extra = 0.0, rng.uniform(3, 8)
            while travelled < 90:
                dd = unit(d + rng.normal(0, 0.05, 3))
                q = p + 2.0 * dd
                segs.append((p.copy(), q.copy(), r, r, bid))
                p, d = q, dd
                travelled += 2.0
                if depth_at(p) >= r + 2.0:
                    extra -= 2.0
                    if extra <= 0:
                        break
            n = int(rng.integers(3, 6))
            w = rng.dirichlet(np.full(n, 4.0))
            perp = unit(np.cross(d, rng.normal(size=3)))
            perp2 = np.cross(d, perp)
            phase = rng.uniform(0, 2 * np.pi)
            for i in range(n):
                phi = phase + 2 * np.pi * i / n + rng.normal(0, 0.2)
                ang = rng.uniform(0.7, 1.2)
                di = unit(np.cos(ang) * d + np.sin(ang) * (np.cos(phi) * perp + np.sin(phi) * perp2))
                ri = r * w[i] ** (1.0 / 3.0)
                if ri >= r_min:
                    stack.append((p.copy(), di, ri, 1))
            continue

        L = r * rng.uniform(4.0, 7.0) + rng.uniform(3.0, 9.0)
        nsub = 3
        r_end = r * rng.uniform(0.9, 1.0)
        ok = True
        for k in range(nsub):
            step = L / nsub
            placed = False
            g = depth_grad(p)
            for attempt in range(10):
                wc = 0.25 * attempt
                dd = unit(d + rng.normal(0, 0.18, 3) + 0.25 * unit(p - hilum) + wc * g)
                q = p + step * dd
                if inside_ok(q, r) and inside_ok(0.5 * (p + q), r):
                    placed = True
                    break
            if not placed:
                break            # blocked by the capsule: bifurcate early
            ra = r + (r_end - r) * k / nsub
            rb = r + (r_end - r) * (k + 1) / nsub
            segs.append((p.copy(), q.copy(), ra, rb, bid))
            p, d = q, dd
            if not (0 <= q[0] <= Z - 1):
                ok = False       # left the field of view
                break
        if not ok:
            continue
        # asymmetric bifurcation following Murray's law r^3 = r1^3 + r2^3
        f1 = rng.uniform(0.78, 0.95)
        r1 = r_end * f1
        r2 = r_end * max(1.0 - f1 ** 3, 1e-3) ** (1.0 / 3.0)
        if r1 < r_min:
            continue

        def ang(ra_, rb_, r0=r_end):       # optimal branching angle (Murray / Zamir)
            cval = (r0 ** 4 + ra_ ** 4 - rb_ ** 4) / (2 * r0 ** 2 * ra_ ** 2)
            return np.arccos(np.clip(cval, -1, 1))
        a1 = ang(r1, r2) + rng.normal(0, 0.12)
        a2 = ang(r2, r1) + rng.normal(0, 0.12)
        perp = unit(np.cross(d, rng.normal(size=3)))
        d1 = unit(np.cos(a1) * d + np.sin(a1) * perp)
        d2 = unit(np.cos(a2) * d - np.sin(a2) * perp)
        for rr, dd in ((r1, d1), (r2, d2)):
            if rr >= r_min:
                stack.append((p.copy(), dd, rr, gen + 1))
    return segs, branches


def rasterise(segs, shape, keep_branch=None, want_occ=False, lab=None, occ=None):
    """Label = voxel centre inside a capsule; occ = partial-volume occupancy (0..1).
    If lab/occ are given, the segments are added to them in place."""
    if lab is None:
        lab = np.zeros(shape, bool)
    if occ is None and want_occ:
        occ = np.zeros(shape, np.float32)
    want_occ = occ is not None
    Z, H, W = shape
    for p0, p1, r0, r1, bid in segs:
        if keep_branch is not None and not keep_branch[bid]:
            continue
        rm = max(r0, r1) + 1.5
        lo = np.maximum(np.floor(np.minimum(p0, p1) - rm).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(p0, p1) + rm).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz = np.arange(lo[0], hi[0], dtype=np.float32)[:, None, None] - p0[0]
        yy = np.arange(lo[1], hi[1], dtype=np.float32)[None, :, None] - p0[1]
        xx = np.arange(lo[2], hi[2], dtype=np.float32)[None, None, :] - p0[2]
        v = p1 - p0
        vv = float(v @ v) + 1e-12
        t = np.clip((zz * v[0] + yy * v[1] + xx * v[2]) / vv, 0.0, 1.0)
        d = np.sqrt((zz - t * v[0]) ** 2 + (yy - t * v[1]) ** 2 + (xx - t * v[2]) ** 2)
        rr = r0 + t * (r1 - r0)
        sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        lab[sl] |= d <= rr
        if want_occ:
            np.maximum(occ[sl], np.clip(rr - d + 0.5, 0.0, 1.0), out=occ[sl])
    return lab, occ


def make_kidney(shape, rng, drop_frac):
    """Returns raw float image, dense label, sparse label (or None)."""
    org = make_organ(shape, rng)
    organ, depth = org["organ"], org["depth"]

    # vessel trees: renal vein (thick) + renal artery, then accessory/polar vessels from
    # the hilum until the vessel fraction reaches a per-kidney target
    target = rng.uniform(0.0035, 0.0065)
    side = unit(np.cross(org["inward"], [1.0, 0.0, 0.0]) + 1e-3)
    roots = [(org["hilum"] + 3 * side, org["inward"], rng.uniform(3.7, 4.2)),
             (org["hilum"] - 3 * side, org["inward"], rng.uniform(2.8, 3.3))]
    segs, branches = grow_tree(org, shape, rng, roots)
    lab, occ = rasterise(segs, shape, want_occ=True)
    tries = 0
    while lab.mean() < target and tries < 12:
        tries += 1
        off = rng.normal(0, 5, 3)
        d0 = unit(org["inward"] + rng.normal(0, 0.4, 3))
        s2, b2 = grow_tree(org, shape, rng, [(org["hilum"] + off, d0, rng.uniform(2.5, 3.5))])
        nb = len(branches)
        s2 = [(a, b, r0, r1, bid + nb) for a, b, r0, r1, bid in s2]
        segs += s2
        branches += b2
        rasterise(s2, shape, lab=lab, occ=occ)

    sparse = None
    if drop_frac > 0:
        radii = np.array([b[0] for b in branches])
        gens = np.array([b[1] for b in branches])
        cand = np.where(gens > 0)[0]
        n_drop = int(round(drop_frac * len(branches)))
        w = 1.0 / radii[cand]
        drop = rng.choice(cand, size=min(n_drop, len(cand)), replace=False, p=w / w.sum())
        keep = np.ones(len(branches), bool)
        keep[drop] = False
        sparse, _ = rasterise(segs, shape, keep_branch=keep)

    # --- image formation (relative units: tissue ~ 1)
    bg_level = rng.uniform(0.55, 0.8)
    cortex_th = org["aS"] * rng.uniform(0.22, 0.32)
    ctx = 1.0 / (1.0 + np.exp((depth - cortex_th) / 2.0))           # 1 in cortex
    tissue = 1.0 + 0.05 * ctx - 0.03 * (1.0 - ctx)
    tissue += 0.035 * smooth_field(shape, 3, rng) + 0.03 * smooth_field(shape, 9, rng)
    tissue = np.where(org["sinus"], 0.82 + 0.03 * smooth_field(shape, 5, rng), tissue)
    img = np.where(organ, tissue, bg_level + 0.012 * smooth_field(shape, 6, rng)).astype(np.float32)
    del tissue, ctx
    contrast = rng.uniform(0.3, 0.45)
    vessel_level = 1.0 + contrast + 0.03 * smooth_field(shape, 12, rng)
    img = img * (1.0 - occ) + vessel_level * occ
    del occ, vessel_level
    img = ndi.gaussian_filter(img, rng.uniform(0.7, 1.0))            # PSF / partial volume
    img *= 1.0 + 0.08 * smooth_field(shape, 40, rng)                  # slow shading
    # weak ring artefacts around the rotation axis (constant along z)
    Z, H, W = shape
    cy, cx = H / 2 + rng.uniform(-5, 5), W / 2 + rng.uniform(-5, 5)
    rmap = np.sqrt((np.arange(H)[:, None] - cy) ** 2 + (np.arange(W)[None, :] - cx) ** 2)
    rings = np.zeros((H, W), np.float32)
    for _ in range(6):
        rings += rng.normal(0, 0.012) * np.exp(-(rmap - rng.uniform(5, max(H, W) / 2)) ** 2 / 0.8)
    img += rings[None]
    sigma_n = rng.uniform(0.07, 0.11)
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise = 0.75 * noise + 0.9 * ndi.gaussian_filter(noise, 0.6)      # slightly correlated
    img += sigma_n * noise / noise.std()
    return img.astype(np.float32), lab, sparse


def to_uint16(img, rng):
    lo = rng.uniform(15000, 30000)
    hi = lo + rng.uniform(3000, 15000)
    sub = img.ravel()[:: 7]
    p0, p1 = np.percentile(sub, [0.1, 99.9])
    out = lo + (img - p0) / (p1 - p0) * (hi - lo)
    return np.clip(np.round(out), 0, 65535).astype(np.uint16)


def write_stack(folder, vol, names=None):
    os.makedirs(folder, exist_ok=True)
    for i in range(vol.shape[0]):
        n = names[i] if names is not None else f"{i:04d}"
        tifffile.imwrite(os.path.join(folder, f"{n}.tif"), np.ascontiguousarray(vol[i]),
                         photometric="minisblack")


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = args.out
    t0 = time.time()
    summary = []
    sol_rows, sub_rows = [], []

    for idx, (name, shape, drop) in enumerate(KIDNEYS):
        n_prev = len(summary)
        rng = np.random.default_rng([args.seed, idx])
        raw, lab, sparse = make_kidney(shape, rng, drop)
        if name == "kidney_6":
            f = VOXEL_UM / K6_VOXEL_UM
            raw = ndi.zoom(raw, f, order=1)
            lab = ndi.zoom(lab.astype(np.float32), f, order=1) >= 0.5
        img = to_uint16(raw, rng)
        del raw
        lab8 = lab.astype(np.uint8) * 255
        Z = img.shape[0]
        if name in ("kidney_5", "kidney_6"):
            write_stack(os.path.join(out, "test", name, "images"), img)
            write_stack(os.path.join(out, "solution", name, "labels"), lab8)
            H, W = img.shape[1:]
            for z in range(Z):
                sol_rows.append(dict(id=f"{name}_{z:04d}", rle=rle_encode(lab[z]), width=W,
                                     height=H, image_id=name, slice_id=z))
                sub_rows.append(dict(id=f"{name}_{z:04d}", rle="1 0"))
            summary.append((f"test/{name}", img.shape, lab.mean(), img.min(), img.max()))
        elif name == "kidney_3":
            write_stack(os.path.join(out, "train", "kidney_3_sparse", "images"), img)
            write_stack(os.path.join(out, "train", "kidney_3_sparse", "labels"),
                        sparse.astype(np.uint8) * 255)
            a, b = Z // 4, (3 * Z) // 4
            write_stack(os.path.join(out, "train", "kidney_3_dense", "labels"), lab8[a:b],
                        names=[f"{i:04d}" for i in range(a, b)])
            summary.append(("train/kidney_3_sparse", img.shape, sparse.mean(), img.min(), img.max()))
            summary.append((f"train/kidney_3_dense [{a:04d}..{b - 1:04d}]", lab8[a:b].shape,
                            lab[a:b].mean(), img.min(), img.max()))
        else:
            shown = lab if sparse is None else sparse
            write_stack(os.path.join(out, "train", name, "images"), img)
            write_stack(os.path.join(out, "train", name, "labels"), shown.astype(np.uint8) * 255)
            extra = "" if sparse is None else f" (dense would be {lab.mean() * 100:.3f}%)"
            summary.append((f"train/{name}{extra}", img.shape, shown.mean(), img.min(), img.max()))
        for n, s, f, a, b in summary[n_prev:]:
            print(f"{n:<46s} shape={tuple(int(v) for v in s)}  vessel={f * 100:.3f}%  "
                  f"int=[{a}, {b}]  t={time.time() - t0:.1f}s", flush=True)

    pd.DataFrame(sub_rows, columns=["id", "rle"]).to_csv(os.path.join(out, "sample_submission.csv"),
                                                         index=False)
    pd.DataFrame(sol_rows, columns=["id", "rle", "width", "height", "image_id", "slice_id"]).to_csv(
        os.path.join(out, "solution.csv"), index=False)

    lines = [
        "Synthetic SenNet+HOA-style kidney vasculature dataset (HiP-CT-like), generated by make_foreign.py",
        f"seed={args.seed}",
        "",
        "Each kidney: bean-shaped organ (perturbed ellipsoid with a hilum notch) in a uniform mounting",
        "medium; cortex slightly brighter than medulla, darker renal-sinus fat near the hilum; smooth",
        "random tissue texture. Vessel trees (renal vein r~4 vox, artery r~3 vox, sometimes accessory",
        "arteries) enter at the hilum and bifurcate following Murray's law (r^3=r1^3+r2^3, optimal",
        "branching angles) down to r~1 voxel. Image = partial-volume vessel occupancy (brighter than",
        "tissue by 0.30-0.45 of tissue level) -> gaussian PSF (sigma 0.7-1.0) -> slow multiplicative",
        "shading (+-8%) -> weak ring artefacts -> slightly correlated gaussian noise (sigma 0.07-0.11).",
        "Each kidney is mapped to its own random uint16 window (low 15000-30000, width 3000-15000).",
        "Labels: voxel centre inside a vessel, uint8 0/255.",
        "kidney_2 labels: ~35% of branches removed (thin ones preferentially); kidney_3_sparse: ~15%.",
        "kidney_3_dense: dense labels for the middle half of kidney_3's slices (images in kidney_3_sparse).",
        "kidney_6: generated at 50 um and resampled to 63.08 um (zoom 50/63.08; image order 1, label",
        "order-1 float thresholded at 0.5).",
        "solution.csv / solution/: hidden truth for test kidneys (RLE row-major, 1-indexed, empty '1 0').",
        "",
        "Summary (name, shape Z,H,W, vessel fraction of label, uint16 min/max):",
    ]
    for n, s, f, a, b in summary:
        lines.append(f"  {n}: shape={tuple(int(v) for v in s)} vessel={f * 100:.3f}% int=[{a},{b}]")
    with open(os.path.join(out, "README.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"done in {time.time() - t0:.1f}s -> {out}")


if __name__ == "__main__":
    main()
