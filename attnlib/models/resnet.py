"""The paper's convolutional baseline: ResNet18 for CIFAR (docs/paper.md section 3).

torchvision's ResNet with BasicBlocks, changed only where CIFAR's 32x32 images need it: a 3x3
stride-1 stem instead of 7x7 stride 2, and no max-pool, so the four stages see 32, 16, 8 and 4
pixels. With the defaults it has 11,173,962 parameters, the count of the paper's code.
`width` scales every stage (64, 128, 256, 512 times width/64) for the reduced CPU profile.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


@dataclass
class ResNetConfig:
    width: int = 64  # channels of the stem and the first stage; stages double it
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])  # BasicBlocks per stage (ResNet18)
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self):
        for name in ("width", "image_size", "in_channels", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if len(self.blocks) != 4 or any(b < 1 for b in self.blocks):
            raise ValueError(f"blocks must give 4 stages of at least 1 block, got {self.blocks}")


class CifarResNet(ResNet):
    def __init__(self, cfg: ResNetConfig):
        super().__init__(BasicBlock, cfg.blocks, num_classes=cfg.num_classes)
        self.cfg = cfg
        w = cfg.width
        self.conv1 = nn.Conv2d(cfg.in_channels, w, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        if w != 64:  # rebuild the stages with torchvision's own _make_layer at the new width
            self.bn1 = nn.BatchNorm2d(w)
            self.inplanes = w
            self.layer1 = self._make_layer(BasicBlock, w, cfg.blocks[0])
            self.layer2 = self._make_layer(BasicBlock, 2 * w, cfg.blocks[1], stride=2)
            self.layer3 = self._make_layer(BasicBlock, 4 * w, cfg.blocks[2], stride=2)
            self.layer4 = self._make_layer(BasicBlock, 8 * w, cfg.blocks[3], stride=2)
            self.fc = nn.Linear(8 * w, cfg.num_classes)
        for m in self.modules():  # torchvision's initialisation, again for the replaced modules
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def config(self) -> dict:
        return asdict(self.cfg)
