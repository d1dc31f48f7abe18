"""Pseudo labels for the external kidney(s) from the stage-1 ensemble; see ``src/pseudo.py``:

    python generate_pseudo.py --dataset_folder $(python parse_settings_json.py RAW_DATA_DIR) \\
                              --logs_base_path $(python parse_settings_json.py LOGS_DIR)
"""

from src.pseudo import main

if __name__ == "__main__":
    main()
