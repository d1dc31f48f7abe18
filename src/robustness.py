"""``python -m src.robustness``: every robustness lever measured on the phantom (what ``make eval-robustness`` runs);
see :mod:`src.pipelines.robustness`."""

from src.pipelines.robustness import main

if __name__ == "__main__":
    main()
