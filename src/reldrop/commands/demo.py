"""``reldrop demo``: train a small CNN on sklearn's digits with RelDrop, then plot
original | LRP heatmap | RelDrop-erased images for a few test samples."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "train a small CNN on the embedded digits data with RelDrop and plot heatmaps and erased images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default: 8)")
    parser.add_argument("--samples", type=int, default=6, help="test samples to plot (default: 6)")
    parser.add_argument("--method", default="epsilon_flat", help="attribution preset (default: epsilon_flat)")
    parser.add_argument("--p", type=float, default=0.5, help="RelDrop probability during training (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on CPU (default 1: stays fast next to other jobs, see "
                             "docs/guarantees.md#cpu-threads; 0 = torch's default, one per core)")


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    import reldrop
    from reldrop import models
    from reldrop.attribution import attribute
    from reldrop.data import build_dataset, data_root
    from reldrop.metrics import evaluate_accuracy
    from reldrop.viz.demo_figure import plot_demo_grid

    if args.epochs < 0 or args.samples < 1 or args.threads < 0:
        raise SystemExit("--epochs must be >= 0, --samples >= 1 and --threads >= 0")
    from reldrop._threads import warn_if_busy

    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_busy(torch.get_num_threads())
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train = build_dataset("digits", data_root(), "train")
    test = build_dataset("digits", data_root(), "test")
    model = models.build("small_cnn", num_classes=train.num_classes, in_channels=train.input_shape[0]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    aug = reldrop.RelDrop(model, p=args.p, method=args.method, generator=gen)
    loader = DataLoader(train.dataset, batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            x = aug(x, y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc = evaluate_accuracy(model, DataLoader(test.dataset, batch_size=256), device=device)["accuracy"]
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.3f}  test accuracy {acc:.2%}", flush=True)

    model.eval()
    xs, ys = zip(*(test.dataset[i] for i in range(args.samples)))
    x = torch.stack(xs).to(device)
    y = torch.tensor(ys, device=device)
    rel = attribute(model, x, y, method=args.method)
    erased, mask = reldrop.relevance_erase(x, rel, p=1.0, generator=torch.Generator(device=device).manual_seed(args.seed))
    random_erased, random_mask = reldrop.random_erase(x, p=1.0, generator=torch.Generator(device=device).manual_seed(args.seed))
    with torch.no_grad():
        pred = model(x).argmax(1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = plot_demo_grid(
        out / "demo.png", x.cpu(), rel.cpu(), erased.cpu(), mask.cpu(), random_erased.cpu(), random_mask.cpu(),
        labels=[test.class_names[i] for i in y.tolist()], preds=[test.class_names[i] for i in pred.tolist()],
        mean=test.mean, std=test.std, method=args.method,
    )
    print(f"wrote {path}  ({time.perf_counter() - t0:.1f} s)")
    return 0
