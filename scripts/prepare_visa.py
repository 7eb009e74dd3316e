"""Convert the raw VisA archive to the per-object layout that the VisA loader reads.

Usage::

    python scripts/prepare_visa.py --raw-root /data/VisA_20220922 --out-root /data/visa
    python scripts/prepare_visa.py --raw-root RAW --out-root OUT --objects candle pcb1
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# Put the repository first on the path, so that `import datasets` finds this
# suite's package and not Hugging Face Datasets when the script runs directly.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.visa import prepare_visa  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--raw-root",
        type=Path,
        required=True,
        help="extracted VisA archive: the folder that contains the object folders",
    )
    parser.add_argument(
        "--out-root",
        type=Path,
        required=True,
        help="folder that receives one prepared folder per object",
    )
    parser.add_argument(
        "--split-csv",
        type=Path,
        default=None,
        help="split file to follow (default: RAW_ROOT/split_csv/1cls.csv)",
    )
    parser.add_argument(
        "--objects",
        nargs="+",
        default=None,
        help="objects to convert (default: every object in the split file)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the conversion and return the exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    try:
        folders = prepare_visa(
            args.raw_root, args.out_root, args.split_csv, args.objects
        )
    except (OSError, ValueError) as error:
        # Missing split files, images or masks: the message names the file.
        logger.error("%s", error)
        return 2
    logger.info("Prepared %d objects under %s", len(folders), args.out_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
