# Sourced by the stage scripts (train.sh, train_pseudo*.sh) from the repository root: the Python to
# run (PYTHON, default python) and the data and log folders of SETTINGS.json.
PYTHON=${PYTHON:-python}
DATA_DIR=$("$PYTHON" parse_settings_json.py RAW_DATA_DIR)
LOGS_DIR=$("$PYTHON" parse_settings_json.py LOGS_DIR)
