"""FID feature-extraction throughput: mubench's path against clean-fid's, same extractor, same images, one JSON line.

    .venv/bin/python benchmarks/fid_throughput.py [--images 64] [--extractor tiny|inception] [--repeats 3]

Both sides read the same folder of PNGs (written here: seeded smooth random images at 512 px) and turn every file
into features with the same network callable on [N, 3, 299, 299] floats in [0, 255]:

- mubench: the ``fid-features`` scorer (protocol ``clean``) — ``features_files``: PIL read, the shared centre-crop /
  resize to the suite resolution (a no-op for these square 512 px files), clean-fid's per-channel float bicubic resize
  to 299, batches of ``--batch-size``;
- clean-fid: ``cleanfid.fid.get_folder_features(mode="clean")`` — the loop ``compute_fid`` runs on a folder
  (ResizeDataset + DataLoader with ``--workers`` workers).

Both sides preprocess with the same ``--workers`` worker processes (mubench's ``num_workers``, clean-fid's
``num_workers``; default 0 = in process; clean-fid's own default in ``compute_fid`` is 12).

``--extractor tiny`` is the scorer's tiny random CNN (preprocessing-bound: what the pipelines themselves cost);
``inception`` is torchvision's Inception-v3 graph with random weights (network-bound, as with real weights). No
weights are downloaded. Reported: images/s of each (median over interleaved rounds), their ratio, and the largest
feature difference between the two paths (they must agree: same preprocessing, same network).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        low = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        path = folder / f"{i:05d}.png"
        img.save(path)
        paths.append(path)
    return paths


def extractor(kind: str, scorer):
    import torch

    if kind == "tiny":
        net = scorer.net
        return lambda x: net((x - 128.0) / 128.0)
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=False, init_weights=True)
    net.fc = torch.nn.Identity()  # 2048-d pool features, as FID uses
    net.eval()
    return lambda x: net((x - 128.0) / 128.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--extractor", choices=("tiny", "inception"), default="tiny")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0,
                   help="preprocessing worker processes, the same for both sides (0: in process)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from cleanfid import fid as cleanfid_fid

    from mubench.perf.timing import interleaved, ratio_ci, resolve_clock
    from mubench.scorers.base import ScorerContext
    from mubench.scorers.fid_features import FidFeaturesParams, InceptionFeatures

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    scorer = InceptionFeatures(FidFeaturesParams(protocol="clean", resolution=args.size, batch_size=args.batch_size,
                                         num_workers=args.workers),
                               ScorerContext(device, torch.float32, "random"), "fid")
    net = extractor(args.extractor, scorer)
    scorer._forward = net  # the same network on both sides (the scorer's preprocessing is unchanged)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        folder = Path(tmp)
        paths = write_images(folder, args.images, args.size, seed=0)

        def ours():
            out["mubench"] = scorer.features_files(paths)

        def theirs():
            out["clean-fid"] = cleanfid_fid.get_folder_features(str(folder), model=net, num_workers=args.workers,
                                                                batch_size=args.batch_size, device=device,
                                                                mode="clean", verbose=False)

        clock = resolve_clock("auto", device) if args.workers == 0 else "wall"
        times = interleaved({"mubench": ours, "clean-fid": theirs}, device, warmup=args.warmup,
                            repeats=args.repeats)
        a = [t.get(clock) for t in times["mubench"]]
        b = [t.get(clock) for t in times["clean-fid"]]
        speedup, lo, hi = ratio_ci(b, a)  # clean-fid time / mubench time = mubench throughput / clean-fid's
        diff = float(np.abs(out["mubench"] - out["clean-fid"]).max())
    line = {
        "benchmark": "fid_throughput", "images": args.images, "size": args.size, "extractor": args.extractor,
        "feature_dim": int(out["mubench"].shape[1]), "batch_size": args.batch_size, "clean_fid_workers": args.workers, "mubench_workers": args.workers,
        "threads": args.threads, "clock": clock, "repeats": args.repeats, "warmup": args.warmup,
        "mubench_images_per_s": round(args.images / float(np.median(a)), 2),
        "clean_fid_images_per_s": round(args.images / float(np.median(b)), 2),
        "throughput_ratio": round(speedup, 3), "throughput_ratio_ci": None if lo is None else [round(lo, 3),
                                                                                              round(hi, 3)],
        "max_abs_feature_diff": diff, "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    sys.stdout.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
