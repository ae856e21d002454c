"""Where MobileStyleGAN's OpenVINO IR files come from: a given folder, the cache, or the
PyPI wheel ``random-face`` fetched once with pip.

The wheel is downloaded (never installed: its own engine needs an OpenVINO API that no
longer exists), its checksum checked, and four members kept. Every file is checked against
its pinned checksum whenever it is used; a cached file that fails is removed, so the next
use fetches it again.

The weights are distilled from NVIDIA's StyleGAN2 FFHQ weights: NVIDIA Source Code
License-NC (research or evaluation only), trained on FFHQ (CC BY-NC-SA 4.0). They are
fetched at first use and never part of facerecon.
"""

from __future__ import annotations

import os
from pathlib import Path

from facerecon.core.cache import cache_dir
from facerecon.core.errors import FaceReconError
from facerecon.core.packages import pip_wheel, sha256

PACKAGE = "random-face"
VERSION = "2021.7.21.1"
WHEEL = f"random_face-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5"
#: the members kept, with their sha256
FILES = {
    "MappingNetwork.xml": "73e2096cad6e696e4af47df2477e048ab4c42c0e0dec83c7c66604822689e55b",
    "MappingNetwork.bin": "212dd716bdb556e18db603ea97300d4fa3c872b878c726b2402fea80820e7305",
    "SynthesisNetwork.xml": "7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd",
    "SynthesisNetwork.bin": "c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645",
}
MEMBER_DIR = "random_face/data"
WEIGHTS_ENV = "FACERECON_STYLEGAN_WEIGHTS"
TERMS = (
    "MobileStyleGAN weights distilled from NVIDIA StyleGAN2-FFHQ: NVIDIA Source Code "
    "License-NC (non-commercial research or evaluation only); FFHQ images CC BY-NC-SA 4.0"
)


def cached_folder() -> Path:
    """The cache folder that holds the fetched IR files."""
    return cache_dir("stylegan", f"mobilestylegan-{VERSION}")


def _remedy(folder: Path) -> str:
    return (
        f"pip download {PACKAGE}=={VERSION} --no-deps, or put {', '.join(FILES)} (from the "
        f"wheel's {MEMBER_DIR}) in {folder} or a folder named by ${WEIGHTS_ENV}"
    )


def given_folder(weights: str | None = None) -> Path | None:
    """The folder named by ``weights`` or ``$FACERECON_STYLEGAN_WEIGHTS``; None when neither."""
    given = weights or os.environ.get(WEIGHTS_ENV)
    if not given:
        return None
    folder = Path(given).expanduser()
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FaceReconError(f"stylegan weights folder {folder} has no {', '.join(missing)}")
    return folder


def checked(folder: Path, cached: bool) -> Path:
    """``folder`` once every file matches its checksum; a cached file that does not is
    removed (the next use fetches it again)."""
    for name, expected in FILES.items():
        path = folder / name
        if sha256(path) != expected:
            if cached:
                path.unlink()
                raise FaceReconError(
                    f"{path} does not match its sha256 (removed: fetched again on the next run)"
                )
            raise FaceReconError(f"{path} does not match the sha256 of {PACKAGE}=={VERSION}'s copy")
    return folder


def weights_folder(weights: str | None = None) -> Path:
    """The folder of the four IR files: given, cached, or fetched now into the cache."""
    given = given_folder(weights)
    if given is not None:
        return checked(given, cached=False)
    folder = cached_folder()
    if not all((folder / name).is_file() for name in FILES):
        fetch(folder)
    return checked(folder, cached=True)


def fetch(folder: Path) -> None:
    """``pip download`` the wheel, check it, and move the four members into ``folder``
    (their checksums are checked where they are used: :func:`checked`)."""
    members = {f"{MEMBER_DIR}/{name}": (name, None) for name in FILES}
    pip_wheel(f"{PACKAGE}=={VERSION}", WHEEL, WHEEL_SHA256, members, folder, _remedy(folder))
