"""RelDrop in PyTorch Lightning (pip install lightning).   python examples/lightning_module.py [--steps 20]

RelDropMixin applies RelDrop in `on_after_batch_transfer` (on the device, training batches only).
"""
import argparse

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import reldrop
from reldrop.integrations.lightning import RelDropMixin


class LitClassifier(RelDropMixin, L.LightningModule):  # the mixin first
    reldrop_kwargs = {"p": 0.5}

    def __init__(self):
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=10)

    def configure_reldrop(self):  # attribute the inner network (default: the module's forward)
        return reldrop.RelDrop(self.net, **self.reldrop_kwargs)

    def training_step(self, batch, batch_idx):
        x, y = batch  # x is already augmented here
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,)))
    model = LitClassifier()
    trainer = L.Trainer(max_steps=args.steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=32, shuffle=True))
    print(f"Lightning: {trainer.global_step} steps, "
          f"{model.reldrop.last_stats['selected']} images erased in the last batch")


if __name__ == "__main__":
    main()
