"""reldrop.integrations.lightning: RelDrop in on_after_batch_transfer, training only, built once (Lightning on CPU)."""
from __future__ import annotations

import collections
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reldrop.integrations.lightning import RelDropMixin, replace_input


def test_importing_reldrop_does_not_import_lightning() -> None:
    code = ("import sys, reldrop, reldrop.integrations, reldrop.integrations.lightning; "
            "print(any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_replace_input_keeps_the_container() -> None:
    def fn(x, y):
        return x + y

    Pair = collections.namedtuple("Pair", "x y")
    assert replace_input((1, 2, "m"), (0, 1), fn) == (3, 2, "m")
    assert replace_input([1, 2], (0, 1), fn) == [3, 2]
    assert replace_input(Pair(1, 2), (0, 1), fn) == Pair(3, 2)
    batch = {"image": 1, "label": 2}
    assert replace_input(batch, ("image", "label"), fn) == {"image": 3, "label": 2} and batch["image"] == 1
    with pytest.raises(TypeError, match="tuple, list or dict"):
        replace_input(torch.zeros(2), (0, 1), fn)


def test_two_training_steps_with_lightning_on_cpu() -> None:
    L = pytest.importorskip("lightning", reason="lightning not installed (pip install reldrop[lightning])")

    class Net(RelDropMixin, L.LightningModule):
        reldrop_kwargs = {"p": 1.0, "scale": (0.1, 0.2)}

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(4, 3))
            self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}
            self.built = 0

        def configure_reldrop(self):
            self.built += 1
            return super().configure_reldrop()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            self.seen["train"].append(batch[0].detach().clone())
            return F.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.seen["val"].append(batch[0].detach().clone())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 12, 12, generator=g) + 5.0  # no pixel is 0 before erasing
    y = torch.randint(0, 3, (8,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    model = Net()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                        limit_val_batches=1)
    trainer.fit(model, loader, loader)
    assert len(model.seen["train"]) == 2 and model.built == 1  # built once, used in both steps
    for step, seen in enumerate(model.seen["train"]):
        clean = x[4 * step: 4 * step + 4]
        erased = seen == 0
        assert erased.flatten(1).any(1).all()  # p = 1: every image has a block
        assert torch.equal(seen[~erased], clean[~erased])
    assert model.seen["val"] and all(torch.equal(v, x[:4]) for v in model.seen["val"])  # sanity + val: clean
    assert model.reldrop.model is model and model.reldrop.p == 1.0
    assert not any("reldrop" in k for k in model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    preds = trainer.predict(model, torch.utils.data.DataLoader(x[:4], batch_size=4))
    assert torch.equal(preds[0], model.eval()(x[:4]))  # predict sees clean inputs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
