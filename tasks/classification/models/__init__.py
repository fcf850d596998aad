"""Classification models: mdistiller's CIFAR zoo, torchvision ResNets and mdistiller's MobileNetV1.

One file per family; :mod:`.zoo` is the registry the task uses (``build``, ``arch_names``,
``tap_specs``, ``validate_taps``).
"""

from tasks.classification.models.zoo import ARCHS, Arch, arch_names, build, get_arch, tap_specs, validate_taps

__all__ = ["ARCHS", "Arch", "arch_names", "build", "get_arch", "tap_specs", "validate_taps"]
