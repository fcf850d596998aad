"""The size tables of mdistiller's CIFAR model families, free of torch.

Each model file (:mod:`.resnet`, :mod:`.resnetv2`, :mod:`.wrn`, :mod:`.vgg`, :mod:`.shufflenetv2`) builds its
networks from its table here, and the architecture table (:mod:`.arch`) reads the channels of each model's
taps from the same tables, so the tap specs of every built-in architecture are known without importing torch.
One definition each: the model files re-export them under their old names (``resnet.CONFIGS``, ``vgg.CFG``...).
"""

from __future__ import annotations

# -- resnet ---------------------------------------------------------------------------------------
#: name -> (depth, filters of stem and the three stages). From mdistiller's builders.
RESNET_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}

# -- resnetv2 -------------------------------------------------------------------------------------
#: name -> (block kind, blocks per stage).
RESNETV2_CONFIGS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "ResNet18": ("basic", (2, 2, 2, 2)),
    "ResNet34": ("basic", (3, 4, 6, 3)),
    "ResNet50": ("bottleneck", (3, 4, 6, 3)),
    "ResNet101": ("bottleneck", (3, 4, 23, 3)),
    "ResNet152": ("bottleneck", (3, 8, 36, 3)),
}


def resnetv2_expansion(name: str) -> int:
    """Output channels per ``planes`` of the blocks of ``name``: 1 for basic blocks, 4 for bottlenecks."""
    return 1 if RESNETV2_CONFIGS[name][0] == "basic" else 4


# -- wrn ------------------------------------------------------------------------------------------
#: name -> (depth, widen factor).
WRN_CONFIGS: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}


def wrn_widths(name: str) -> tuple[int, int, int, int]:
    """Channels of the stem and the three groups of ``name``."""
    k = WRN_CONFIGS[name][1]
    return 16, 16 * k, 32 * k, 64 * k


# -- vgg ------------------------------------------------------------------------------------------
#: mdistiller's VGG configurations: channels of the convs of each of the five blocks.
VGG_CFG: dict[str, list[list[int]]] = {
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
    "S": [[64], [128], [256], [512], [512]],
}

#: zoo name -> configuration letter (all with batch norm, as mdistiller's ``cifar_model_dict`` maps them).
VGG_CONFIGS: dict[str, str] = {"vgg8": "S", "vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}

# -- shufflenetv2 ---------------------------------------------------------------------------------
#: mdistiller's ``configs`` of ShuffleNetV2 by ``net_size``.
SHUFFLENETV2_CONFIGS: dict[float, dict[str, tuple[int, ...]]] = {
    0.2: {"out_channels": (40, 80, 160, 512), "num_blocks": (3, 3, 3)},
    0.3: {"out_channels": (40, 80, 160, 512), "num_blocks": (3, 7, 3)},
    0.5: {"out_channels": (48, 96, 192, 1024), "num_blocks": (3, 7, 3)},
    1: {"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3)},
    1.5: {"out_channels": (176, 352, 704, 1024), "num_blocks": (3, 7, 3)},
    2: {"out_channels": (224, 488, 976, 2048), "num_blocks": (3, 7, 3)},
}
