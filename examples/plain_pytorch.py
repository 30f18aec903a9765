"""RelDrop in a plain PyTorch training loop.   python examples/plain_pytorch.py [--steps 20]

Swap the random tensors for your DataLoader of *normalized* images (fill 0 = the dataset mean).
"""
import argparse

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import reldrop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,)))
    loader = DataLoader(data, batch_size=32, shuffle=True, drop_last=True)
    model = torchvision.models.resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    # build once per model; timm-style options: count=2 blocks, value="rand" (a random colour per block)
    reldrop_fn = reldrop.RelDrop(model, p=0.5, count=1, value=0.0)
    step = 0
    while step < args.steps:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            x = reldrop_fn(x, y)  # a new tensor; the model is left exactly as it was
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == args.steps:
                break
    print(f"plain PyTorch: {step} steps, loss {loss.item():.3f}, "
          f"{reldrop_fn.last_stats['selected']} of {len(y)} images erased in the last batch")


if __name__ == "__main__":
    main()
