"""RelDrop with the Hugging Face Trainer (pip install transformers accelerate).   python examples/hf_trainer.py

Trainer callbacks cannot change a batch, so a Trainer subclass augments the inputs in compute_loss
(training only: compute_loss also runs in evaluation, with the model in eval mode).
"""
import argparse
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from transformers import Trainer, TrainingArguments

import reldrop


class Classifier(nn.Module):  # the Trainer passes the batch's keys as keyword arguments
    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet18(num_classes=10)

    def forward(self, pixel_values, labels=None):
        logits = self.backbone(pixel_values)
        return {"logits": logits} if labels is None else {"loss": F.cross_entropy(logits, labels), "logits": logits}


class RelDropTrainer(Trainer):
    def __init__(self, *args, reldrop_kwargs=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reldrop_fn = reldrop.RelDrop(self.model.backbone, **(reldrop_kwargs or {}))  # logits model, once

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            inputs = {**inputs, "pixel_values": self.reldrop_fn(inputs["pixel_values"], inputs["labels"])}
        return super().compute_loss(model, inputs, *args, **kwargs)


class RandomImages(torch.utils.data.Dataset):  # swap for your dataset of normalized images
    def __init__(self, n=256):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, max_steps=args.steps, per_device_train_batch_size=32,
                                  learning_rate=0.01, report_to="none", save_strategy="no", disable_tqdm=True)
        trainer = RelDropTrainer(model=Classifier(), args=targs, train_dataset=RandomImages(),
                                 reldrop_kwargs={"p": 0.5})
        result = trainer.train()
    print(f"HF Trainer: {result.global_step} steps, loss {result.training_loss:.3f}, "
          f"{trainer.reldrop_fn.last_stats['selected']} images erased in the last batch")


if __name__ == "__main__":
    main()
