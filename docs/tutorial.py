# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: RelDrop on digits, step by step
#
# This page is the script [`docs/tutorial.py`](tutorial.py), a
# [jupytext](https://jupytext.readthedocs.io) "percent" script: run it with
# `python docs/tutorial.py` (about 20 s on one CPU core), or open it as a notebook with
# `jupytext --to notebook docs/tutorial.py`. The test suite runs it end to end
# (`tests/test_tutorial.py`), so the code on this page works. It uses only data that ships with
# scikit-learn (the 8×8 `digits`), nothing downloads.
#
# Steps: build a model; compute and plot an LRP heatmap; apply RelDrop and Random Erasing to a
# batch and look at both; train a few epochs with RelDrop in a plain PyTorch loop; look at the
# trained model's heatmaps.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import reldrop
from reldrop.attribution import attribute
from reldrop.data.digits import load_digits_split
from reldrop.viz.heatmaps import relevance_to_rgb

torch.manual_seed(0)
torch.set_num_threads(1)  # small model: one thread is fastest, and polite next to other jobs
# where the figures go: docs/figures next to this script (the test suite points it elsewhere)
FIGURES = Path(os.environ.get("RELDROP_TUTORIAL_FIGURES") or
               (Path(__file__).resolve().parent / "figures" if "__file__" in globals() else "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
EPOCHS = int(os.environ.get("RELDROP_TUTORIAL_EPOCHS", "10"))

# %% [markdown]
# ## 1. Data and model
#
# RelDrop fills the erased block with `value=0.0`, which is the dataset mean once the inputs are
# normalized. So normalize with the training split's mean and std before augmenting.

# %%
x_train, y_train = load_digits_split("train")  # (1437, 1, 8, 8) in [0, 1], labels (1437,)
x_test, y_test = load_digits_split("test")  # (360, 1, 8, 8)
mean, std = x_train.mean(), x_train.std()
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
low, high = float((0 - mean) / std), float((1 - mean) / std)  # the input range, for the ZBox rule

model = reldrop.models.build("small_cnn", num_classes=10, in_channels=1)
print(model.__class__.__name__, sum(p.numel() for p in model.parameters()), "parameters")
print("models available:", ", ".join(reldrop.models.names()[:8]), "...")


# %% [markdown]
# ## 2. An LRP heatmap
#
# `reldrop.attribution.attribute(model, x, target, method)` returns the relevance `R` with the
# shape of `x`, for the target class of each sample. `epsilon_gamma_box` is the visualization
# preset (ZBox on the first layer, γ = 0.25 on convs, ε on dense layers); `epsilon_flat`, RelDrop's
# training preset, is the default for this CNN. Red is positive evidence for the target class,
# blue negative. The model is still untrained here, so its evidence means little yet; step 5 shows
# the trained model.

# %%
def show_heatmaps(model, x, y, path, title):
    """Row 1: inputs; row 2: ``epsilon_gamma_box`` relevance for the true label."""
    R = attribute(model, x, y, method="epsilon_gamma_box", low=low, high=high)
    fig, axes = plt.subplots(2, len(x), figsize=(1.4 * len(x), 3.2))
    for i in range(len(x)):
        axes[0, i].imshow(x[i, 0], cmap="gray")
        axes[0, i].set_title(f"label {int(y[i])}", fontsize=9)
        axes[1, i].imshow(relevance_to_rgb(R[i]))
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return R


x_show, y_show = x_test[:8], y_test[:8]
R = show_heatmaps(model, x_show, y_show, FIGURES / "tutorial_heatmap_untrained.png",
                  "input | LRP (epsilon_gamma_box), untrained model")
print("relevance", tuple(R.shape), "- same shape as the input", tuple(x_show.shape))

# %% [markdown]
# ![inputs and LRP heatmaps of the untrained model](figures/tutorial_heatmap_untrained.png)
#
# ## 3. RelDrop and Random Erasing on one batch
#
# The mask functions are pure tensor functions: `reldrop.relevance_erase(x, R)` erases a block
# centred on the most relevant pixel of each selected sample, `reldrop.random_erase(x)` is Random
# Erasing with the same block law and a random centre. `p=1.0` erases every image here so both can
# be compared; training uses the paper's `p=0.5`. Both return the new batch and the `(B, H, W)`
# mask (True = erased).

# %%
R = attribute(model, x_show, y_show, method="epsilon_flat")
gen = torch.Generator().manual_seed(0)
x_reldrop, mask_reldrop = reldrop.relevance_erase(x_show, R, p=1.0, generator=gen)
x_re, mask_re = reldrop.random_erase(x_show, p=1.0, generator=gen)
print("erased pixels per image, RelDrop:", mask_reldrop.flatten(1).sum(1).tolist())
print("erased pixels per image, RE:     ", mask_re.flatten(1).sum(1).tolist())

fig, axes = plt.subplots(3, len(x_show), figsize=(1.4 * len(x_show), 4.6))
for i in range(len(x_show)):
    for row, (img, name) in enumerate([(x_show, "input"), (x_reldrop, "RelDrop"), (x_re, "RE")]):
        axes[row, i].imshow(img[i, 0], cmap="gray", vmin=low, vmax=high)
        axes[row, i].set_axis_off()
        if i == 0:
            axes[row, i].set_title(name, fontsize=9, loc="left")
fig.suptitle("input | RelDrop block (most relevant pixel) | Random Erasing block (random centre)", fontsize=10)
fig.tight_layout()
fig.savefig(FIGURES / "tutorial_erasing.png", dpi=100)

# %% [markdown]
# ![a batch, erased by RelDrop and by Random Erasing](figures/tutorial_erasing.png)
#
# ## 4. Train with RelDrop: the three lines
#
# `reldrop.RelDrop(model, p=0.5)` is built once; each batch goes through it before the forward
# pass. It computes relevance only for the samples its coin selects (about half of them), in eval
# mode, and leaves the model exactly as it was (parameters, BN statistics, train/eval mode,
# gradients). The rest is an ordinary training loop.

# %%
reldrop_fn = reldrop.RelDrop(model, p=0.5)  # 1. build once per model
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=64,
                                     shuffle=True, generator=torch.Generator().manual_seed(0))
history = []
t0 = time.perf_counter()
for epoch in range(EPOCHS):
    model.train()
    for x, y in loader:
        x = reldrop_fn(x, y)  # 2. a new, augmented batch; the model is unchanged
        loss = F.cross_entropy(model(x), y)  # 3. train on it as usual
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    history.append(acc)
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {100 * acc:.1f} %, "
          f"{reldrop_fn.last_stats['selected']} of {len(y)} images erased in the last batch")
