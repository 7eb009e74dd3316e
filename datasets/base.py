"""Sample records and the per-category split that every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

NOMINAL = 0
ANOMALOUS = 1


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes
    ----------
    sample_id : str
        Stable id, unique within a category, for example ``"test/broken_large/003"``.
        Manifests, bag assignments and score tables refer to images by this id.
    image_path : Path
        File to read the image from.
    label : int
        ``0`` for nominal, ``1`` for anomalous.
    mask_paths : tuple of Path
        Ground-truth masks for this image, merged by union when there are
        several. An empty tuple means the image has no mask file, which is the
        case for nominal images and for datasets without pixel labels.
    defect_type : str
        ``"good"`` for nominal images, otherwise the defect folder name.
    split : str
        ``"train"`` or ``"test"`` in the original dataset.
    group_id : str
        Unit that bagging keeps together: the video clip for UCSD Ped2, the image
        itself otherwise.
    """

    sample_id: str
    image_path: Path
    label: int
    mask_paths: tuple[Path, ...] = ()
    defect_type: str = "good"
    split: str = "train"
    group_id: str = ""

    def __post_init__(self) -> None:
        if not self.group_id:
            object.__setattr__(self, "group_id", self.sample_id)


@dataclass
class CategoryData:
    """Training and test samples of one dataset category.

    Attributes
    ----------
    dataset : str
        Dataset name, for example ``"mvtec_ad"``.
    category : str
        Category name, for example ``"bottle"``.
    train : list of Sample
        Training images in the order the loader found them.
    test : list of Sample
        Test images, nominal and anomalous.
    has_pixel_masks : bool
        False when the category ships no pixel ground truth, in which case pixel
        metrics are reported as unavailable.
    injected_ids : list of str
        Ids of test images moved into training by corruption (empty before it).
    """

    dataset: str
    category: str
    train: list[Sample]
    test: list[Sample]
    has_pixel_masks: bool = True
    injected_ids: list[str] = field(default_factory=list)

    def with_split(
        self, train: list[Sample], test: list[Sample], injected_ids: list[str]
    ) -> CategoryData:
        """Return a copy with new train and test lists."""
        return replace(self, train=train, test=test, injected_ids=list(injected_ids))
