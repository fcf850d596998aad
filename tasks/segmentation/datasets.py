"""The label tables of the segmentation data sets, free of torch: class names, label-id maps, the shapes set's size.

The task's spec reads the class counts and the shapes set's size and split sizes from here (recipes and
``default_num_classes`` need them, building nothing); :mod:`tasks.segmentation.data` maps labels with the same
tables.
"""

from __future__ import annotations

IGNORE_INDEX = 255

# -- Cityscapes ------------------------------------------------------------------------------------
#: (id, trainId) for every label of the official table (cityscapesscripts/helpers/labels.py);
#: trainId 255 / -1 are ignored in training and evaluation.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,  # unlabeled .. ground
    7: 0, 8: 1, 9: 255, 10: 255,  # road, sidewalk, parking, rail track
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255,  # building, wall, fence, guard rail, bridge, tunnel
    17: 5, 18: 255, 19: 6, 20: 7,  # pole, polegroup, traffic light, traffic sign
    21: 8, 22: 9, 23: 10, 24: 11, 25: 12,  # vegetation, terrain, sky, person, rider
    26: 13, 27: 14, 28: 15, 29: 255, 30: 255,  # car, truck, bus, caravan, trailer
    31: 16, 32: 17, 33: 18,  # train, motorcycle, bicycle
    -1: 255,  # license plate (trainId -1)
}  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

# -- ADE20K ----------------------------------------------------------------------------------------
#: The 150 SceneParsing classes in train-id order (names as in mmsegmentation's ADE20KDataset).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest_of_drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool_table", "pillow", "screen_door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee_table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen_island", "computer", "swivel_chair", "boat", "bar", "arcade_machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television_receiver",
    "airplane", "dirt_track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer_belt", "canopy", "washer", "plaything",
    "swimming_pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade_name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic_light", "tray",
    "ashcan", "fan", "pier", "crt_screen", "plate", "monitor", "bulletin_board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip

# -- shapes ----------------------------------------------------------------------------------------
SHAPES_CLASSES = ("background", "circle", "rectangle", "triangle")
#: Label ids written to the shapes ``*_gtFine_labelIds.png`` (Cityscapes-style: 0 is void, drawn as a
#: one-pixel outline round each shape so the ignore path is exercised) and their train ids.
SHAPES_ID_TO_TRAINID: dict[int, int] = {0: 255, 1: 0, 2: 1, 3: 2, 4: 3}
SHAPES_SIZE = (64, 128)  # H, W
SHAPES_COUNTS = {"train": 400, "val": 100}
