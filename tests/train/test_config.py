"""Config: embedded default == configs/digits.yaml, presets (shipped in the package, ./configs overrides),
overrides, validation, CLI flags."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reldrop.cli import build_parser
from reldrop.commands.train import config_from_args
from reldrop.train.config import (CONFIG_DIRS, DEFAULTS, PACKAGE_CONFIG_DIR, apply_overrides, flat_keys, load_config,
                                  preset_names, preset_path)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"  # the documented path: a link to the package's src/reldrop/configs


def test_embedded_default_equals_configs_digits_yaml() -> None:
    assert load_config(CONFIGS / "digits.yaml") == load_config(None) == DEFAULTS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(path: Path) -> None:
    cfg = load_config(path)
    assert cfg["name"] == path.stem


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_config_in_a_subfolder_resolves_by_path_and_by_preset_name(path: Path) -> None:
    name = path.relative_to(CONFIGS).with_suffix("").as_posix()  # e.g. decoy_sweep/pilot
    assert name in preset_names()
    assert load_config(name) == load_config(path)


def test_the_presets_live_in_the_package_and_the_repo_configs_links_there() -> None:
    assert PACKAGE_CONFIG_DIR == REPO / "src" / "reldrop" / "configs"
    assert CONFIGS.resolve() == PACKAGE_CONFIG_DIR.resolve()  # configs/x.yaml paths of docs and benchmarks
    assert CONFIG_DIRS[-1] == PACKAGE_CONFIG_DIR and (PACKAGE_CONFIG_DIR / "points_shapes.yaml").is_file()


def test_presets_are_found_from_any_directory_and_cwd_configs_override_them(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELDROP_CONFIG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./configs here: the package's presets
    assert preset_path("points_shapes") == PACKAGE_CONFIG_DIR / "points_shapes.yaml"
    assert load_config("points_shapes")["data"]["name"] == "shapes"
    (tmp_path / "configs").mkdir()  # a user's ./configs: first hit wins, over the shipped preset of that name
    (tmp_path / "configs" / "points_shapes.yaml").write_text("name: mine\noptim: {lr: 0.5}\n")
    (tmp_path / "configs" / "my_run.yaml").write_text("name: my_run\n")
    assert (load_config("points_shapes")["name"], load_config("points_shapes")["optim"]["lr"]) == ("mine", 0.5)
    assert load_config("my_run")["name"] == "my_run" and {"my_run", "decoy_digits"} <= set(preset_names())


def test_paper_configs_match_table_3() -> None:
    for name, wd, epochs in (("cifar10_resnet18", 1e-4, 100), ("cifar100_resnet50", 1e-4, 100),
                             ("imagenet_resnet50", 5e-4, 50)):
        c = load_config(name)
        assert (c["optim"]["name"], c["optim"]["lr"], c["optim"]["momentum"], c["optim"]["weight_decay"]) == \
            ("sgd", 0.01, 0.9, wd)
        assert (c["sched"]["name"], c["sched"]["min_lr"]) == ("cosine", 1e-6)
        assert (c["train"]["batch_size"], c["train"]["epochs"]) == (128, epochs)
        assert c["aug"]["p"] == 0.5 and c["aug"]["scale"] == [0.02, 0.4] and c["aug"]["epsilon"] == 1e-3
        assert c["aug"]["ratio"][0] == 0.3 and c["aug"]["ratio"][1] == pytest.approx(1 / 0.3)


def test_overrides_parse_yaml_values_and_reject_unknown_keys() -> None:
    cfg = apply_overrides(DEFAULTS, ["optim.lr=0.2", "aug.scale=[0.1, 0.3]", "data.subset=null",
                                     "model.kwargs.width=4", "aug.name=re"])
    assert cfg["optim"]["lr"] == 0.2 and cfg["aug"]["scale"] == [0.1, 0.3] and cfg["data"]["subset"] is None
    assert cfg["model"]["kwargs"] == {"width": 4} and cfg["aug"]["name"] == "re"
    assert DEFAULTS["optim"]["lr"] == 0.01  # not mutated
    with pytest.raises(ValueError, match="optim.lrr"):
        apply_overrides(DEFAULTS, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_overrides(DEFAULTS, ["optim.lr"])
    with pytest.raises(ValueError, match="aug.name"):
        load_config(None, ["aug.name=cutout"])
    with pytest.raises(ValueError, match="aug.p"):
        load_config(None, ["aug.p=1.5"])
    with pytest.raises(ValueError, match="aug.scale"):
        load_config(None, ["aug.scale=[0.4, 0.1]"])
    with pytest.raises(ValueError, match="train.epochs"):
        load_config(None, ["train.epochs=0"])


def test_yaml_file_unknown_section_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"optimizer": {"lr": 1}}))
    with pytest.raises(ValueError, match="optimizer"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="unknown preset"):
        load_config("no_such_preset")


def test_cli_flags_resolve_in_order() -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "--preset", "digits", "--set", "optim.lr=0.3", "data.subset=100",
                              "--optim.momentum", "0.5", "--aug", "reldrop", "--seed", "7", "--epochs", "3",
                              "--out", "somewhere", "--device", "cpu", "--init", "w.pt", "--reinit-head"])
    cfg = config_from_args(args)
    assert cfg["optim"]["lr"] == 0.3 and cfg["optim"]["momentum"] == 0.5 and cfg["data"]["subset"] == 100
    assert cfg["aug"]["name"] == "reldrop" and cfg["seed"] == 7 and cfg["train"]["epochs"] == 3
    assert cfg["out"] == "somewhere" and cfg["device"] == "cpu"
    assert cfg["model"]["init"] == "w.pt" and cfg["model"]["reinit_head"] is True
    # every config key has a dotted flag
    dotted = {a.option_strings[0] for a in parser._subparsers._group_actions[0].choices["train"]._actions
              if a.option_strings}
    assert all(f"--{k}" in dotted for k in flat_keys() if "." in k)


def test_cli_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    from reldrop.cli import main

    assert main(["train", "--print-config", "--set", "train.epochs=5"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["epochs"] == 5 and cfg["data"]["name"] == "digits"
    assert main(["train", "--set", "bogus.key=1"]) == 2
    assert "bogus.key" in capsys.readouterr().err
