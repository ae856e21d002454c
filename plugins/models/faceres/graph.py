"""Facts of faceres's TF.js graph: its input, output and tappable nodes (no TensorFlow)."""

from __future__ import annotations

INPUT_SIZE = 224
EMBEDDING_SIZE = 1024
INPUT_NODE = "input_1"
OUTPUT_NODE = "global_pooling/Mean"
OUTPUT_LAYER = "global_pooling"
# Every ReLU6 output, input side upwards: the stem, then each depthwise and pointwise conv.
TAP_NODES: tuple[tuple[str, str], ...] = (
    ("conv1_relu", "conv1_relu/clip_by_value"),
    *(
        (f"conv_{kind}_{i}_relu", f"conv_{kind}_{i}_relu/clip_by_value")
        for i in range(1, 14)
        for kind in ("dw", "pw")
    ),
)