print(f"{EPOCHS} epochs in {time.perf_counter() - t0:.1f} s")

fig, ax = plt.subplots(figsize=(4, 2.6))
ax.plot(range(1, EPOCHS + 1), [100 * a for a in history], marker="o")
ax.set_xlabel("epoch")
ax.set_ylabel("test accuracy (%)")
ax.set_title("small_cnn on digits, trained with RelDrop", fontsize=10)
fig.tight_layout()
fig.savefig(FIGURES / "tutorial_curve.png", dpi=100)

# %% [markdown]
# ![test accuracy per epoch](figures/tutorial_curve.png)
#
# For the full experiment (baseline vs Random Erasing vs RelDrop, 3 seeds, statistics) use the CLI:
# `reldrop compare --preset digits --out runs/digits`; see [Experiments](experiments.md).
#
# ## 5. The trained model's evidence
#
# After training, most positive relevance lies on and around the strokes, and RelDrop's
# blocks land on them.

# %%
R = show_heatmaps(model, x_show, y_show, FIGURES / "tutorial_heatmap_trained.png",
                  "input | LRP (epsilon_gamma_box), after training with RelDrop")
_, mask = reldrop_fn(x_show, y_show, return_mask=True)
print("RelDrop erased", int(mask.flatten(1).any(1).sum()), "of", len(x_show), "images at p = 0.5")

# %% [markdown]
# ![inputs and LRP heatmaps of the trained model](figures/tutorial_heatmap_trained.png)
#
# Next: [use RelDrop in your own training loop](usage.md) (options, Lightning, Accelerate, HF
# `Trainer`), [the method exactly](method.md), [attribution presets and backends](attribution.md).
