"""Issue 19 item 6: any timm / torchvision classifier by name, random weights, nothing downloaded."""
from __future__ import annotations

import pytest
import torch

from reldrop import models

pytest.importorskip("timm")


def test_timm_model_with_num_classes_and_in_chans():
    model = models.build("timm/test_resnet", num_classes=4, in_channels=1)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_torchvision_model_gets_its_first_conv_rebuilt_for_one_channel():
    model = models.build("torchvision/resnet18", num_classes=3, in_channels=1)
    assert model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    rgb = models.build("torchvision/squeezenet1_1", num_classes=5, in_channels=3)
    assert rgb(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_model_kwargs_reach_the_library():
    vit = models.build("timm/test_vit", num_classes=2, img_size=32, in_channels=3)
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("name, match", [
    ("timm/no_such_net", r"unknown model 'timm/no_such_net': timm has no model"),
    ("torchvision/no_such_net", r"unknown model 'torchvision/no_such_net'"),
    ("timm/", r"give the architecture"),
    ("keras/resnet", r"unknown model 'keras/resnet'.*timm/<name>"),
])
def test_unknown_names_are_one_line_errors(name: str, match: str):
    with pytest.raises(ValueError, match=match) as err:
        models.build(name, num_classes=3)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, kw", [("timm/test_resnet", {"pretrained": True}),
                                      ("torchvision/resnet18", {"weights": "DEFAULT"})])
def test_pretrained_is_refused_pointing_to_init(name: str, kw: dict):
    with pytest.raises(ValueError, match=r"nothing is downloaded.*--init"):
        models.build(name, num_classes=3, **kw)
