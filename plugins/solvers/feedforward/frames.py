"""A stand-in for a video clip: one face chip moved by small pose-like transforms.

For trying face transfer over frames (paper, Fig. 11) without a clip at hand: a smooth,
looping sway of small rotations, shifts and scalings, with the image edges extended.

    python -m facerecon_plugins.solvers.feedforward.frames builtin:astronaut OUT_DIR [--model M]
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import skimage.io
import skimage.transform


def pose_sequence(chip: np.ndarray, count: int = 16, degrees: float = 6.0) -> np.ndarray:
    """``count`` frames (count, S, S, 3): rotation up to ``degrees``, shifts and scalings up
    to a few percent, following one smooth loop."""
    size = chip.shape[0]
    centre = np.array([size, size]) / 2.0 - 0.5
    frames = []
    for i in range(count):
        phase = 2 * math.pi * i / count
        angle = math.radians(degrees) * math.sin(phase)
        scale = 1.0 + 0.04 * math.sin(2 * phase)
        shift = 0.03 * size * np.array([math.cos(phase), 0.5 * math.sin(phase)])
        transform = (
            skimage.transform.SimilarityTransform(translation=-centre)
            + skimage.transform.SimilarityTransform(scale=scale, rotation=angle)
            + skimage.transform.SimilarityTransform(translation=centre + shift)
        )
        frame = skimage.transform.warp(chip, transform.inverse, mode="edge", preserve_range=True)
        frames.append(frame.astype(np.float32))
    return np.stack(frames)


def write_frames(frames: np.ndarray, folder: str | Path) -> list[Path]:
    """Save frames as ``frame_000.png``... (a folder a spec can name as guides)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"frame_{i:03d}.png"
        skimage.io.imsave(path, (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    import click

    @click.command()
    @click.argument("photo")
    @click.argument("out_dir", type=click.Path())
    @click.option("--model", default="dlib-resnet", show_default=True)
    @click.option("--count", default=16, show_default=True)
    @click.option("--no-align", is_flag=True, help="The photo is already a tight face crop.")
    def command(photo: str, out_dir: str, model: str, count: int, no_align: bool) -> None:
        """Write a pose-sequence stand-in for a clip: the face in PHOTO, swaying."""
        from facerecon import api
        from facerecon.core.errors import FaceReconError
        from facerecon.faces import photos as faces

        try:
            face_model = api.model(model)
            chip, _ = faces.chip(face_model, faces.read_image(photo), not no_align, photo)
        except FaceReconError as exc:
            raise click.ClickException(str(exc)) from None
        paths = write_frames(pose_sequence(chip, count), out_dir)
        click.echo(f"{len(paths)} frames of {chip.shape[0]}x{chip.shape[0]} -> {out_dir}")

    command.main(argv, standalone_mode=True)


if __name__ == "__main__":
    main()
