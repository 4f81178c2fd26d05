"""``nmt-info``: print what a checkpoint or an exported folder says about itself.

    nmt-info ckpt=runs/default/checkpoints/best.pt      # the model card, readable
    nmt-info ckpt=ship.pt json=true                     # one JSON object

The card's contents: :mod:`nmt.models.card`.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig, OmegaConf

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import InfoConfig, check_command
from nmt.core.errors import exit_on_user_error
from nmt.core.paths import CONFIG_DIR
from nmt.inference.describe import describe_model
from nmt.models.card import FORMAT_VERSION, card_text


def readable(described: dict, with_config: bool) -> str:
    """The header (file, kind, format, size), the card, and with ``with_config`` the config."""
    slim = ", slim (no training state)" if described["slim"] else ""
    migrated = described["card"].get("migrated_from_format")
    version = (
        f"{migrated}, read as format {FORMAT_VERSION}" if migrated else described["format_version"]
    )
    header = (
        f"{described['source']}: {described['kind']}, format {version}"
        f"{slim}, {described['bytes'] / 2**20:.1f} MiB"
    )
    text = [header, card_text(described["card"]) if described["card"] else "no model card"]
    if with_config:
        text.append("config:\n" + OmegaConf.to_yaml(described["config"]).rstrip())
    return "\n".join(text)


@hydra.main(config_path=str(CONFIG_DIR), config_name="info", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: InfoConfig = check_command("info", cfg)
    described = describe_model(config.ckpt)
    if config.json:
        print(json.dumps(described, indent=2, ensure_ascii=False))
    else:
        print(readable(described, config.config))


if __name__ == "__main__":
    main()
