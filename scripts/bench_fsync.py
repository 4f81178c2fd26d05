"""What fsync costs per checkpoint: nmt.models.checkpoint.save_checkpoint of the default recipe's model
(configs/train.yaml with enko's 4,000 + 4,000 subwords) with Adam's two moments, durable
(fsync of the file and of its folder) against the same write without the fsyncs, interleaved,
median of --repeats.

    python scripts/bench_fsync.py [--dir FOLDER] [--repeats 7]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from nmt.core.paths import REPO_ROOT  # noqa: E402
from nmt.core.settings import load_settings  # noqa: E402
from nmt.models import build_model  # noqa: E402
from nmt.models.checkpoint import save_checkpoint  # noqa: E402
from nmt.models.seq2seq import ModelSettings  # noqa: E402


def payload() -> dict:
    """Weights and Adam state of the default model (the vocabulary bytes are left out: ~0.5 MB)."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train")
    model_settings = load_settings(ModelSettings, cfg.model, "model")  # typed, as the commands do
    model = build_model(model_settings, cfg.data.vocab.src_size, cfg.data.vocab.tgt_size)
    optimizer = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # creates exp_avg and exp_avg_sq
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    data = payload()
    folder = Path(tempfile.mkdtemp(dir=args.dir))
    path = folder / "last.pt"
    times: dict[str, list[float]] = {"durable": [], "no fsync": []}
    for _ in range(args.repeats):
        for name in times:
            fsync = os.fsync if name == "durable" else (lambda fd: None)
            with mock.patch.object(os, "fsync", fsync):
                start = time.perf_counter()
                save_checkpoint(path, data)
                times[name].append(time.perf_counter() - start)
    size = path.stat().st_size / 2**20
    path.unlink()
    folder.rmdir()
    durable, plain = (statistics.median(times[n]) * 1000 for n in times)
    print(
        f"checkpoint {size:.1f} MiB in {folder.parent.resolve()}: durable {durable:.0f} ms, without fsync "
        f"{plain:.0f} ms, fsync cost {durable - plain:.0f} ms (median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
