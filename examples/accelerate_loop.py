"""RelDrop with Hugging Face Accelerate (pip install accelerate).   python examples/accelerate_loop.py [--steps 20]

Accelerate (like Lightning Fabric) keeps your loop: call RelDrop after the batch is on the device.
RelDrop accepts the prepared (DDP-wrapped) model.
"""
import argparse

import torch
import torch.nn.functional as F
import torchvision
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

import reldrop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    accelerator = Accelerator()
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,)))
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model, opt, loader = accelerator.prepare(model, opt, DataLoader(data, batch_size=32, shuffle=True))

    reldrop_fn = reldrop.RelDrop(model, p=0.5)  # once, after prepare()
    step = 0
    while step < args.steps:
        for x, y in loader:  # already on accelerator.device
            x = reldrop_fn(x, y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            accelerator.backward(loss)
            opt.step()
            step += 1
            if step == args.steps:
                break
    accelerator.print(f"Accelerate: {step} steps on {accelerator.device}, loss {loss.item():.3f}, "
                      f"{reldrop_fn.last_stats['selected']} images erased in the last batch")


if __name__ == "__main__":
    main()
