"""``python -m src.demo``: the end-to-end demo on the phantom (what ``make demo`` runs); see :mod:`src.pipelines.demo`."""

from src.pipelines.demo import main

if __name__ == "__main__":
    main()
