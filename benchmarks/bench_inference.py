"""What each inference speed-up buys, one at a time, in one process.

    python benchmarks/bench_inference.py [--repeats 5] [--threads 1]

1. The bundled initialisation network on 73 random 128 x 128 slices (an ACDC volume's
   isotropic stack) as trained, with its batch norms folded, and folded with
   channels-last weights (bvmesh.networks.for_inference), and the largest difference of
   the logits from the trained network's.
2. Remeshing the test phantom's surface to 1.5 mm through gpytoolbox's wrapper and
   through bvmesh.mesh.remesh (its C++ binding after bvmesh's own closed-manifold
   check), and whether the two meshes are the same.

Medians of ``--repeats``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def networks(repeats: int) -> list[tuple[str, float, float]]:
    import torch
    from torch import nn

    from bvmesh.model import load_model
    from bvmesh.networks import ConvGroup, for_inference
    from bvmesh.weights import resolve

    trained = load_model(resolve(None).path).init
    torch.manual_seed(0)
    x = torch.rand(73, 1, 128, 128)
    folded = copy.deepcopy(trained)
    for group in folded.modules():  # for_inference's fold alone, without the layout
        if isinstance(group, ConvGroup) and isinstance(group[1], nn.BatchNorm2d):
            group[0] = torch.nn.utils.fusion.fuse_conv_bn_eval(group[0], group[1])
            group[1] = nn.Identity()
    fast = for_inference(copy.deepcopy(trained), torch.device("cpu"))
    rows = []
    with torch.inference_mode():
        reference = trained(x)[-1]
        for name, net in (("as trained", trained), ("batch norms folded", folded),
                          ("folded + channels-last (for_inference)", fast)):
            diff = float((net(x)[-1] - reference).abs().max())
            rows.append((name, _median_seconds(lambda net=net: net(x), repeats), diff))
    return rows


def remeshing(repeats: int) -> list[tuple[str, float, bool]]:
    import gpytoolbox

    from bvmesh.mesh import BASE, remesh, surface_mesh
    from bvmesh.testing import make_phantom

    ph = make_phantom((1.25, 1.25, 1.25), truth=False)
    surf = surface_mesh(ph.labels, ph.affine, base_plane=ph.base_plane)
    base = surf.face_tags == BASE
    rim = remesh.rim_edges(surf.faces, base).astype(np.int64)

    def wrapper():
        return gpytoolbox.remesh_botsch(surf.vertices, surf.faces.astype(np.int64),
                                        remesh.ITERATIONS, 1.5, True, feature_edges=rim)

    def bvmesh_remesh():
        return remesh.remesh(surf.vertices, surf.faces, base, 1.5)

    (u1, f1), (u2, f2) = wrapper(), bvmesh_remesh()
    same = np.array_equal(u1, u2) and np.array_equal(f1, f2)
    return [("gpytoolbox.remesh_botsch", _median_seconds(wrapper, repeats), True),
            ("bvmesh.mesh.remesh.remesh", _median_seconds(bvmesh_remesh, repeats), same)]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.repeats}\n")
    print("| initialisation network, 73 slices | seconds | max logit difference |\n|---|---|---|")
    for name, seconds, diff in networks(args.repeats):
        print(f"| {name} | {seconds:.2f} | {diff:.1e} |")
    print("\n| remesh the phantom to 1.5 mm | seconds | same mesh as the wrapper's |\n|---|---|---|")
    for name, seconds, same in remeshing(args.repeats):
        print(f"| {name} | {seconds:.2f} | {same} |")


if __name__ == "__main__":
    main()
