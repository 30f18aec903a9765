"""DDP on CPU: 2 processes (Gloo) train a few steps on digits; rank 0 alone writes; replicas stay identical."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from reldrop.train.distributed import shard_indices, spawn


def test_shard_indices_matches_distributed_sampler_split() -> None:
    perm = torch.tensor([5, 3, 8, 1, 0, 9, 2])
    a = shard_indices(perm, 0, 2)
    b = shard_indices(perm, 1, 2)
    assert a.tolist() == [5, 8, 0, 2] and b.tolist() == [3, 1, 9, 5]  # padded by wrap-around like DistributedSampler
    assert shard_indices(perm, 1, 2, pad=False).tolist() == [3, 1, 9]
    assert torch.equal(shard_indices(perm, 0, 1), perm)


def _worker(rank: int, cfg: dict[str, Any], out: str) -> None:
    from reldrop.train.distributed import cleanup
    from reldrop.runs import load_checkpoint
    from reldrop.train.loop import train

    try:
        res = train(cfg, quiet=True)
        import torch.distributed as dist

        # every rank ends with the same weights (DDP keeps replicas in sync)
        model_sum = None
        if rank == 0:
            model_sum = float(sum(v.double().sum() for v in load_checkpoint(Path(res["run_dir"]) / "last.pt")["model"].values()))
        Path(out, f"rank{rank}.json").write_text(json.dumps({
            "world": res["world_size"], "final": res["final"], "best": res["best_acc"],
            "is_dist": dist.is_initialized(), "ckpt_sum": model_sum}))
        # both ranks reach teardown together: rank 1 destroying the Gloo group while rank 0 still read the
        # checkpoint aborted a process once ("terminate called without an active exception", SIGABRT)
        dist.barrier()
    finally:
        cleanup()


def test_two_process_ddp_on_cpu(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, aug__name="reldrop", train__epochs=2, data__subset=200, data__test_subset=None,
                   device="cpu", train__batch_size=25, optim__lr=0.05)  # 4 steps per rank and epoch
    spawn(_worker, 2, (cfg, str(tmp_path)))
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2 and r0["is_dist"]
    # metrics are all-reduced: both ranks see the same numbers, computed over the WHOLE test set
    assert r0["final"]["test_acc"] == r1["final"]["test_acc"] and r0["final"]["train_acc"] == r1["final"]["train_acc"]
    run = Path(cfg["out"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["world_size"] == 2
    hits = rows[-1]["test_acc"] * 360 / 100
    assert abs(hits - round(hits)) < 1e-6  # a count out of all 360 test images (not of one rank's 180)
    assert rows[-1]["aug_time"] > 0  # RelDrop ran on each rank
    assert (run / "last.pt").is_file() and r0["ckpt_sum"] is not None
    # the model learns under DDP too
    assert rows[-1]["test_acc"] > 20
